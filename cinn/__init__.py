"""Diverse image colorization with conditional invertible neural networks."""

from pathlib import Path

from cinn.glow import ConditionalGlow, GlowConfig
from cinn.loss import MAPLoss, bits_per_dim, map_loss, negative_log_likelihood, sample_latents

# The release trained by this project on its photo kit (see its README.md for how).
DEFAULT_MODEL = Path(__file__).resolve().parent / "pretrained" / "default"
# Chosen by measurement on the kit's validation photos (see cinn/pretrained/default/README.md).
DEFAULT_TEMPERATURE = 0.7

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_TEMPERATURE",
    "ConditionalGlow",
    "GlowConfig",
    "MAPLoss",
    "bits_per_dim",
    "map_loss",
    "negative_log_likelihood",
    "sample_latents",
]
