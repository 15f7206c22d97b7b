from __future__ import annotations

from pathlib import Path

import pytest

from eic_builder.rejects import Rejected
from eic_builder.scan.annotations import parse_xml, read_coco, read_loc_csv

XML = (b"<annotation><size><width>100</width><height>50</height></size>"
       b"<object><name>n01440764</name><bndbox><xmin>0</xmin><ymin>5</ymin><xmax>99</xmax><ymax>49</ymax></bndbox>"
       b"</object></annotation>")


def test_ilsvrc_xml_is_zero_based_inclusive() -> None:
    ann = parse_xml(XML, "ilsvrc")
    assert (ann.width, ann.height) == (100, 50)
    assert ann.boxes == [("n01440764", 0.0, 5.0, 100.0, 50.0)]


def test_voc_xml_is_one_based_inclusive() -> None:
    ann = parse_xml(XML.replace(b"<xmin>0<", b"<xmin>1<").replace(b"<ymin>5<", b"<ymin>6<"), "voc")
    # VOC 1..99 inclusive -> 0-based exclusive [0, 99)
    assert ann.boxes == [("n01440764", 0.0, 5.0, 99.0, 49.0)]


def test_billion_laughs_is_refused_not_expanded() -> None:
    bomb = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
            b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
            b"<annotation><object><name>&lol2;</name></object></annotation>")
    with pytest.raises(Rejected) as info:
        parse_xml(bomb, "ilsvrc")
    assert info.value.reason == "unsafe_xml"


def test_external_entity_is_refused_not_resolved(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("n99999999")
    xxe = (f'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file://{secret}">]>'
           "<annotation><object><name>&x;</name></object></annotation>").encode()
    with pytest.raises(Rejected) as info:
        parse_xml(xxe, "ilsvrc")
    assert info.value.reason == "unsafe_xml"


def test_malformed_xml() -> None:
    with pytest.raises(Rejected) as info:
        parse_xml(b"<annotation><object>", "ilsvrc")
    assert info.value.reason == "malformed_xml"
    with pytest.raises(Rejected, match="expected <annotation>"):
        parse_xml(b"<html/>", "ilsvrc")


def test_xml_box_missing_coordinate_is_kept_as_bad_row() -> None:
    ann = parse_xml(b"<annotation><object><name>n01440764</name><bndbox><xmin>1</xmin></bndbox></object>"
                    b"</annotation>", "ilsvrc")
    assert ann.boxes == [] and len(ann.bad_rows) == 1 and "ymin" in ann.bad_rows[0]


def test_loc_csv(tmp_path: Path) -> None:
    p = tmp_path / "LOC_val_solution.csv"
    p.write_text("ImageId,PredictionString\na,n01440764 0 1 9 10 n01443537 2 2 3 3 \nb,n01440764 1 2 x 4 \nc,n1 2\n")
    anns, problems = read_loc_csv(p)
    assert problems == []
    assert anns["a"].boxes == [("n01440764", 0.0, 1.0, 10.0, 11.0), ("n01443537", 2.0, 2.0, 4.0, 4.0)]
    assert anns["b"].boxes == [] and "non-numeric" in anns["b"].bad_rows[0]
    assert "not a multiple of 5" in anns["c"].bad_rows[0]
    (tmp_path / "LOC_bad_solution.csv").write_text("a,b\n")
    with pytest.raises(Rejected, match="ImageId,PredictionString"):
        read_loc_csv(tmp_path / "LOC_bad_solution.csv")


def test_coco(tmp_path: Path) -> None:
    p = tmp_path / "i.json"
    p.write_text('{"images":[{"id":1,"file_name":"x/a.jpg","width":10,"height":8}],'
                 '"categories":[{"id":3,"name":"cat"}],'
                 '"annotations":[{"id":1,"image_id":1,"category_id":3,"bbox":[1,2,3,4]},'
                 '{"id":2,"image_id":7,"category_id":3,"bbox":[1,2,3,4]}]}')
    anns, problems = read_coco(p)
    assert anns["a"].boxes == [("cat", 1.0, 2.0, 4.0, 6.0)] and (anns["a"].width, anns["a"].height) == (10, 8)
    assert len(problems) == 1 and problems[0][2] == "orphan_annotation" and "image_id 7" in problems[0][3]
    p.write_text("[1, 2]")
    with pytest.raises(Rejected, match="not a COCO instances file"):
        read_coco(p)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e309", "NaN", "x"])
def test_non_finite_coordinates_are_refused_everywhere(value: str, tmp_path: Path) -> None:
    """XML, LOC CSV and COCO all refuse a coordinate that is not a finite number (a box reject each)."""
    ann = parse_xml(f"<annotation><size><width>{value}</width><height>10</height></size><object><name>n01440764"
                    f"</name><bndbox><xmin>{value}</xmin><ymin>0</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object>"
                    "</annotation>".encode(), "ilsvrc")
    assert ann.boxes == [] and len(ann.bad_rows) == 1 and ann.width is None  # no size: the image header decides
    p = tmp_path / "LOC_val_solution.csv"
    p.write_text(f"ImageId,PredictionString\na,n01440764 0 0 {value} 5 n01440764 0 0 4 5\n")
    anns, _ = read_loc_csv(p)
    assert anns["a"].boxes == [("n01440764", 0.0, 0.0, 5.0, 6.0)] and len(anns["a"].bad_rows) == 1
    q = tmp_path / "i.json"
    q.write_text('{"images":[{"id":1,"file_name":"a.jpg","width":10,"height":8}],"categories":[{"id":3,"name":"c"}],'
                 '"annotations":[{"id":1,"image_id":1,"category_id":3,"bbox":[1,2,3,4]},'
                 f'{{"id":2,"image_id":1,"category_id":3,"bbox":[1,"{value}",3,4]}},'
                 '{"id":3,"image_id":1,"category_id":3,"bbox":"1234"},'
                 '{"id":4,"image_id":1,"category_id":3,"bbox":[1,2,3,true]}]}')
    coco, _ = read_coco(q)
    assert coco["a"].boxes == [("c", 1.0, 2.0, 4.0, 6.0)] and len(coco["a"].bad_rows) == 3


def test_coco_identity_is_not_trusted(tmp_path: Path) -> None:
    p = tmp_path / "i.json"
    p.write_text('{"images":[{"id":1,"file_name":"a.jpg","width":10,"height":8},'
                 '{"id":1,"file_name":"b.jpg","width":10,"height":8},'
                 '{"id":2,"file_name":"x/c.jpg","width":10,"height":8},{"id":3,"file_name":"y/c.png","width":9,'
                 '"height":9},{"id":4,"file_name":"d.jpg","width":"10","height":8},'
                 '{"id":5,"file_name":"e.jpg","width":10,"height":8}],'
                 '"categories":[{"id":3,"name":"cat"}],'
                 '"annotations":[{"id":1,"image_id":1,"category_id":3,"bbox":[1,2,3,4]},'
                 '{"id":2,"image_id":2,"category_id":3,"bbox":[1,2,3,4]},'
                 '{"id":3,"image_id":5,"category_id":9,"bbox":[1,2,3,4]},'
                 '{"id":4,"image_id":5,"category_id":3,"bbox":[1,2,3,4]}]}')
    anns, problems = read_coco(p)
    assert sorted(anns) == ["e"] and anns["e"].boxes == [("cat", 1.0, 2.0, 4.0, 6.0)]
    reasons = sorted((p[0] or "", p[1], p[2]) for p in problems)
    assert reasons == [("", "box", "image_rejected"), ("", "box", "image_rejected"),
                       ("", "box", "unknown_category"), ("a", "file", "duplicate_image_id"),
                       ("b", "file", "duplicate_image_id"), ("c", "file", "duplicate_image_id"),
                       ("c", "file", "duplicate_image_id"), ("d", "file", "malformed_size")]
    unknown = next(p for p in problems if p[2] == "unknown_category")[3]
    assert "category_id 9 is not in 'categories' (known: 3)" in unknown
    p.write_text('{"images":[{"id":1,"file_name":"a.jpg","width":10,"height":8}],"categories":[],'
                 '"annotations":[{"id":1,"image_id":1,"category_id":3,"bbox":[1,2,3,4]}]}')
    anns, problems = read_coco(p)
    assert anns["a"].boxes == [] and [q[2] for q in problems] == ["unknown_category"]
    assert "(known: none)" in problems[0][3]


def test_loc_csv_rows_stand_alone(tmp_path: Path) -> None:
    """A bad row is a reject of its own; BOM, quotes and stray bytes do not take other rows with them."""
    p = tmp_path / "LOC_val_solution.csv"
    p.write_bytes(b"\xef\xbb\xbfImageId,PredictionString\r\n"
                  b"a,n01440764 0 0 4 5\r\n"
                  b"b,n01440764 0 0 4 5,extra\r\n"
                  b'"c,n01440764 0 0 4 5\r\n'
                  b"d,n01440764 0 0 4 5\r\n"
                  b"e\xff,n01440764 0 0 4 5\r\n"
                  b"f,n01440764 1 1 4 5\r\n")
    anns, problems = read_loc_csv(p)
    assert sorted(anns) == ["a", "d", "f"]  # an unterminated quote (CSV quoting) is a bad row of its own
    assert anns["d"].boxes == [("n01440764", 0.0, 0.0, 5.0, 6.0)] and anns["f"].boxes[0][1] == 1.0
    assert [(q[0], q[2]) for q in problems] == [("b", "malformed_row"), ("c", "malformed_row"),
                                                (None, "malformed_row")]
    assert "line 3: 3 columns" in problems[0][3] and "line 4: 1 columns" in problems[1][3]
    assert "line 6: not UTF-8" in problems[2][3]


def test_coco_entries_that_are_not_objects(tmp_path: Path) -> None:
    p = tmp_path / "i.json"
    p.write_text('{"images":[{"id":1,"file_name":"a.jpg","width":10,"height":8},[1,2]],'
                 '"categories":[{"id":3,"name":"c"}],'
                 '"annotations":["box",{"id":2,"image_id":1,"category_id":3,"bbox":[1,2,3,4]}]}')
    anns, problems = read_coco(p)
    assert anns["a"].boxes == [("c", 1.0, 2.0, 4.0, 6.0)]
    assert sorted((q[1], q[2]) for q in problems) == [("box", "malformed_box"), ("file", "malformed_json")]
