"""Reading torch files (state dicts, checkpoints) with errors a user can act on."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

from eic_builder.errors import ModelError, first_line


def load_torch_file(path: str | os.PathLike[str], what: str, weights_only: bool = True) -> Any:
    """``torch.load`` on the CPU; a missing or unreadable file raises :class:`ModelError` naming ``what``.

    ``weights_only`` (the default) refuses pickled code: right for state dicts from elsewhere.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{what} {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except pickle.UnpicklingError as exc:
        # torch's message is many lines of advice to load the file unsafely: not ours to give
        text = str(exc)
        if weights_only and "global" in text.lower():  # "Unsupported global", "unsupported GLOBAL os.system"
            raise ModelError(f"refused {what} {path}: it holds objects other than tensors and plain data "
                             "(pickled code or classes), which are never loaded") from exc
        reason = next((line.strip() for line in text.splitlines() if "WeightsUnpickler error" in line),
                      first_line(exc))
        raise ModelError(f"cannot read {what} {path}: {reason}") from exc
    except Exception as exc:  # torch raises many types for a bad file
        raise ModelError(f"cannot read {what} {path}: {first_line(exc)}") from exc


def state_dict_of(obj: Any) -> dict:
    """The state dict in a loaded file: the object itself, or its ``state_dict`` entry."""
    if isinstance(obj, dict) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ModelError(f"expected a state dict, found a {type(obj).__name__}")
    return obj


def load_matching(module: Any, state: dict, what: str, strict: bool = True) -> None:
    """``module.load_state_dict(state)`` after checking names and shapes: a state dict of another
    architecture or width raises :class:`ModelError` naming the first differences (``strict=False``
    loads the module's tensors found in ``state`` and ignores the others, which must still fit)."""
    own = module.state_dict()
    differences = _differences(own, state, strict)
    if differences:
        raise ModelError(f"{what} does not fit this model (another architecture or width?): {differences}")
    module.load_state_dict({k: v for k, v in state.items() if k in own}, strict=strict)


def _differences(own: dict, state: dict, strict: bool) -> str:
    """The first names ``state`` lacks or adds (``strict``) and shapes it gets wrong, as text ("" if none)."""
    missing = [k for k in own if k not in state] if strict else []
    unexpected = [k for k in state if k not in own] if strict else []
    shapes = [f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})" for k, v in own.items()
              if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(v.shape)]
    parts = [f"missing {', '.join(missing[:3])}" if missing else "",
             f"unexpected {', '.join(unexpected[:3])}" if unexpected else "",
             f"other shapes: {'; '.join(shapes[:3])}" if shapes else ""]
    return "; ".join(p for p in parts if p)
