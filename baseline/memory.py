"""How much memory a training step needs, estimated before training starts (CPU runs).

On a CPU machine the kernel kills a process that outgrows its memory without a message; a GPU at
least raises "out of memory". So a CPU run estimates its peak first and refuses, with advice, a
configuration that cannot fit. The estimate measures the model itself: one forward pass on a small
input with hooks on every leaf module gives the activation bytes per input pixel (every module's
output, which bounds what the backward pass keeps and what it allocates at once), scaled to the
largest padded batch the run will see, beside four copies of the weights (weights, gradients, two
optimizer moments). Measured on the 2-core machine (peak RSS above start): width 1.0, 2 images at
scale 400: 1.35 GiB, estimated 1.77; width 0.5: 0.71 GiB, estimated 0.81. The default configuration
(width 1.0, 8 images up to 800 px) is estimated at 23 GiB, and was seen killed at 20 GiB.
"""

from __future__ import annotations

import math

import torch

from baseline.config import TrainConfig
from baseline.model import HourglassRPN

# Images are padded to multiples of 32; ImageNet photos are mostly 4:3 (500x375).
ASPECT = 4 / 3
SAFETY = 0.85  # of the memory available, what a run may plan to use


def activation_bytes_per_pixel(model: HourglassRPN, probe: int = 64) -> float:
    """Bytes of float32 outputs of every leaf module per input pixel, for one image."""
    total = 0

    def count(_module, _inputs, output) -> None:
        nonlocal total
        outputs = output if isinstance(output, (tuple, list)) else (output,)
        total += sum(t.numel() for t in outputs if isinstance(t, torch.Tensor))

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(count) for m in leaves]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, probe, probe))
    finally:
        for h in handles:
            h.remove()
        model.train()
    return total * 4 / (probe * probe)


def training_bytes(cfg: TrainConfig, model: HourglassRPN, world: int = 1) -> int:
    """Estimated peak bytes of one rank's training step."""
    short = max(cfg.train_scales)
    long = min(cfg.max_size, short * ASPECT)
    pixels = (math.ceil(short / 32) * 32) * (math.ceil(long / 32) * 32)
    images = max(1, cfg.images_per_batch // world)
    weights = sum(p.numel() for p in model.parameters()) * 4
    return int(activation_bytes_per_pixel(model) * pixels * images + 4 * weights)


def available_bytes() -> int | None:
    """MemAvailable of this machine (Linux), or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None
