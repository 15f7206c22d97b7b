from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import pyarrow as pa
import pytest
from PIL import Image

import eic_builder
from eic_builder.errors import ManifestError, OptionError
from eic_builder.scan.scanner import scan


@pytest.fixture(scope="module")
def val_folder_and_tar(ilsvrc_val_1300: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The real val images scanned as a folder, and the same images scanned from one tar of them."""
    d = tmp_path_factory.mktemp("open")
    scan(ilsvrc_val_1300, d / "folder")
    with tarfile.open(d / "val.tar", "w") as tar:
        tar.add(ilsvrc_val_1300 / "val", arcname="val")
    scan([d / "val.tar", ilsvrc_val_1300 / "LOC_val_solution.csv"], d / "tar")
    return d / "folder", d / "tar"


def test_tables_and_images_from_a_folder_and_a_tar(val_folder_and_tar: tuple[Path, Path],
                                                   ilsvrc_val_1300: Path) -> None:
    folder, tar = (eic_builder.open_manifest(d) for d in val_folder_and_tar)
    assert (len(folder), folder.boxes.num_rows, folder.rejects.num_rows) == (1300, 1943, 0)
    assert folder.images.schema.equals(tar.images.schema)
    assert repr(folder).startswith("Manifest(") and repr(folder).endswith("1,300 images, 1,943 boxes, 0 rejects)")
    assert folder.meta["source_root"] and folder.boxes.to_pandas().shape[0] == 1943
    sizes = dict(zip(folder.image_ids, zip(folder.images["width"].to_pylist(), folder.images["height"].to_pylist())))
    with tar:
        for image_id in folder.image_ids[::260]:
            raw = (ilsvrc_val_1300 / "val" / f"{image_id}.JPEG").read_bytes()
            assert folder.read_bytes(image_id) == raw == tar.read_bytes(image_id)  # member read at its offset
            image = tar.read_image(image_id)
            assert image.mode == "RGB" and image.size == sizes[image_id]
    assert tar.images["archive"].to_pylist()[0].endswith("/val.tar") and folder.images["archive"].null_count == 1300


def test_bad_requests_are_one_line_errors(val_folder_and_tar: tuple[Path, Path], tmp_path: Path) -> None:
    folder = eic_builder.open_manifest(val_folder_and_tar[0])
    with pytest.raises(ManifestError, match=r"image 'ILSVRC2012_val_99999999' is not in manifest .* \(1,300 images; "
                                            r"see \.image_ids\)"):
        folder.read_image("ILSVRC2012_val_99999999")
    moved = eic_builder.open_manifest(val_folder_and_tar[0], root=tmp_path / "elsewhere")
    assert len(moved) == 1300  # the tables open without the images
    with pytest.raises(OptionError, match=r"image root .*elsewhere.* does not exist; pass root=DIR"):
        moved.read_image(folder.image_ids[0])
    with pytest.raises(ManifestError, match=r"manifest directory .*nothing does not exist"):
        eic_builder.open_manifest(tmp_path / "nothing")
    with pytest.raises(AttributeError, match="no attribute 'open_manifests'"):
        eic_builder.open_manifests  # noqa: B018


def test_importing_the_package_stays_light() -> None:
    code = "import sys, eic_builder; print('pyarrow' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
    assert isinstance(Image.new("RGB", (1, 1)), Image.Image)


def test_damaged_image_bytes_name_the_image_and_the_manifest(ilsvrc_val_1300: Path, tmp_path: Path) -> None:
    from eic_builder.errors import ImageDataError

    folder = tmp_path / "images"
    folder.mkdir()
    names = sorted(p.name for p in (ilsvrc_val_1300 / "val").iterdir())[:3]
    for name in names:
        (folder / name).write_bytes((ilsvrc_val_1300 / "val" / name).read_bytes())
    scan(folder, tmp_path / "m", split="val")
    (folder / names[0]).write_bytes(b"\xff\xd8\xff\xe0" + b"garbage" * 100)  # damaged after the scan
    with eic_builder.open_manifest(tmp_path / "m") as m:
        bad = names[0].rsplit(".", 1)[0]
        with pytest.raises(ImageDataError, match=rf"image '{bad}' \({names[0]}\) of manifest {tmp_path / 'm'} "
                                                 r"cannot be decoded \(.+\); its bytes changed since the scan"):
            m.read_image(bad)
        assert m.read_image(names[1].rsplit(".", 1)[0]).size == (227, 227)  # the others still read
    with pytest.raises(OptionError, match=r"does not exist; pass root=DIR"):
        eic_builder.open_manifest(tmp_path / "m", root=tmp_path / "nowhere").read_bytes(names[1].rsplit(".", 1)[0])


def test_one_object_for_every_stage(val_folder_and_tar: tuple[Path, Path], tmp_path: Path) -> None:
    """The manifest reads its tables when first used, resolves its image root once, groups its boxes by image
    (checked against pandas), streams rows, and derives a new manifest that carries its lineage."""
    import numpy as np
    import pyarrow.compute as pc

    from eic_builder.dataset.manifest import Manifest, read_manifest

    folder = val_folder_and_tar[0]
    manifest = Manifest.open(folder)
    assert manifest._tables == {"images": None, "boxes": None, "rejects": None}  # nothing read yet
    assert manifest.image_root() == manifest.image_root() == manifest.meta["source_root"]
    by_image = manifest.boxes_by_image()
    frame = manifest.boxes.to_pandas()
    assert len(by_image) == frame["image_id"].nunique() and sum(len(b) for b in by_image.values()) == 1943
    for image_id, group in list(frame.groupby("image_id", sort=False))[::97]:
        np.testing.assert_array_equal(by_image[image_id], group[["x1", "y1", "x2", "y2"]].to_numpy(np.float32))
    first = manifest.image_ids[:100]
    streamed = Manifest.open(folder).read_rows("images", lambda batch: pc.is_in(batch["image_id"], pa.array(first)))
    assert streamed.num_rows == 100 and streamed["image_id"].to_pylist() == first

    kept = manifest.images.slice(0, 100)
    child = manifest.derive(kept, manifest.boxes.filter(pc.is_in(manifest.boxes["image_id"], kept["image_id"])),
                            step={"first": 100})
    assert child.directory is None and len(child) == 100 and child.image_root() == manifest.image_root()
    child.write(tmp_path / "child")
    back = read_manifest(tmp_path / "child")
    assert back.meta["step"] == {"first": 100} and back.meta["source_root"] == manifest.meta["source_root"]
    assert back.meta["lineage"][0]["manifest"] == str(folder.resolve())
    assert back.image_ids == first and back.read_bytes(first[0]) == manifest.read_bytes(first[0])


def test_tables_are_read_when_first_used(val_folder_and_tar: tuple[Path, Path], tmp_path: Path) -> None:
    import shutil

    from eic_builder.dataset.manifest import Manifest

    copy = tmp_path / "copy"
    shutil.copytree(val_folder_and_tar[0], copy)
    manifest = Manifest.open(copy, box_columns=["image_id"])
    assert len(manifest) == 1300 and manifest.boxes.column_names == ["image_id"]
    (copy / "rejects.parquet").unlink()  # opened whole; a table removed since is named when it is first read
    with pytest.raises(ManifestError, match=r"no such manifest file: .*rejects\.parquet"):
        manifest.rejects  # noqa: B018
    with pytest.raises(ManifestError, match=r"is not a manifest directory: missing rejects\.parquet"):
        Manifest.open(copy)
