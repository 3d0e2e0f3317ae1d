"""CIE Lab conversion and the one place where L and ab are normalised.

Every module that touches colour goes through here: RGB photo -> ``rgb_to_lab`` ->
``normalize_lightness`` / ``normalize_ab`` -> networks -> ``denormalize_*`` -> ``lab_to_rgb``.

Normalised units: ``lightness = L / 50 - 1`` lies in [-1, 1]; ``ab = (a, b) / 110`` lies roughly in
[-1, 1] for the sRGB gamut. Densities and bits/dim reported by the flow are of normalised ab; to
get them per Lab unit add ``log2(AB_SCALE)`` bits/dim.

The conversions are sRGB (IEC 61966-2-1) and CIE Lab under D65, with the constants and the order of
operations of kornia 0.9's ``rgb_to_lab`` / ``lab_to_rgb``, which the project used before: the same
photo gives the same floats. They are written out here because importing kornia took about a second
of every program's start-up.
"""

from __future__ import annotations

import torch

L_SCALE = 50.0
AB_SCALE = 110.0

WHITE_D65 = (0.95047, 1.0, 1.08883)  # XYZ of the reference white
RGB_TO_XYZ = ((0.412453, 0.357580, 0.180423), (0.212671, 0.715160, 0.072169), (0.019334, 0.119193, 0.950227))
XYZ_TO_RGB = (
    (3.2404813432005266, -1.5371515162713185, -0.4985363261688878),
    (-0.9692549499965682, 1.8759900014898907, 0.0415559265582928),
    (0.0556466391351772, -0.2040413383665112, 1.0573110696453443),
)
LAB_KNEE = 0.2068966  # f(t) above which the inverse of Lab's f is a cube (6/29), linear below
LAB_SLOPE = 7.787  # slope of that linear part


def channel_transform(matrix: tuple, image: torch.Tensor) -> torch.Tensor:
    """A 3x3 matrix applied to the channels of (*, 3, H, W)."""
    return torch.einsum("oi, ...ihw -> ...ohw", torch.tensor(matrix, dtype=image.dtype, device=image.device), image)


def srgb_to_linear(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1] -> linear RGB (the sRGB transfer function undone)."""
    return torch.where(rgb > 0.04045, torch.pow((rgb + 0.055).clamp(min=0.0) / 1.055, 2.4), rgb / 12.92)


def linear_to_srgb(linear: torch.Tensor) -> torch.Tensor:
    """Linear RGB -> sRGB, not clipped; monotone, with 0 -> 0 and 1 -> 1."""
    threshold = 0.0031308
    return torch.where(
        linear > threshold, 1.055 * torch.pow(linear.clamp(min=threshold), 1 / 2.4) - 0.055, 12.92 * linear
    )


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1] to CIE Lab (D65), as ``skimage.color.rgb2lab``.

    Args:
        rgb: (B, 3, H, W) or (3, H, W), values in [0, 1].

    Returns:
        Lab of the same shape; L in [0, 100], a and b roughly in [-110, 110].
    """
    xyz = channel_transform(RGB_TO_XYZ, srgb_to_linear(rgb.clamp(0.0, 1.0)))
    xyz = xyz / torch.tensor(WHITE_D65, dtype=xyz.dtype, device=xyz.device)[:, None, None]
    threshold = 0.008856
    f = torch.where(xyz > threshold, torch.pow(xyz.clamp(min=threshold), 1 / 3.0), 7.787 * xyz + 4.0 / 29.0)
    fx, fy, fz = f[..., 0, :, :], f[..., 1, :, :], f[..., 2, :, :]
    return torch.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], dim=-3)


def lab_to_linear_rgb(lab: torch.Tensor) -> torch.Tensor:
    """CIE Lab (D65), (*, 3, H, W) -> linear RGB, not clipped (outside [0, 1] = outside the sRGB gamut)."""
    lightness, a, b = lab[..., 0, :, :], lab[..., 1, :, :], lab[..., 2, :, :]
    fy = (lightness + 16.0) / 116.0
    fx = (a / 500.0) + fy
    fz = (fy - (b / 200.0)).clamp(min=0.0)  # Z < 0 cannot be
    f = torch.stack([fx, fy, fz], dim=-3)
    xyz = torch.where(f > LAB_KNEE, torch.pow(f, 3.0), (f - 4.0 / 29.0) / LAB_SLOPE)
    xyz = xyz * torch.tensor(WHITE_D65, dtype=xyz.dtype, device=xyz.device)[:, None, None]
    return channel_transform(XYZ_TO_RGB, xyz)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """CIE Lab (D65) to sRGB in [0, 1]; colours outside the sRGB gamut are clipped.

    Args:
        lab: (B, 3, H, W) or (3, H, W).
    """
    return linear_to_srgb(lab_to_linear_rgb(lab)).clamp(0.0, 1.0)


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
