"""How labels are named in an export: ``--labels wnid`` (as the manifest has them) or ``name``.

``name`` writes a wnid's WordNet 3.0 lemma (``n01440764`` -> ``tench``), from the committed class lists
(``data_manifests/``: every EIC and ILSVRC class) and, for other wnids, from WordNet itself. Lemmas
are not unique (``crane`` is a bird, n02012849, and a machine, n03126707, both ILSVRC classes): a
lemma shared by two labels gets its wnid in brackets (``crane (n02012849)``), so that no two classes
merge. Labels that are not wnids (COCO, VOC category names) are kept as they are.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable

from eic_builder.choices import LABEL_STYLES
from eic_builder.errors import check_choice
from eic_builder.scan.annotations import is_wnid


def _committed_lemmas() -> dict[str, str]:
    from eic_builder.dataset.tables import read_table
    from eic_builder.reference_lists import data_manifests_dir

    table = read_table(data_manifests_dir() / "eic_classes.parquet", "eic_classes", columns=["wnid", "lemma"])
    return dict(zip(table["wnid"].to_pylist(), table["lemma"].to_pylist()))


def label_names(labels: Iterable[str], style: str = "wnid",
                wordnet_dir: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """Map every label to the name it is exported under (see the module's doc); one-to-one."""
    check_choice("--labels", style, LABEL_STYLES)
    labels = sorted(set(labels))
    if style == "wnid":
        return {label: label for label in labels}
    lemmas = _committed_lemmas()
    missing = [label for label in labels if is_wnid(label) and label not in lemmas]
    if missing:
        from eic_builder.wordnet import load_wordnet_index

        index = load_wordnet_index(wordnet_dir)
        for wnid in missing:
            lemmas[wnid] = index.lemmas[index.position(wnid)]  # raises WordNetError naming an unknown wnid
    names = {label: lemmas[label] if is_wnid(label) else label for label in labels}
    shared = Counter(names.values())
    return {label: f"{name} ({label})" if shared[name] > 1 and is_wnid(label) else name
            for label, name in names.items()}
