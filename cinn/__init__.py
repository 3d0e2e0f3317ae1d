"""Diverse image colorization with conditional invertible neural networks.

``from cinn import Colorizer, DEFAULT_MODEL`` is the entry point::

    model = Colorizer.from_pretrained(DEFAULT_MODEL)
    images = model.colorize(Image.open("photo.jpg"), num_samples=8)
"""

from __future__ import annotations

import importlib
import importlib.metadata
from pathlib import Path

# The release trained by this project on its photo kit (see its README.md for how).
DEFAULT_MODEL = Path(__file__).resolve().parent / "pretrained" / "default"

try:
    __version__ = importlib.metadata.version("cinn-colorization")
except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

# Imported on first use, so that ``import cinn`` (and every program's start-up) stays light.
_LAZY = {
    "Colorizer": "cinn.colorizer",
    "load_regression_baseline": "cinn.colorizer",
    "ConditionalGlow": "cinn.glow",
    "GlowConfig": "cinn.glow",
    "MAPLoss": "cinn.loss",
    "bits_per_dim": "cinn.loss",
    "map_loss": "cinn.loss",
    "negative_log_likelihood": "cinn.loss",
    "sample_latents": "cinn.loss",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cinn' has no attribute {name!r}")


__all__ = ["DEFAULT_MODEL", "__version__", *_LAZY]
