"""Choosing the device: the one rule every program and the API share."""

from __future__ import annotations

import torch

from cinn.errors import DeviceError


def resolve_device(name: str | torch.device) -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cuda' without a GPU is a clear error."""
    name = str(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError("device 'cuda' was asked for but no CUDA GPU is available; use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise DeviceError(f"unknown device '{name}': use cpu, cuda, cuda:N or auto") from None
