"""What ``filter --exclude-audit`` removes from a manifest, by an audit's pairs and groups.

* Leakage: an image of the manifest, in a split that is not held out, paired by any method with an
  image of a held-out split (``val``, ``test``): reason ``copy_of_val_image``, the detail naming the
  held-out image, the method and its score.
* ``--keep-one``: inside each group, of the manifest's images of one split only the first (in
  manifest order) stays: reason ``duplicate_in_split``, the detail naming the one kept.
"""

from __future__ import annotations

import os
from pathlib import Path

from eic_builder.errors import OptionError


def audited_name(audit_dir: Path, src: Path) -> str:
    """The name ``src`` had in the audit at ``audit_dir``; raises when it was not audited there, or when
    its content changed since (another scan, another filter): an audit's pairs name image ids of the
    manifests it read, and applied to other ones they would remove nothing, or the wrong images."""
    from eic_builder.dataset.manifest import Manifest
    from eic_builder.dataset.tables import read_metadata

    pairs_file = audit_dir / "pairs.parquet"
    if not pairs_file.is_file():
        raise OptionError(f"`audit_dir` {audit_dir} holds no pairs.parquet; run `eic-build audit ... --out "
                          f"{audit_dir}` first")
    meta = read_metadata(pairs_file)
    manifests, fingerprints = meta.get("manifests", {}), meta.get("fingerprints", {})
    name = next((n for n, directory in manifests.items() if Path(directory) == src.resolve()), None)
    if name is None:
        raise OptionError(f"{src} was not audited in {audit_dir}; it audited: "
                          + ", ".join(f"{n} ({d})" for n, d in manifests.items()))
    found = Manifest.open(src).fingerprint()
    if fingerprints.get(name) != found:
        was = f"content {fingerprints[name]}" if name in fingerprints else "a manifest of unrecorded content"
        raise OptionError(f"the audit {audit_dir} is stale for {src}: it read {was}, the manifest now holds "
                          f"content {found} (scanned or filtered again since); run `eic-build audit` on it again")
    return name


def images_to_exclude(src: str | os.PathLike[str], audit_dir: str | os.PathLike[str],
                      keep_one: bool = False) -> dict[str, tuple[str, str]]:
    """Image id -> (reject reason, detail) for the images of ``src`` to remove (see the module's doc)."""
    from eic_builder.audit import HELD_OUT_SPLITS
    from eic_builder.dataset.tables import read_table

    audit_dir, src = Path(audit_dir), Path(src)
    name = audited_name(audit_dir, src)
    pairs = read_table(audit_dir / "pairs.parquet", "audit_pairs").to_pydict()
    drop: dict[str, tuple[str, str]] = {}
    rows = zip(pairs["method"], pairs["score"], pairs["manifest_a"], pairs["split_a"], pairs["image_id_a"],
               pairs["manifest_b"], pairs["split_b"], pairs["image_id_b"])
    for method, score, ma, sa, ia, mb, sb, ib in rows:
        for (m_self, s_self, i_self), (m_other, s_other, i_other) in (((ma, sa, ia), (mb, sb, ib)),
                                                                      ((mb, sb, ib), (ma, sa, ia))):
            if m_self == name and s_self not in HELD_OUT_SPLITS and s_other in HELD_OUT_SPLITS \
                    and i_self not in drop:
                drop[i_self] = ("copy_of_val_image", f"audit: {method} pair (score {score:.3f}) with {s_other} "
                                                     f"image {i_other} of {m_other}")
    if keep_one:
        groups = read_table(audit_dir / "groups.parquet", "audit_groups").to_pydict()
        kept: dict[tuple[int, str], str] = {}
        for group, manifest, split, image_id in zip(groups["group"], groups["manifest"], groups["split"],
                                                    groups["image_id"]):
            if manifest != name or image_id in drop:
                continue
            first = kept.setdefault((group, split), image_id)
            if first != image_id:
                drop[image_id] = ("duplicate_in_split", f"audit group {group}: the same picture as {first}, kept")
    return drop
