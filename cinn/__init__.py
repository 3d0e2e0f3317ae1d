"""Diverse image colorization with conditional invertible neural networks."""

from cinn.glow import ConditionalGlow, GlowConfig
from cinn.loss import MAPLoss, bits_per_dim, map_loss, negative_log_likelihood, sample_latents

__all__ = [
    "ConditionalGlow",
    "GlowConfig",
    "MAPLoss",
    "bits_per_dim",
    "map_loss",
    "negative_log_likelihood",
    "sample_latents",
]
