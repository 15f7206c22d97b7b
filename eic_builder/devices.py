"""Devices and process groups, shared by the GPU stages (features, RPN training and inference)."""

from __future__ import annotations

import atexit
import os

import torch

from eic_builder.choices import DEVICES
from eic_builder.errors import OptionError, check_choice


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when available, else the CPU; ``cuda`` without a GPU is an error."""
    check_choice("--device", name, DEVICES)
    if name == "cuda" and not torch.cuda.is_available():
        raise OptionError("`device` cuda: no CUDA device is available here; use `device` cpu or auto")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def init_distributed(distributed: bool) -> tuple[int, int]:
    """(rank, world size); with ``distributed``, joins the torchrun process group (NCCL on GPUs, gloo on CPUs)."""
    if not distributed:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        if "RANK" not in os.environ:
            raise OptionError("`distributed` needs torchrun (RANK/WORLD_SIZE are not set)")
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        # leave the group before the interpreter tears down: a gloo group still alive at exit can abort the
        # process ("terminate called without an active exception") after the work is done
        atexit.register(_leave_process_group)
    return dist.get_rank(), dist.get_world_size()


def _leave_process_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def rank_device(device: torch.device, distributed: bool) -> torch.device:
    """Under torchrun each process takes the GPU of its LOCAL_RANK."""
    if device.type == "cuda" and distributed:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    return device


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA), so that a timer measures it; a no-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
