"""audit: each search checked against brute force, and the whole command on real planted copies."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image

from eic_builder.audit import AuditOptions, audit_manifests, parse_methods
from eic_builder.audit.exact import exact_pairs
from eic_builder.audit.likely import likely_transforms
from eic_builder.audit.neighbours import _exact_pairs, cosine_pairs, whiten
from eic_builder.audit.perceptual import Hashes, block_count, hamming_pairs, phash_bytes, phash_pair
from eic_builder.cli import main
from eic_builder.dataset.manifest import read_manifest, write_manifest
from eic_builder.dataset.tables import empty_table
from eic_builder.errors import InputNotFoundError, ManifestError, OptionError
from eic_builder.features import FeatureConfig, extract_features
from eic_builder.planted_copies import TRANSFORMS, plant_copies, read_planted, score_planted, transform_bytes
from eic_builder.scan.scanner import scan


def brute_hamming(hashes: np.ndarray, threshold: int) -> set[tuple[int, int, int]]:
    d = np.bitwise_count(hashes[:, None] ^ hashes[None, :])
    i, j = np.nonzero(np.triu(d <= threshold, 1))
    return {(a, b, int(d[a, b])) for a, b in zip(i.tolist(), j.tolist())}


@pytest.mark.parametrize("threshold", [0, 3, 6, 10])
def test_multi_index_hashing_finds_exactly_the_brute_force_pairs(threshold: int) -> None:
    rng = np.random.default_rng(threshold)
    hashes = rng.integers(0, 2**63, 3000, dtype=np.int64).astype(np.uint64) ^ (rng.integers(0, 2, 3000).astype(
        np.uint64) << np.uint64(63))
    # plant near pairs at every distance up to threshold + 2, and a bucket of equal hashes
    for k in range(0, 600, 2):
        flips = rng.choice(64, k % (threshold + 3), replace=False)
        hashes[k + 1] = hashes[k] ^ np.uint64(sum(1 << int(b) for b in flips))
    hashes[700:720] = hashes[700]
    i, j, d, flipped = hamming_pairs(hashes, threshold, query_chunk=500)
    assert set(zip(i.tolist(), j.tolist(), d.tolist())) == brute_hamming(hashes, threshold)
    assert len(i) >= 190 and not flipped.any()  # the 20 equal hashes alone give 190 pairs


@pytest.mark.parametrize("threshold", [0, 4, 6, 9])
def test_mirrored_search_finds_exactly_the_brute_force_pairs(threshold: int) -> None:
    rng = np.random.default_rng(threshold)
    direct = rng.integers(0, 2**63, 2000, dtype=np.int64).astype(np.uint64)
    mirrored = rng.integers(0, 2**63, 2000, dtype=np.int64).astype(np.uint64)
    for k in range(0, 400, 4):  # mirrored copies at every distance up to threshold + 2, and direct ones
        noise = np.uint64(sum(1 << int(b) for b in rng.choice(64, k % (threshold + 3), replace=False)))
        direct[k + 1] = mirrored[k] ^ noise
        direct[k + 3] = direct[k + 2] ^ noise
    i, j, d, flipped = hamming_pairs(direct, threshold, query_chunk=300, mirrored=mirrored)
    plain = np.bitwise_count(direct[:, None] ^ direct[None, :]).astype(np.int64)
    across = np.minimum(np.bitwise_count(mirrored[:, None] ^ direct[None, :]),
                        np.bitwise_count(direct[:, None] ^ mirrored[None, :])).astype(np.int64)
    best = np.minimum(plain, across)
    a, b = np.nonzero(np.triu(best <= threshold, 1))
    assert set(zip(i.tolist(), j.tolist(), d.tolist())) == set(zip(a.tolist(), b.tolist(), best[a, b].tolist()))
    assert flipped.tolist() == (across[i, j] < plain[i, j]).tolist() and flipped.sum() >= 25


def test_phash_pair_is_imagehash_of_the_image_and_of_its_mirror(ilsvrc_val_1300: Path) -> None:
    import imagehash
    from PIL import ImageOps

    for path in sorted((ilsvrc_val_1300 / "val").glob("*.JPEG"))[:25]:
        data = path.read_bytes()
        with Image.open(path) as image:
            image.draft("L", (64, 64))
            grey = image.convert("L")
            expected = [int(str(imagehash.phash(x)), 16) for x in (grey, ImageOps.mirror(grey))]
        assert list(phash_pair(data)) == expected and phash_bytes(data) == expected[0]


def test_block_count() -> None:
    assert block_count(1300, 6) == 6 and block_count(2_700_000, 6) == 3  # about 64 / log2(n)
    assert block_count(10, 2) == 3 and block_count(10**9, 0) == 1  # at most t + 1, at least 1


def test_phash_is_robust_to_reencoding_resizing_and_mirroring(ilsvrc_val_1300: Path) -> None:
    first, second = sorted((ilsvrc_val_1300 / "val").glob("*.JPEG"))[:2]
    data, other = first.read_bytes(), second.read_bytes()
    h, mirrored = phash_pair(data)
    distance = {t: bin(h ^ phash_bytes(transform_bytes(data, t))).count("1") for t in TRANSFORMS}
    assert distance["exact"] == 0 and distance["reencode"] <= 3 and distance["resize"] <= 3
    assert distance["flip"] > 10 and bin(h ^ phash_bytes(other)).count("1") > 10
    flipped = phash_pair(transform_bytes(data, "flip"))
    assert bin(flipped[0] ^ mirrored).count("1") <= 3 and bin(flipped[1] ^ h).count("1") <= 3


def test_likely_transforms_by_hand() -> None:
    # rows: 0 original 100x80; 1 same bytes; 2 re-encoded; 3 resized; 4 mirrored; 5 cropped; 6 same size, far
    sha1 = ["s0", "s0", "s2", "s3", None, "s5", "s6"]
    sizes = np.array([[100, 80], [100, 80], [100, 80], [50, 40], [100, 80], [80, 64], [100, 80]])
    direct = np.array([0b1111, 0b1111, 0b1101, 0b0111, 0xFF00, 0xFFFF_FF00, 0xFFFF_0000_FFFF], dtype=np.uint64)
    mirrored = np.array([0xFF00, 0xFF00, 0xFF01, 0xFF10, 0b1110, 0xF0F0_F0F0_F0F0, 0xF0F0_F0F0_F0F0], dtype=np.uint64)
    hashes = Hashes(direct, mirrored, np.ones(7, dtype=bool))
    first, second = np.zeros(6, dtype=np.int64), np.arange(1, 7)
    assert likely_transforms(first, second, sha1, sizes, hashes, 6).tolist() == [
        "exact", "reencoded", "resized", "mirrored", "cropped", ""]
    unknown = sizes.copy()
    unknown[5] = -1  # an unknown size does not make a crop
    undecodable = Hashes(direct, mirrored, np.array([True, True, False, True, True, True, True]))
    assert likely_transforms(first, second, sha1, unknown, undecodable, 6).tolist() == [
        "exact", "", "resized", "mirrored", "", ""]
    assert likely_transforms(first[:0], second[:0], sha1, sizes, hashes, 6).tolist() == []


def test_cosine_search_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    z = rng.standard_normal((3000, 64)).astype(np.float32)
    z[1500:1800] = z[:300] + rng.standard_normal((300, 64)).astype(np.float32) * rng.uniform(0.1, 1.0, (300, 1))
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    sims = z @ z.T
    i, j = np.nonzero(np.triu(sims >= 0.6, 1))
    brute = set(zip(i.tolist(), j.tolist()))
    assert len(brute) > 250
    for found in (cosine_pairs(z, 0.6, "exact"), _exact_pairs(z, 0.6, "cpu")):
        pairs = dict(zip(zip(found[0].tolist(), found[1].tolist()), found[2].tolist()))
        # pairs within float32 rounding of the threshold may fall either side
        assert {p for p in brute if sims[p] > 0.6 + 1e-5} <= set(pairs) <= {p for p in brute} | {
            p for p in pairs if sims[p] > 0.6 - 1e-5}
        assert all(abs(s - sims[p]) < 1e-4 for p, s in pairs.items())
    i, j, _ = cosine_pairs(z, 0.6, "ivf")
    assert len(brute & set(zip(i.tolist(), j.tolist()))) >= 0.95 * len(brute)  # approximate, measured ~0.99


def test_whiten() -> None:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((300, 50)) * np.linspace(10, 0.1, 50) + 5).astype(np.float16)
    z = whiten(x, 32)
    assert z.shape == (300, 32) and z.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1, atol=1e-5)
    assert whiten(x, 1000).shape == (300, 50) and whiten(x[:40], 32).shape == (40, 10)  # at most d, n // 4
    raw = whiten(x, 0)
    assert raw.shape == (300, 50) and abs(float((raw * np.linalg.norm(x.astype(np.float32) - x.astype(
        np.float32).mean(0), axis=1, keepdims=True)).mean(0).max())) < 1e-3  # centred
    with pytest.raises(OptionError, match=r"whiten_dims=-1 must be >= 0"):
        whiten(x, -1)


def test_exact_groups_are_cliques_up_to_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    from eic_builder.audit import exact
    from eic_builder.audit.catalog import Catalog

    cat = Catalog(sha1=["a", "b", "a", "c", "a", "b", None] + ["d"] * 5)
    i, j, score = exact_pairs(cat)
    assert set(score.tolist()) == {1.0}
    assert sorted(zip(i.tolist(), j.tolist())) == [(0, 2), (0, 4), (1, 5), (2, 4), *[
        (a, b) for a in range(7, 12) for b in range(a + 1, 12)]]
    monkeypatch.setattr(exact, "CLIQUE_LIMIT", 4)
    i, j, _ = exact_pairs(cat)
    assert sorted(zip(i.tolist(), j.tolist()))[-4:] == [(7, 8), (7, 9), (7, 10), (7, 11)]  # star to the first


def test_parse_methods() -> None:
    assert parse_methods("exact, perceptual,exact") == ("exact", "perceptual")
    with pytest.raises(OptionError, match=r"bogus is not a method; choose from 'exact', 'perceptual', 'features'"):
        parse_methods("exact,bogus")


@pytest.fixture(scope="module")
def planted(ilsvrc_val_1300: Path, tmp_path_factory: pytest.TempPathFactory, first_images) -> dict[str, Path]:
    """400 real val images, 10 planted copies per transformation as a train split, fc6 features of both
    with RANDOM weights (float32, 160 px, --mirror --regions: what audit needs) and the audit of the two at
    the fixed cut 0.6 (`--min-cosine`; the cut derived from the data is measured below: on these 400 photos
    it falls under unrelated pairs, RESULTS.md)."""
    d = tmp_path_factory.mktemp("audit")
    scan(ilsvrc_val_1300, d / "all")
    first_images(d / "all", d / "val", 400)
    plant_copies(d / "val", d / "planted", per_transform=10, seed=0)
    scan(d / "planted" / "images", d / "train", split="train")
    config = FeatureConfig(weights="random", on="image", resize=160, crop=160, mirror=True, regions=True,
                           device="cpu", dtype="float32")
    extract_features(d / "val", d / "fval", config)
    extract_features(d / "train", d / "ftrain", config)
    audit_manifests([d / "val", d / "train"], d / "audit", AuditOptions(features={"val": d / "fval",
                                                                                  "train": d / "ftrain"}, device="cpu",
                                                                        min_cosine=0.6))
    return {"dir": d, "val": d / "val", "train": d / "train", "audit": d / "audit", "fval": d / "fval"}


@pytest.mark.slow
def test_the_derived_cut_on_photos_it_was_not_set_on(ilsvrc_val_1300: Path, tmp_path: Path) -> None:
    """Val images 400-499 (the set of bench_audit_peers.py --offset 400 --originals 100, seed 0), 10 planted
    copies per transformation, features as that benchmark makes them, the cut derived from the data and
    the candidates checked on their pixels. Bars against the benchmark over seeds 0-2 (stored run
    audit-peers-aligned-from400): precision 1.0, every exact, re-encoded, resized and mirrored copy, crops
    0.97; the bars leave a miss or two."""
    import shutil

    (tmp_path / "src" / "val").mkdir(parents=True)
    for photo in sorted((ilsvrc_val_1300 / "val").iterdir())[400:500]:
        shutil.copy(photo, tmp_path / "src" / "val" / photo.name)
    scan(tmp_path / "src", tmp_path / "val", split="val")
    plant_copies(tmp_path / "val", tmp_path / "planted", per_transform=10, seed=0)
    scan(tmp_path / "planted" / "images", tmp_path / "train", split="train")
    config = FeatureConfig(weights="random", on="image", resize=224, crop=224, mirror=True, regions=True,
                           device="cpu", dtype="float32")
    for name in ("val", "train"):
        extract_features(tmp_path / name, tmp_path / f"f{name}", config)
    r = audit_manifests([tmp_path / "val", tmp_path / "train"], tmp_path / "audit",
                        AuditOptions(features={"val": tmp_path / "fval", "train": tmp_path / "ftrain"}, device="cpu"))
    assert r.cosine_cut.derived and "derived from the data" in (tmp_path / "audit" / "report.md").read_text()
    copies = read_planted(tmp_path / "planted" / "planted.csv")
    features = score_planted(pq.read_table(tmp_path / "audit" / "pairs.parquet"), copies)["features"]
    assert features["precision"] >= 0.95
    assert features["exact"] == features["reencode"] == features["resize"] == 1.0 and features["flip"] >= 0.9
    assert features["crop"] >= 0.8


@pytest.mark.slow
def test_the_pixel_check_on_the_first_400_photos(planted: dict[str, Path], tmp_path: Path) -> None:
    """The photos where the derived cut alone fell under unrelated pairs (precision 0.736 over seeds 0-2,
    stored run audit-peers): the same features with the cut derived, their candidates checked on their
    pixels, and without the check."""
    from eic_builder.audit.alignment import DEFAULT_MIN_MATCH

    copies = read_planted(planted["dir"] / "planted" / "planted.csv")
    features = {"val": planted["fval"], "train": planted["dir"] / "ftrain"}
    scores = {}
    for align in (True, False):
        audit_manifests([planted["val"], planted["train"]], tmp_path / str(align),
                        AuditOptions(features=features, methods=["features"], device="cpu", align=align))
        scores[align] = score_planted(pq.read_table(tmp_path / str(align) / "pairs.parquet"), copies)["features"]
    checked = scores[True]
    assert checked["precision"] >= 0.95, scores
    assert checked["exact"] == checked["reencode"] == checked["resize"] == 1.0 and checked["flip"] >= 0.9
    assert checked["crop"] >= 0.8
    assert scores[False]["precision"] < checked["precision"]  # the check is what removes the unrelated pairs
    report = (tmp_path / "True" / "report.md").read_text()
    assert "checked on their pixels" in report and f"alignment score >= {DEFAULT_MIN_MATCH:.2f}" in report
    assert "not checked on their pixels (`--no-align`)" in (tmp_path / "False" / "report.md").read_text()


@pytest.mark.slow
def test_each_method_finds_what_it_is_meant_to(planted: dict[str, Path]) -> None:
    # bars against what benchmarks/bench_audit_peers.py measured at 160 px over seeds 0-2 (this fixture is
    # seed 0): pHash finds every exact, re-encoded, resized and mirrored copy at precision 1.0; the
    # features (--mirror --regions) every one of those too, and 60-100 % of the crops (80 % of each
    # side at a random place) at precision 0.96
    copies = read_planted(planted["dir"] / "planted" / "planted.csv")
    assert len(copies) == 50 and {c.transform for c in copies} == set(TRANSFORMS)
    scores = score_planted(pq.read_table(planted["audit"] / "pairs.parquet"), copies)
    assert scores["exact"] == {"pairs": 10, "precision": 1.0, "exact": 1.0, "reencode": 0.0, "resize": 0.0,
                               "crop": 0.0, "flip": 0.0}
    perceptual, features = scores["perceptual"], scores["features"]
    assert perceptual["precision"] >= 0.9 and features["precision"] >= 0.9
    assert perceptual["exact"] == perceptual["reencode"] == perceptual["resize"] == perceptual["flip"] == 1.0
    assert perceptual["crop"] <= 0.3  # pHash does not survive a crop
    assert features["exact"] == features["reencode"] == features["resize"] == 1.0
    assert features["flip"] >= 0.9  # the features of an image and its mirror image are the same (--mirror)
    assert features["crop"] >= 0.4  # --regions, even with random weights


@pytest.mark.slow
def test_outputs_and_exclusion(planted: dict[str, Path], tmp_path: Path) -> None:
    audit = planted["audit"]
    pairs = pq.read_table(audit / "pairs.parquet")
    groups = pq.read_table(audit / "groups.parquet").to_pandas()
    found = {b for a, b in zip(pairs["split_a"].to_pylist(), pairs["image_id_b"].to_pylist()) if a == "val"}
    # every pair's two images share a group; groups are numbered from 0
    group_of = dict(zip(groups.image_id, groups.group))
    assert all(group_of[a] == group_of[b] for a, b in zip(pairs["image_id_a"].to_pylist(),
                                                          pairs["image_id_b"].to_pylist()))
    assert sorted(set(groups.group)) == list(range(groups.group.nunique()))
    assert (groups.groupby("group").size() == groups.groupby("group")["size"].first()).all()
    report = (audit / "report.md").read_text()
    leaked = {i for i in found if i.rsplit("_", 1)[-1] in TRANSFORMS}
    # each planted pair is named with its transformation, whichever method found it
    named = {"exact": "exact", "reencode": "reencoded", "resize": "resized", "flip": "mirrored", "crop": "cropped"}
    cols = pairs.select(["image_id_b", "likely", "method"]).to_pydict()
    truth = [(named[b.rsplit("_", 1)[-1]], likely) for b, likely in zip(cols["image_id_b"], cols["likely"])
             if b.rsplit("_", 1)[-1] in named]
    assert len(truth) >= 80 and sum(want == got for want, got in truth) >= 0.95 * len(truth)
    assert "## Pairs by likely transformation" in report and "| mirrored | " in report
    assert "made without `--mirror`" not in report
    assert f"| train | val | {len(leaked)} |" in report
    with Image.open(audit / "contact_sheet.png") as sheet:
        assert sheet.width == 350 and sheet.height > 12 * 160
    r = CliRunner().invoke(main, ["--no-progress", "filter", str(planted["train"]), "--out", str(tmp_path / "clean"),
                                  "--exclude-audit", str(audit)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert r.output.startswith(f"excluded {len(leaked)} images found in the audit")
    clean = read_manifest(tmp_path / "clean")
    assert clean.images.num_rows == 50 - len(leaked)
    assert not set(clean.images["image_id"].to_pylist()) & leaked
    rejects = clean.rejects.to_pandas()
    assert set(rejects.image_id) == leaked and set(rejects.reason) == {"copy_of_val_image"}
    assert rejects.detail.str.contains(r"^audit: (?:exact|perceptual|features) pair \(score ").all()
    # --keep-one inside val: the val images the features paired with each other (if any) lose all but one
    r = CliRunner().invoke(main, ["--no-progress", "filter", str(planted["val"]), "--out", str(tmp_path / "v"),
                                  "--exclude-audit", str(audit), "--keep-one"], catch_exceptions=False)
    val_groups = groups[groups.split == "val"].groupby("group").size()
    assert r.exit_code == 0 and r.output.startswith(f"excluded {int((val_groups - 1).sum())} images")


def test_bad_input_is_one_line_and_writes_nothing(planted: dict[str, Path], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    val, train, out = planted["val"], planted["train"], tmp_path / "out"
    with pytest.raises(OptionError, match=r"methods features needs features NAME=FEATDIR"):
        audit_manifests([val], out, AuditOptions(methods=["features"]))
    with pytest.raises(ManifestError, match=r"features .* are not of manifest train: 400 of their 400 images"):
        audit_manifests([val, train], out, AuditOptions(features={"train": planted["fval"]}))
    with pytest.raises(OptionError, match=r"features names bogus, which is no audited manifest; names: val"):
        audit_manifests([val], out, AuditOptions(features={"bogus": planted["fval"]}))
    plain = tmp_path / "plain"  # features of another kind: their cosines with --regions ones mean nothing
    extract_features(train, plain, FeatureConfig(weights="random", resize=37, crop=32, device="cpu", workers=0))
    with pytest.raises(OptionError, match=r"features of val and train were made differently \(preprocessing: "):
        audit_manifests([val, train], out, AuditOptions(features={"val": planted["fval"], "train": plain}))
    with pytest.raises(OptionError, match=r"are both named 'val'"):
        audit_manifests([val, val], out)
    with pytest.raises(OptionError, match=r"phash_threshold=64 must be in \[0, 63\]"):
        audit_manifests([val], out, AuditOptions(phash_threshold=64))
    with pytest.raises(OptionError, match=r"index='hnsw' is not allowed"):
        audit_manifests([val], out, AuditOptions(index="hnsw"))
    empty = tmp_path / "empty"
    write_manifest(empty, empty_table("images"), empty_table("boxes"), empty_table("rejects"),
                   {"source_root": str(tmp_path)})
    with pytest.raises(OptionError, match=r"nothing to audit"):
        audit_manifests([empty], out)
    # an image deleted since the scan: the reader's one-line error, nothing written
    broken = tmp_path / "copy"
    (broken / "images").mkdir(parents=True)
    for path in sorted((planted["dir"] / "planted" / "images").rglob("*.JPEG"))[:3]:
        (broken / "images" / path.name).write_bytes(path.read_bytes())
    scan(broken / "images", tmp_path / "bm", split="train")
    (broken / "images" / path.name).unlink()
    with pytest.raises(InputNotFoundError, match=rf"cannot read image {path.name}"):
        audit_manifests([tmp_path / "bm"], out)
    assert not out.exists()
    r = CliRunner().invoke(main, ["--no-progress", "filter", str(val), "--out", str(tmp_path / "f"), "--keep-one"])
    assert r.exit_code == 2 and "--keep-one needs --exclude-audit DIR" in r.output
    r = CliRunner().invoke(main, ["--no-progress", "filter", str(empty), "--out", str(tmp_path / "f"),
                                  "--exclude-audit", str(planted["audit"])])
    assert r.exit_code == 2 and f"{empty} was not audited in {planted['audit']}" in r.output


def test_box_features_are_refused(tmp_path: Path) -> None:
    from eic_builder.dataset.feature_shards import features_table, read_image_features
    from eic_builder.dataset.tables import write_table

    table = features_table(["a"], [0], ["n01440764"], np.zeros((1, 4096), dtype=np.float16))
    write_table(table, tmp_path / "part-000000.parquet", "features")
    with pytest.raises(ManifestError, match=r"holds box features only; whole-image features come from"):
        read_image_features(tmp_path)


def test_plant_copies_cli(planted: dict[str, Path], tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["--no-progress", "plant-copies", str(planted["val"]), "--out", str(tmp_path),
                                  "--per-transform", "2", "--seed", "3"], catch_exceptions=False)
    assert r.exit_code == 0 and r.output.startswith("wrote 10 copies of images of")
    rows = list(csv.DictReader((tmp_path / "planted.csv").open()))
    assert [row["transform"] for row in rows] == [t for t in TRANSFORMS for _ in range(2)]
    assert len({row["original_id"] for row in rows}) == 10
    assert len(list((tmp_path / "images").rglob("*.JPEG"))) == 10
    # crops keep 80 % of each side, at places drawn from the seed: not all centred
    val = read_manifest(planted["val"]).images.to_pandas().set_index("image_id")
    for row in rows:
        copy = next((tmp_path / "images").rglob(f"{row['copy_id']}.JPEG"))
        with Image.open(copy) as image:
            size = image.size
        original = (val.width[row["original_id"]], val.height[row["original_id"]])
        expected = {"resize": (original[0] // 2, original[1] // 2),
                    "crop": (round(original[0] * 0.8), round(original[1] * 0.8))}.get(row["transform"], original)
        assert size == expected, row
    data = next((planted["dir"] / "planted" / "images").rglob("*_exact.JPEG")).read_bytes()
    corner, centre = transform_bytes(data, "crop", (0.0, 0.0)), transform_bytes(data, "crop", (0.5, 0.5))
    assert corner != centre
    r = CliRunner().invoke(main, ["--no-progress", "plant-copies", str(planted["val"]), "--out", str(tmp_path),
                                  "--per-transform", "100"])
    assert r.exit_code == 2 and "has 400 images with a file; 100 per transformation needs 500" in r.output


def test_exclude_audit_refuses_an_audit_of_other_content(planted: dict[str, Path], tmp_path: Path,
                                                         first_images) -> None:
    import shutil

    train = tmp_path / "train"
    shutil.copytree(planted["train"], train)
    audit_manifests([planted["val"], train], tmp_path / "audit", AuditOptions(methods=["exact"]))
    ok = CliRunner().invoke(main, ["--no-progress", "filter", str(train), "--out", str(tmp_path / "f1"),
                                   "--exclude-audit", str(tmp_path / "audit")])
    assert ok.exit_code == 0 and ok.output.startswith("excluded 10 images"), ok.output
    first_images(planted["train"], tmp_path / "fewer", 20)  # the same folder scanned again, other content
    shutil.rmtree(train)
    shutil.copytree(tmp_path / "fewer", train)
    r = CliRunner().invoke(main, ["--no-progress", "filter", str(train), "--out", str(tmp_path / "f2"),
                                  "--exclude-audit", str(tmp_path / "audit")])
    assert r.exit_code == 2 and not (tmp_path / "f2").exists()
    assert f"the audit {tmp_path / 'audit'} is stale for {train}: it read content " in r.output
    assert "run `eic-build audit` on it again" in r.output and len(r.output.strip().splitlines()) == 1


def test_plant_copies_refuses_a_folder_of_another_planting(planted: dict[str, Path], tmp_path: Path) -> None:
    def plant(seed: str):
        return CliRunner().invoke(main, ["--no-progress", "plant-copies", str(planted["val"]), "--out",
                                         str(tmp_path / "p"), "--per-transform", "1", "--seed", seed])

    assert plant("1").exit_code == 0
    before = sorted((tmp_path / "p").rglob("*"))
    assert plant("1").exit_code == 0  # the same planting again: resumed in place
    r = plant("2")
    assert r.exit_code == 2 and "holds the files of another plant-copies run (it differs in seed)" in r.output
    assert "--out" in r.output and sorted((tmp_path / "p").rglob("*")) == before  # nothing mixed in
    (tmp_path / "p" / ".eic-run.json").unlink()  # an unstamped folder of copies: refused as well
    r = plant("1")
    assert r.exit_code == 2 and "already holds images, planted.csv of an earlier run" in r.output


def test_a_damaged_features_shard_is_named(planted: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    feats = tmp_path / "fval"
    shutil.copytree(planted["fval"], feats)
    shard = sorted(feats.glob("part-*.parquet"))[0]
    shard.write_bytes(np.random.default_rng(0).bytes(4096))
    r = CliRunner().invoke(main, ["--no-progress", "audit", str(planted["val"]), "--out", str(tmp_path / "a"),
                                  "--features", f"val={feats}"])
    assert r.exit_code == 2 and r.output.startswith(f"eic-build: error: {shard} is damaged or not a Parquet file")
    assert "run `eic-build features` again" in r.output and "Traceback" not in r.output
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(ManifestError, match=rf"{shard} is damaged or not a Parquet file"):
        audit_manifests([planted["val"]], tmp_path / "a", AuditOptions(features={"val": feats}))


def test_the_derived_cut_by_hand() -> None:
    """The cut from nearest non-copy neighbours, and which pairs a search from its lower bound keeps."""
    from statistics import NormalDist

    from eic_builder.audit.neighbours import (
        CUT_FALSE_PAIRS,
        CUT_MIN_IMAGES,
        CUT_MUTUAL_Z,
        DEFAULT_THRESHOLD,
        CosineCut,
        derive_cut,
    )

    rng = np.random.default_rng(0)
    base = rng.normal(size=(200, 64))
    copies = base[:20] + 0.05 * rng.normal(size=(20, 64))  # each original's nearest neighbour, near 1
    z = np.concatenate([base, copies])
    z = (z / np.linalg.norm(z, axis=1, keepdims=True)).astype(np.float32)
    sims = z @ z.T
    np.fill_diagonal(sims, -2)
    copy_of = {k: 200 + k for k in range(20)} | {200 + k: k for k in range(20)}
    non_copy = np.array([max(s for j, s in enumerate(row) if copy_of.get(i) != j) for i, row in enumerate(sims)])
    median = np.median(non_copy)
    sigma = 1.4826 * np.median(np.abs(non_copy - median))
    z_false = NormalDist().inv_cdf(1 - CUT_FALSE_PAIRS / len(z))
    cut = derive_cut(z)
    assert cut.derived and cut.n == 220 and "nearest non-copy" in cut.describe()
    assert cut.median == pytest.approx(median, abs=1e-6) and cut.sigma == pytest.approx(sigma, abs=1e-6)
    assert cut.value == pytest.approx(median + z_false * sigma, abs=1e-6)
    assert cut.mutual == pytest.approx(median + CUT_MUTUAL_Z * sigma, abs=1e-6)
    assert cut.search == cut.mutual and cut.floor == cut.median  # the pixel check's candidates start there
    # keep: pairs at the cut, and pairs of mutual best partners from the mutual cut
    hand = CosineCut(0.8, True, 6, 0.4, 0.1, 2.5, mutual=0.6)
    first, second = np.array([0, 0, 1, 3, 4]), np.array([1, 2, 2, 4, 5])
    score = np.array([0.7, 0.65, 0.62, 0.85, 0.61])
    assert hand.keep(first, second, score, 6).tolist() == [True, False, False, True, False]
    assert CosineCut(0.6, derived=False).keep(first, second, score, 6).tolist() == [True, True, True, True, True]
    few = derive_cut(z[: CUT_MIN_IMAGES - 1])
    assert (few.derived, few.value) == (False, DEFAULT_THRESHOLD) and "too few images" in few.describe()


def _texture(rng: np.random.Generator, shape: tuple[int, int], smooth: float = 2.0) -> np.ndarray:
    """A photo-like grey image (float32, 0-255): blurred noise with edges at every scale."""
    import cv2

    noise = rng.normal(size=shape).astype(np.float32)
    image = sum(cv2.GaussianBlur(noise, (0, 0), s) * s for s in (smooth, 4 * smooth, 16 * smooth))
    return ((image - image.min()) / np.ptp(image) * 255).astype(np.float32)


def _shrink(image: np.ndarray, side: int = 96) -> np.ndarray:
    import cv2

    scale = side / max(image.shape)
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def test_match_score_by_hand() -> None:
    """A crop (any place, 52-100 % of each side, one side cut more than the other too), its mirror image and
    a resized copy lie on their original; two different textures, and two smooth gradients (which correlate
    as raw grey levels), do not; a flat image aligns with nothing."""
    from eic_builder.audit.alignment import DEFAULT_MIN_MATCH, match_score

    rng = np.random.default_rng(0)
    original = _texture(rng, (300, 400))
    thumb = _shrink(original)
    for (top, left, height, width), mirror in [((30, 40, 240, 320), False), ((0, 0, 160, 210), True),
                                               ((60, 100, 240, 300), False), ((0, 0, 300, 400), True),
                                               ((10, 150, 270, 240), False)]:
        copy = original[top:top + height, left:left + width]
        copy = copy[:, ::-1] if mirror else copy
        assert match_score(thumb, _shrink(np.ascontiguousarray(copy))) >= 0.9
        assert match_score(_shrink(np.ascontiguousarray(copy)), thumb) >= 0.9  # either order
    assert match_score(thumb, _shrink(original, 48)) >= 0.9  # resized: thumbnails of any size
    other = _shrink(_texture(np.random.default_rng(1), (300, 400)))
    assert match_score(thumb, other) < 0.5
    ramp = np.tile(np.linspace(0, 255, 96, dtype=np.float32), (72, 1))
    ramp2 = ramp + 3 * np.sin(np.arange(96, dtype=np.float32) / 2)
    assert match_score(ramp, ramp2[:, ::-1].copy()) < DEFAULT_MIN_MATCH
    assert match_score(np.full((72, 96), 128, np.float32), thumb) == -1.0


def test_pixel_check_on_real_photos(ilsvrc_val_1300: Path) -> None:
    """On 24 real val photos: each one's planted copies (crop 80 % at a corner, mirror, half size, JPEG 40)
    score >= 0.85 against it, and no two different photos reach the cut (bench_alignment.py measures both
    on 100 photos, RESULTS.md)."""
    from itertools import combinations

    from eic_builder.audit.alignment import DEFAULT_MIN_MATCH, match_score, thumbnail

    photos = sorted((ilsvrc_val_1300 / "val").iterdir())[600:624]
    data = [p.read_bytes() for p in photos]
    thumbs = [thumbnail(d) for d in data]
    assert max(thumbs[0].shape) == 96
    for k, blob in enumerate(data[:6]):
        for transform, place in (("crop", (1.0, 0.0)), ("flip", (0.5, 0.5)), ("resize", (0.5, 0.5)),
                                 ("reencode", (0.5, 0.5))):
            assert match_score(thumbs[k], thumbnail(transform_bytes(blob, transform, place))) >= 0.85
    unrelated = [match_score(thumbs[a], thumbs[b]) for a, b in combinations(range(len(thumbs)), 2)]
    assert max(unrelated) < DEFAULT_MIN_MATCH


def test_candidates_of_the_pixel_check_by_hand() -> None:
    from eic_builder.audit.neighbours import CosineCut, neighbour_ranks

    # image 2's pairs by score: (1, 2) 0.8, (2, 3) 0.7, (0, 2) 0.5: ranks 0, 1, 2; (0, 2) is image 0's second
    first, second, score = np.array([0, 0, 1, 2]), np.array([1, 2, 2, 3]), np.array([0.9, 0.5, 0.8, 0.7])
    assert neighbour_ranks(first, second, score, 4).tolist() == [0, 1, 0, 0]
    cut = CosineCut(0.85, True, 4, 0.45, 0.1, 2.5, mutual=0.65)  # the floor: the median 0.45
    assert cut.floor == 0.45 and cut.search == 0.65  # candidates from the median, copies from the mutual cut
    assert cut.candidates(first, second, score, 4).tolist() == [True, True, True, True]
    assert cut.candidates(first, second, score, 4, neighbours=1).tolist() == [True, False, True, True]
    assert cut.keep(first, second, score, 4).tolist() == [True, False, False, False]  # --no-align: no mutual pair
    given = CosineCut(0.75, derived=False)
    assert given.floor == given.search == 0.75
    assert given.candidates(first, second, score, 4).tolist() == [True, False, True, False]
    assert cut.candidates(first[:0], second[:0], score[:0], 4).tolist() == []


def test_pixel_check_options(planted: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(OptionError, match=r"min_match=1.5 must be in \[-1, 1\]"):
        audit_manifests([planted["val"]], tmp_path / "a", AuditOptions(min_match=1.5))
    r = CliRunner().invoke(main, ["--no-progress", "audit", str(planted["val"]), "--out", str(tmp_path / "b"),
                                  "--min-match", "1.5"])
    assert r.exit_code == 2 and "--min-match" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.slow
def test_pixel_check_in_blocks_of_pairs(planted: dict[str, Path]) -> None:
    """The planted copies against their originals, and each original against the next copy's: the same
    scores whatever the block of pairs held at once; copies at the cut, the others under it."""
    from eic_builder.audit.alignment import DEFAULT_MIN_MATCH, match_scores
    from eic_builder.audit.catalog import load_catalog

    cat = load_catalog([planted["val"], planted["train"]], None)
    try:
        row = {image_id: i for i, image_id in enumerate(cat.image_id)}
        copies = read_planted(planted["dir"] / "planted" / "planted.csv")
        first = np.asarray([row[c.original_id] for c in copies] * 2)
        second = np.asarray([row[c.copy_id] for c in copies] + [row[c.copy_id] for c in copies[1:] + copies[:1]])
        whole = match_scores(cat, first, second, workers=1)
        assert np.array_equal(match_scores(cat, first, second, workers=2, block=7), whole)
        assert (whole[:len(copies)] >= DEFAULT_MIN_MATCH).all() and (whole[len(copies):] < DEFAULT_MIN_MATCH).all()
    finally:
        cat.close()
