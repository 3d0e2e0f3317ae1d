"""Diverse image colorization with conditional invertible neural networks."""

from pathlib import Path

from cinn.glow import ConditionalGlow, GlowConfig
from cinn.loss import MAPLoss, bits_per_dim, map_loss, negative_log_likelihood, sample_latents

# The release trained by this project on its photo kit (see its README.md for how).
DEFAULT_MODEL = Path(__file__).resolve().parent / "pretrained" / "default"

__all__ = [
    "DEFAULT_MODEL",
    "ConditionalGlow",
    "GlowConfig",
    "MAPLoss",
    "bits_per_dim",
    "map_loss",
    "negative_log_likelihood",
    "sample_latents",
]
