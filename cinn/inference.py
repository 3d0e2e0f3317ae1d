"""From a PIL photo to full-resolution colorizations: working size, sampling, recombination."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from PIL import Image

from cinn.color import normalize_ab, normalize_lightness, normalized_lab_to_rgb, rgb_to_lab
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
    tensor = TF.pil_to_tensor(rgb).float().div_(255.0).unsqueeze(0)
    thumbnail = F.interpolate(tensor, size=(64, 64), mode="area")[0]
    return tensor, alpha, not is_grayscale_photo(thumbnail)


def to_pil(rgb: torch.Tensor, alpha: Image.Image | None) -> Image.Image:
    """(3, H, W) in [0, 1] (+ alpha) -> PIL RGB or RGBA."""
    image = TF.to_pil_image(rgb.clamp(0, 1).mul(255).round().to(torch.uint8).cpu())
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


def recombine(ab: torch.Tensor, full_lightness: torch.Tensor, alpha: Image.Image | None) -> list[Image.Image]:
    """Samples ab (N, 2, h, w) + the photo's own lightness (1, 1, H, W) -> N full-size PIL images."""
    images = []
    for sample in ab:  # one at a time: a full-size Lab stack of many samples would not fit in memory
        full_ab = guided_upsample(sample[None], full_lightness)
        images.append(to_pil(normalized_lab_to_rgb(full_lightness, full_ab)[0], alpha))
    return images


__all__ = ["Colorization", "colourfulness", "interpolate_latents", "prepare_photo", "recombine", "working_size"]
