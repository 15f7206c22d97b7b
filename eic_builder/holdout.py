"""``eic-build hold-out``: a deterministic train / held-out division of a manifest (not to be confused
with a manifest's ``split`` column, the folder split an image came from).

An image goes to the held-out part when the first 8 bytes of
``sha1(seed:image_id)``, read as a fraction of 2^64, fall below ``fraction``:
the same image lands on the same side whatever else the manifest holds, and
the division needs no stored state.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from eic_builder.dataset.manifest import Manifest
from eic_builder.errors import OptionError
from eic_builder.output_folder import check_out
from eic_builder.seeded import fraction_of


def held_out(image_id: str, fraction: float, seed: int = 0) -> bool:
    """Whether ``image_id`` belongs to the held-out part."""
    return fraction_of(image_id, seed) < fraction


@dataclass(frozen=True)
class HoldOutOptions:
    """The knobs of ``hold-out``: the ``fraction`` of images held out (0 < fraction < 1), by a draw of
    ``seed`` on each image id (:func:`held_out`)."""

    fraction: float = 0.2
    seed: int = 0

    def validate(self) -> None:
        if not 0 < self.fraction < 1:
            raise OptionError(f"`fraction` {self.fraction} must be between 0 and 1 (exclusive)")


def hold_out_manifest(src: str | os.PathLike[str], train_out: str | os.PathLike[str],
                      test_out: str | os.PathLike[str], options: HoldOutOptions | None = None,
                      **fields: float) -> tuple[int, int]:
    """Write the two parts of ``src``; returns (train images, held-out images). ``fields`` make the options
    where ``options`` is not given."""
    options = options or HoldOutOptions(**fields)
    options.validate()
    fraction, seed = options.fraction, options.seed
    check_out(train_out, {"`src`": src}, name="`train_out`")
    check_out(test_out, {"`src`": src, "`train_out`": train_out}, name="`test_out`")
    manifest = Manifest.open(src)
    mask = pa.array([held_out(i, fraction, seed) for i in manifest.images["image_id"].to_pylist()], pa.bool_())
    test_ids = manifest.images["image_id"].filter(mask)
    # a reject goes with its image id, as its image would have; one without an id stays with the train part
    rejects_held_out = pa.array([i is not None and held_out(i, fraction, seed)
                                 for i in manifest.rejects["image_id"].to_pylist()], pa.bool_())
    for out, keep_test in ((train_out, False), (test_out, True)):
        images = manifest.images.filter(mask if keep_test else pc.invert(mask))
        in_test = pc.is_in(manifest.boxes["image_id"], test_ids)
        boxes = manifest.boxes.filter(in_test if keep_test else pc.invert(in_test))
        rejects = manifest.rejects.filter(rejects_held_out if keep_test else pc.invert(rejects_held_out))
        manifest.derive(images, boxes, rejects, test_fraction=fraction, seed=seed,
                        part="test" if keep_test else "train").write(out)
    n_test = int(pc.sum(mask).as_py() or 0)
    return len(manifest.images) - n_test, n_test
