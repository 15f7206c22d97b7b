from __future__ import annotations

from pathlib import Path

import torch

from baseline.data import DetectionDataset, load_records
from eic_builder.scan.scanner import scan


def test_a_flipped_item_is_the_mirror_image_with_mirrored_boxes(synthetic_tree: Path, tmp_path: Path) -> None:
    scan(synthetic_tree, tmp_path / "m", split="train")
    records, root = load_records(tmp_path / "m")
    dataset = DetectionDataset(records, root, max_size=400)
    image, boxes, index = dataset[(3, 128)]
    mirrored, mirrored_boxes, _ = dataset[(3, 128, True)]
    assert index == 3 and torch.equal(dataset[(3, 128, False)][0], image)
    assert torch.equal(mirrored, image.flip(-1))
    width = image.shape[-1]
    assert torch.allclose(mirrored_boxes[:, [0, 2]], width - boxes[:, [2, 0]])
    assert torch.equal(mirrored_boxes[:, [1, 3]], boxes[:, [1, 3]])
    # a box's pixels move with it: the mean of the image under the box is unchanged by the flip
    x1, y1, x2, y2 = (int(v) for v in boxes[0].round())
    fx1, _, fx2, _ = (int(v) for v in mirrored_boxes[0].round())
    assert torch.allclose(image[:, y1:y2, x1:x2].mean(), mirrored[:, y1:y2, fx1:fx2].mean(), atol=1e-5)
