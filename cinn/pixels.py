"""Photos as tensors: the one reduction to the model's sizes, colourfulness, and the grey test."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Hasler & Suesstrunk (2003), Table 2: colourfulness below ~15 reads as "not colourful"; 5 only
# catches greyscale photos stored as RGB (JPEG chroma noise stays around 1-3).
DEFAULT_GRAYSCALE_THRESHOLD = 5.0


def reduce_rgb(rgb: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The one reduction of a photo to a model's sizes, in training and in colorizing alike: float sRGB
    (B, 3, H, W) in [0, 1] -> (B, 3, *size), antialiased bicubic (every source pixel counts), clamped
    back into [0, 1]. Lightness condition and ab target are each reduced from the photo by it."""
    return F.interpolate(rgb, size=size, mode="bicubic", antialias=True, align_corners=False).clamp_(0, 1)


def colourfulness(rgb: torch.Tensor) -> torch.Tensor:
    """Colourfulness metric M of Hasler & Suesstrunk (2003), on the paper's 0-255 scale.

    ``M = sqrt(std(rg)^2 + std(yb)^2) + 0.3 sqrt(mean(rg)^2 + mean(yb)^2)`` with ``rg = R - G`` and
    ``yb = (R + G) / 2 - B``. Roughly: 0 grey, 15 slightly, 33 moderately, 59 quite, 109 extremely
    colourful.

    Args:
        rgb: (..., 3, H, W) sRGB in [0, 1].

    Returns:
        (...) colourfulness of each image.
    """
    if rgb.dim() < 3 or rgb.shape[-3] != 3 or not rgb.is_floating_point():
        raise ValueError(
            f"colourfulness expects float RGB of shape (..., 3, H, W), got {rgb.dtype} {tuple(rgb.shape)}."
        )
    red, green, blue = (rgb.double() * 255.0).unbind(dim=-3)
    red_green = (red - green).flatten(-2)
    yellow_blue = (0.5 * (red + green) - blue).flatten(-2)
    spread = torch.hypot(red_green.std(dim=-1, unbiased=False), yellow_blue.std(dim=-1, unbiased=False))
    offset = torch.hypot(red_green.mean(dim=-1), yellow_blue.mean(dim=-1))
    return (spread + 0.3 * offset).to(rgb.dtype)


def is_grayscale_photo(rgb: torch.Tensor, threshold: float = DEFAULT_GRAYSCALE_THRESHOLD) -> bool:
    """Whether a photo carries too little colour to teach colorization (colourfulness < threshold).

    Args:
        rgb: (3, H, W) sRGB in [0, 1]; a small thumbnail is enough.
        threshold: colourfulness below which the photo counts as greyscale.
    """
    return bool(colourfulness(rgb) < threshold)
