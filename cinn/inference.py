"""From a PIL photo to full-resolution colorizations: working size, sampling, recombination."""

from __future__ import annotations

import math
from dataclasses import dataclass

import kornia.color
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from cinn.color import (
    denormalize_ab,
    denormalize_lightness,
    lab_to_rgb,
    normalize_ab,
    normalize_lightness,
    rgb_to_lab,
)
from cinn.images import colourfulness, is_grayscale_photo, rgb_and_alpha
from cinn.upsample import guided_upsample


@dataclass
class Colorization:
    """The result of colorizing one photo.

    Attributes:
        images: the colorizations at the photo's full resolution (alpha kept if it had one).
        bits_per_dim: exact NLL of each sample's ab (working resolution, normalised units).
        original_bits_per_dim: NLL of the photo's own colours, when it had colour; else None.
        samples_ab: (N, 2, h, w) normalised ab of the samples at the working resolution.
    """

    images: list[Image.Image]
    bits_per_dim: list[float]
    original_bits_per_dim: float | None
    samples_ab: torch.Tensor


def working_size(height: int, width: int, short_side: int, multiple: int) -> tuple[int, int]:
    """(h, w) near the photo's aspect ratio with the short side ~``short_side``, multiples of ``multiple``."""
    scale = short_side / min(height, width)
    return tuple(max(multiple, multiple * round(side * scale / multiple)) for side in (height, width))


def pil_to_tensor(image: Image.Image) -> tuple[torch.Tensor, Image.Image | None, bool]:
    """PIL image of any mode -> ((1, 3, H, W) sRGB in [0, 1], alpha or None, whether it has colour)."""
    rgb, alpha = rgb_and_alpha(image)
    tensor = torch.from_numpy(np.array(rgb)).permute(2, 0, 1).float().div_(255.0).unsqueeze(0)
    thumbnail = F.interpolate(tensor, size=(64, 64), mode="area")[0]
    return tensor, alpha, not is_grayscale_photo(thumbnail)


def to_pil(rgb: torch.Tensor, alpha: Image.Image | None) -> Image.Image:
    """(3, H, W) in [0, 1] (+ alpha) -> PIL RGB or RGBA."""
    image = Image.fromarray(rgb.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy())
    if alpha is not None:
        image.putalpha(alpha)
    return image


def interpolate_latents(z_start: list[torch.Tensor], z_end: list[torch.Tensor], num_frames: int):
    """Spherical path ``z(t) = cos(t) z_start + sin(t) z_end``, t in [0, pi/2]: every frame keeps
    the prior's distribution when the ends are independent draws. Returns per-level (F, ...) latents."""
    angles = torch.linspace(0, math.pi / 2, num_frames)
    frames = []
    for start, end in zip(z_start, z_end, strict=True):
        shape = (num_frames,) + (1,) * (start.dim() - 1)
        cos, sin = angles.cos().view(shape).to(start), angles.sin().view(shape).to(start)
        frames.append(cos * start + sin * end)
    return frames


def prepare_photo(image: Image.Image, short_side: int, multiple: int, device: torch.device):
    """Returns the full-resolution lightness, the working-size lightness and ab, alpha, has-colour."""
    rgb, alpha, has_colour = pil_to_tensor(image)
    rgb = rgb.to(device)
    full_lightness = normalize_lightness(rgb_to_lab(rgb)[:, :1])
    size = working_size(rgb.shape[2], rgb.shape[3], short_side, multiple)
    small = F.interpolate(rgb, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    small_lab = rgb_to_lab(small)
    return full_lightness, normalize_lightness(small_lab[:, :1]), normalize_ab(small_lab[:, 1:]), alpha, has_colour


def in_srgb_gamut(lab: torch.Tensor, tolerance: float = 1e-4) -> torch.Tensor:
    """Lab (3, ...) -> bool (...): whether each colour is inside the sRGB cube."""
    rgb = kornia.color.lab_to_rgb(lab, clip=False)
    return ((rgb >= -tolerance) & (rgb <= 1 + tolerance)).all(dim=0)


def fit_to_gamut(lab: torch.Tensor, steps: int = 8) -> torch.Tensor:
    """Lab (B, 3, H, W) -> the same, each out-of-gamut colour's (a, b) scaled towards grey (bisection)
    until it fits sRGB. Clipping RGB instead would change the lightness, which must stay the photo's."""
    pixels = lab.transpose(0, 1).reshape(3, -1, 1).clone()
    outside = ~in_srgb_gamut(pixels)[:, 0]
    colours = pixels[:, outside]
    low, high = colours.new_zeros(1, colours.shape[1], 1), colours.new_ones(1, colours.shape[1], 1)
    for _ in range(steps if colours.numel() else 0):  # grey (scale 0) is always inside
        middle = (low + high) / 2
        inside = in_srgb_gamut(torch.cat([colours[:1], colours[1:] * middle]))[None]
        low, high = torch.where(inside, middle, low), torch.where(inside, high, middle)
    pixels[1:, outside] = colours[1:] * low
    return pixels.reshape(3, lab.shape[0], *lab.shape[2:]).transpose(0, 1)


def recombine(ab: torch.Tensor, full_lightness: torch.Tensor, alpha: Image.Image | None) -> list[Image.Image]:
    """Samples ab (N, 2, h, w) + the photo's own lightness (1, 1, H, W) -> N full-size PIL images."""
    images = []
    for sample in ab:  # one at a time: a full-size Lab stack of many samples would not fit in memory
        full_ab = guided_upsample(sample[None], full_lightness)
        lab = torch.cat([denormalize_lightness(full_lightness), denormalize_ab(full_ab)], dim=1)
        images.append(to_pil(lab_to_rgb(fit_to_gamut(lab))[0], alpha))
    return images


__all__ = ["Colorization", "colourfulness", "interpolate_latents", "prepare_photo", "recombine", "working_size"]
