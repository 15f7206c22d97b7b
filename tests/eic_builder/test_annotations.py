from __future__ import annotations

from pathlib import Path

import pytest

from eic_builder.scan.annotations import AnnotationError, parse_xml, read_coco, read_loc_csv

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
    with pytest.raises(AnnotationError) as info:
        parse_xml(bomb, "ilsvrc")
    assert info.value.reason == "unsafe_xml"


def test_external_entity_is_refused_not_resolved(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("n99999999")
    xxe = (f'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file://{secret}">]>'
           "<annotation><object><name>&x;</name></object></annotation>").encode()
    with pytest.raises(AnnotationError) as info:
        parse_xml(xxe, "ilsvrc")
    assert info.value.reason == "unsafe_xml"


def test_malformed_xml() -> None:
    with pytest.raises(AnnotationError) as info:
        parse_xml(b"<annotation><object>", "ilsvrc")
    assert info.value.reason == "malformed_xml"
    with pytest.raises(AnnotationError, match="expected <annotation>"):
        parse_xml(b"<html/>", "ilsvrc")


def test_xml_box_missing_coordinate_is_kept_as_bad_row() -> None:
    ann = parse_xml(b"<annotation><object><name>n01440764</name><bndbox><xmin>1</xmin></bndbox></object>"
                    b"</annotation>", "ilsvrc")
    assert ann.boxes == [] and len(ann.bad_rows) == 1 and "ymin" in ann.bad_rows[0]


def test_loc_csv(tmp_path: Path) -> None:
    p = tmp_path / "LOC_val_solution.csv"
    p.write_text("ImageId,PredictionString\na,n01440764 0 1 9 10 n01443537 2 2 3 3 \nb,n01440764 1 2 x 4 \nc,n1 2\n")
    anns = read_loc_csv(p)
    assert anns["a"].boxes == [("n01440764", 0.0, 1.0, 10.0, 11.0), ("n01443537", 2.0, 2.0, 4.0, 4.0)]
    assert anns["b"].boxes == [] and "non-numeric" in anns["b"].bad_rows[0]
    assert "not a multiple of 5" in anns["c"].bad_rows[0]
    (tmp_path / "LOC_bad_solution.csv").write_text("a,b\n")
    with pytest.raises(AnnotationError, match="ImageId,PredictionString"):
        read_loc_csv(tmp_path / "LOC_bad_solution.csv")


def test_coco(tmp_path: Path) -> None:
    p = tmp_path / "i.json"
    p.write_text('{"images":[{"id":1,"file_name":"x/a.jpg","width":10,"height":8}],'
                 '"categories":[{"id":3,"name":"cat"}],'
                 '"annotations":[{"id":1,"image_id":1,"category_id":3,"bbox":[1,2,3,4]},'
                 '{"id":2,"image_id":7,"category_id":3,"bbox":[1,2,3,4]}]}')
    anns, orphans = read_coco(p)
    assert anns["a"].boxes == [("cat", 1.0, 2.0, 4.0, 6.0)] and (anns["a"].width, anns["a"].height) == (10, 8)
    assert len(orphans) == 1 and "image_id 7" in orphans[0]
    p.write_text("[1, 2]")
    with pytest.raises(AnnotationError, match="not a COCO instances file"):
        read_coco(p)
