"""CIE Lab conversion and the one place where L and ab are normalised.

Every module that touches colour goes through here: RGB photo -> ``rgb_to_lab`` ->
``normalize_lightness`` / ``normalize_ab`` -> networks -> ``denormalize_*`` -> ``lab_to_rgb``.

Normalised units: ``lightness = L / 50 - 1`` lies in [-1, 1]; ``ab = (a, b) / 110`` lies roughly in
[-1, 1] for the sRGB gamut. Densities and bits/dim reported by the flow are of normalised ab; to
get them per Lab unit add ``log2(AB_SCALE)`` bits/dim.
"""

from __future__ import annotations

import kornia.color
import torch

L_SCALE = 50.0
AB_SCALE = 110.0


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1] to CIE Lab (D65), as ``skimage.color.rgb2lab``.

    Args:
        rgb: (B, 3, H, W) or (3, H, W), values in [0, 1].

    Returns:
        Lab of the same shape; L in [0, 100], a and b roughly in [-110, 110].
    """
    return kornia.color.rgb_to_lab(rgb.clamp(0.0, 1.0))


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """CIE Lab (D65) to sRGB in [0, 1]; colours outside the sRGB gamut are clipped.

    Args:
        lab: (B, 3, H, W) or (3, H, W).
    """
    return kornia.color.lab_to_rgb(lab, clip=True)


def normalize_lightness(lightness: torch.Tensor) -> torch.Tensor:
    """L in [0, 100] -> [-1, 1]."""
    return lightness / L_SCALE - 1.0


def denormalize_lightness(lightness: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> L in [0, 100]."""
    return (lightness + 1.0) * L_SCALE


def normalize_ab(ab: torch.Tensor) -> torch.Tensor:
    """ab in Lab units -> network units (divided by ``AB_SCALE``)."""
    return ab / AB_SCALE


def denormalize_ab(ab: torch.Tensor) -> torch.Tensor:
    """Network units -> ab in Lab units."""
    return ab * AB_SCALE


def rgb_to_normalized_lab(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """sRGB in [0, 1], (B, 3, H, W) -> (normalised lightness (B, 1, H, W), normalised ab (B, 2, H, W))."""
    lab = rgb_to_lab(rgb)
    return normalize_lightness(lab[:, :1]), normalize_ab(lab[:, 1:])


def normalized_lab_to_rgb(lightness: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """Normalised lightness (B, 1, H, W) and ab (B, 2, H, W) at the same size -> sRGB in [0, 1]."""
    lab = torch.cat([denormalize_lightness(lightness), denormalize_ab(ab)], dim=1)
    return lab_to_rgb(lab)
