"""Read a training checkpoint, or say in one line why it cannot be read."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch

from snapmatch.sdk.errors import CheckpointError

REQUIRED = ("model", "model_config", "config", "epoch", "data_fingerprint")


def load_checkpoint(path: str | os.PathLike) -> dict:
    """The state `snapmatch train` saved in `path` (model, config, split, optimiser, ...)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        # Our checkpoints hold only tensors and plain containers, so the safe loader reads them, and a
        # foreign pickle cannot run code here.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, EOFError, RuntimeError, zipfile.BadZipFile, ValueError, AttributeError,
            ModuleNotFoundError, OSError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path} is not a readable snapmatch checkpoint (corrupt, truncated or foreign?): {reason[:200]}") from None
    if not isinstance(state, dict) or any(key not in state for key in REQUIRED):
        raise CheckpointError(f"{path} is not a snapmatch training checkpoint (it lacks "
                              f"{', '.join(k for k in REQUIRED if not isinstance(state, dict) or k not in state)})")
    return state
