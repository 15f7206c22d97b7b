"""`pip install .` (not only an editable install) ships what the package reads at run time."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_ships_data_manifests(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(ROOT),
                        "-w", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = tmp_path.glob("eic_builder-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("data_manifests/eic_classes.parquet", "data_manifests/ilsvrc1k_classes.parquet",
                   "data_manifests/imagenet21k_miil_synsets.txt", "data_manifests/imagenet_bbox_synsets.txt",
                   "eic_builder/reference_lists.py"):
        assert needed in names, needed
    # installed (not editable), the package finds its class lists
    target = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                        str(wheel)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    probe = ("import sys; sys.path.insert(0, sys.argv[1]); import eic_builder.reference_lists as r; "
             "d = r.data_manifests_dir(); print(r.__file__); print((d / 'eic_classes.parquet').is_file())")
    r = subprocess.run([sys.executable, "-c", probe, str(target)], capture_output=True, text=True, timeout=120,
                       cwd=tmp_path, env={"PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr[-2000:]
    where, found = r.stdout.split()
    assert where.startswith(str(target)) and found == "True"
