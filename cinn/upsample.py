"""Edge-aware upsampling of ab guided by the full-resolution lightness.

The flow samples ab at its working resolution; bilinear upsampling alone would smear colour
across edges. The fast guided filter (He & Sun 2015, after He et al. 2013's guided filter) fits a
local linear model ``ab = a * L + b`` at low resolution and applies the upsampled ``a``, ``b`` to
the full-resolution L, so colour edges snap to the lightness edges of the original photo.

The fit (``guided_coefficients``) is small; applying it (``apply_guided_rows``) can be done a strip
of rows at a time, so that a large photo never needs its full-size ab in memory at once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def box_mean(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over a (2r+1)^2 window of (B, C, H, W), windows clipped at the border."""
    return F.avg_pool2d(x, 2 * radius + 1, stride=1, padding=radius, count_include_pad=False)


def guided_coefficients(
    ab: torch.Tensor, guide: torch.Tensor, radius: int = 1, eps: float = 1e-2
) -> tuple[torch.Tensor, torch.Tensor]:
    """The local linear model ``ab ~ slope * lightness + offset`` at the working resolution.

    Args:
        ab: (B, 2, h, w).
        guide: (1 or B, 1, h, w) normalised lightness, area-averaged to the working resolution.
        radius: window radius at the working resolution.
        eps: regularisation of the local linear fit, in normalised-lightness units squared;
            larger is smoother.

    Returns:
        slope, offset: (B, 2, h, w) each.
    """
    mean_guide = box_mean(guide, radius)
    mean_ab = box_mean(ab, radius)
    covariance = box_mean(guide * ab, radius) - mean_guide * mean_ab
    variance = box_mean(guide * guide, radius) - mean_guide * mean_guide
    slope = covariance / (variance + eps)
    offset = mean_ab - slope * mean_guide
    return box_mean(slope, radius), box_mean(offset, radius)


def bilinear_weights(out_size: int, in_size: int, device: torch.device | None = None) -> torch.Tensor:
    """(out_size, in_size) matrix of 1-D bilinear interpolation, as ``F.interpolate(mode="bilinear",
    align_corners=False)`` samples: output pixel centres mapped onto the input's, clamped at the borders."""
    scale = torch.tensor(in_size, dtype=torch.float32) / out_size  # in float32, as torch's kernel
    source = ((torch.arange(out_size, dtype=torch.float32) + 0.5) * scale - 0.5).clamp(min=0)
    below = source.floor().long().clamp(max=in_size - 1)
    above = (below + 1).clamp(max=in_size - 1)
    fraction = source - below
    weights = torch.zeros(out_size, in_size)
    rows = torch.arange(out_size)
    weights.index_put_((rows, below), 1 - fraction, accumulate=True)
    weights.index_put_((rows, above), fraction, accumulate=True)
    return weights.to(device)


def area_weights(out_size: int, in_size: int) -> torch.Tensor:
    """(out_size, in_size) matrix of ``F.interpolate(mode="area")`` (adaptive average pooling) along one
    axis: output ``i`` is the mean of inputs ``floor(i * in / out)`` to ``ceil((i + 1) * in / out) - 1``.

    Built from the sizes with tensor operations only, so a traced graph keeps them dynamic (the ONNX
    export, ``cinn.onnx``, which has no adaptive pooling for sizes that do not divide).
    """
    outputs = torch.arange(out_size)[:, None]
    inputs = torch.arange(in_size)[None, :]
    start = (outputs * in_size) // out_size
    end = ((outputs + 1) * in_size + out_size - 1) // out_size
    window = ((inputs >= start) & (inputs < end)).to(torch.float32)
    return window / window.sum(dim=1, keepdim=True)


def apply_guided_rows(
    slope: torch.Tensor, offset: torch.Tensor, lightness_rows: torch.Tensor, row_weights: torch.Tensor,
    column_weights: torch.Tensor,
) -> torch.Tensor:  # fmt: skip
    """Full-resolution ab for a strip of rows: ``upsample(slope) * lightness + upsample(offset)``.

    Args:
        slope, offset: (..., 2, h, w) from ``guided_coefficients``.
        lightness_rows: (S, W) normalised full-resolution lightness of the strip.
        row_weights: (S, h), the strip's rows of ``bilinear_weights(H, h)``.
        column_weights: (w, W), ``bilinear_weights(W, w)`` transposed.

    Returns:
        (..., 2, S, W).
    """
    return row_weights @ slope @ column_weights * lightness_rows + row_weights @ offset @ column_weights


def guided_upsample(ab: torch.Tensor, lightness: torch.Tensor, radius: int = 1, eps: float = 1e-2) -> torch.Tensor:
    """Upsamples ab to the size of ``lightness``, following its edges.

    Args:
        ab: (B, 2, h, w) at the working resolution.
        lightness: (B, 1, H, W) normalised lightness at full resolution (the guide).
        radius: window radius at the working resolution.
        eps: regularisation of the local linear fit (see ``guided_coefficients``).

    Returns:
        (B, 2, H, W).
    """
    size = tuple(lightness.shape[2:])
    if tuple(ab.shape[2:]) == size:
        return ab
    guide = F.interpolate(lightness, size=ab.shape[2:], mode="area")
    slope, offset = guided_coefficients(ab, guide, radius, eps)
    upsample = dict(size=size, mode="bilinear", align_corners=False)
    return F.interpolate(slope, **upsample) * lightness + F.interpolate(offset, **upsample)
