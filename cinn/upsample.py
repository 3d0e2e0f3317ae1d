"""Edge-aware upsampling of ab guided by the full-resolution lightness.

The flow samples ab at its working resolution; bilinear upsampling alone would smear colour
across edges. The fast guided filter (He & Sun 2015, after He et al. 2013's guided filter) fits a
local linear model ``ab = a * L + b`` at low resolution and applies the upsampled ``a``, ``b`` to
the full-resolution L, so colour edges snap to the lightness edges of the original photo.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def box_mean(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over a (2r+1)^2 window of (B, C, H, W), windows clipped at the border."""
    return F.avg_pool2d(x, 2 * radius + 1, stride=1, padding=radius, count_include_pad=False)


def guided_upsample(ab: torch.Tensor, lightness: torch.Tensor, radius: int = 1, eps: float = 1e-2) -> torch.Tensor:
    """Upsamples ab to the size of ``lightness``, following its edges.

    Args:
        ab: (B, 2, h, w) at the working resolution.
        lightness: (B, 1, H, W) normalised lightness at full resolution (the guide).
        radius: window radius at the working resolution.
        eps: regularisation of the local linear fit, in normalised-lightness units squared;
            larger is smoother.

    Returns:
        (B, 2, H, W).
    """
    size = tuple(lightness.shape[2:])
    if tuple(ab.shape[2:]) == size:
        return ab
    guide = F.interpolate(lightness, size=ab.shape[2:], mode="area")
    mean_guide = box_mean(guide, radius)
    mean_ab = box_mean(ab, radius)
    covariance = box_mean(guide * ab, radius) - mean_guide * mean_ab
    variance = box_mean(guide * guide, radius) - mean_guide * mean_guide
    slope = covariance / (variance + eps)
    offset = mean_ab - slope * mean_guide
    slope, offset = box_mean(slope, radius), box_mean(offset, radius)
    upsample = dict(size=size, mode="bilinear", align_corners=False)
    return F.interpolate(slope, **upsample) * lightness + F.interpolate(offset, **upsample)
