"""From a PIL photo to full-resolution colorizations: working size, sampling, recombination."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from cinn.color import (
    denormalize_ab,
    denormalize_lightness,
    lab_to_linear_rgb,
    linear_to_srgb,
    normalize_ab,
    normalize_lightness,
    rgb_to_lab,
)
from cinn.gamut import gamut_scale
from cinn.images import rgb_and_alpha
from cinn.limits import working_size
from cinn.pixels import is_grayscale_photo, reduce_rgb
from cinn.upsample import apply_guided_rows, bilinear_weights, guided_coefficients

STRIP_PIXELS = 1 << 18  # pixels per strip of recombination: a few MB of float32 per intermediate


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


def prepare_photo(
    image: Image.Image, short_side: int, multiple: int, device: torch.device, ab_factor: int | None = None
):
    """Returns the full-resolution lightness, the working-size lightness, alpha, whether the photo has
    colour, and (with ``ab_factor``, for a photo with colour) its own ab at the working size divided by
    ``ab_factor``, the flow's size: each reduced from the photo as training reduces its photos."""
    rgb, alpha, has_colour = pil_to_tensor(image)
    rgb = rgb.to(device)
    size = working_size(rgb.shape[2], rgb.shape[3], short_side, multiple)
    lightness = normalize_lightness(rgb_to_lab(reduce_rgb(rgb, size))[:, :1])
    ab = None
    if ab_factor is not None and has_colour:
        ab = normalize_ab(rgb_to_lab(reduce_rgb(rgb, (size[0] // ab_factor, size[1] // ab_factor)))[:, 1:])
    # Lab of the whole photo a strip at a time: its intermediates are several times the photo's size.
    strips = rgb.split(strip_rows(rgb.shape[3]), dim=2)
    full_lightness = normalize_lightness(torch.cat([rgb_to_lab(strip)[:, :1] for strip in strips], dim=2))
    return full_lightness, lightness, alpha, has_colour, ab


def strip_rows(width: int) -> int:
    """Rows per strip of a photo ``width`` pixels wide: about STRIP_PIXELS pixels."""
    return max(1, STRIP_PIXELS // width)


def fit_to_gamut(lab: torch.Tensor) -> torch.Tensor:
    """Lab (B, 3, H, W) -> the same, each out-of-gamut colour's (a, b) scaled towards grey until it
    fits sRGB (``cinn.gamut``). Clipping RGB instead would change the lightness, which must stay the photo's."""
    pixels = lab.transpose(0, 1).reshape(3, -1)
    outside = ~in_srgb_gamut(linear_to_srgb(lab_to_linear_rgb(pixels[:, :, None]))[:, :, 0])
    fitted = pixels.clone()
    fitted[1:, outside] *= gamut_scale(pixels[:, outside])
    return fitted.reshape(3, lab.shape[0], *lab.shape[2:]).transpose(0, 1)


def in_srgb_gamut(rgb: torch.Tensor, tolerance: float = 1e-4) -> torch.Tensor:
    """Unclipped sRGB (3, ...) -> bool (...): whether each colour is inside the sRGB cube."""
    return ((rgb >= -tolerance) & (rgb <= 1 + tolerance)).all(dim=0)


def srgb_bytes(rgb: torch.Tensor) -> torch.Tensor:
    """Unclipped sRGB (3, ...) -> uint8 (..., 3): clamped into [0, 1] and rounded."""
    return rgb.clamp(0, 1).mul(255).round().to(torch.uint8).movedim(0, -1)


class GamutFit:
    """The out-of-gamut colours of many strips of rows, fitted into the sRGB gamut together.

    ``gamut_scale`` costs mostly per call (a few dozen small tensor operations per round and piece),
    and a strip holds a few thousand such colours: fitting each strip's alone was half of the time of
    recombining a photo's samples. The colours wait here, with where they go, until ``FIT_BATCH`` of
    them are collected or the images are done; the images hold their clamped bytes until then.

    Args:
        images: the (H, W, 3) uint8 arrays the fitted colours are written into.
    """

    FIT_BATCH = 1 << 20  # colours per fit: ~50 MB of float64 intermediates at most

    def __init__(self, images: list[np.ndarray]):
        self.images = images
        self.waiting: list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.count = 0

    def add(self, image: int, top: int, lab: torch.Tensor, outside: torch.Tensor) -> None:
        """The colours of ``lab`` (3, S, W), a strip starting at row ``top``, where ``outside`` (S, W)."""
        rows, columns = torch.nonzero(outside, as_tuple=True)
        self.waiting.append((image, rows + top, columns, lab[:, rows, columns]))
        self.count += len(rows)
        if self.count >= self.FIT_BATCH:
            self.finish()

    def finish(self) -> None:
        """Fits the waiting colours at constant L and hue and writes their bytes into the images."""
        if not self.waiting:
            return
        colours = torch.cat([colours for *_, colours in self.waiting], dim=1)
        colours[1:] *= gamut_scale(colours)
        fitted = srgb_bytes(linear_to_srgb(lab_to_linear_rgb(colours[:, :, None]))[:, :, 0]).cpu().numpy()
        start = 0
        for image, rows, columns, _ in self.waiting:
            self.images[image][rows.cpu().numpy(), columns.cpu().numpy()] = fitted[start : start + len(rows)]
            start += len(rows)
        self.waiting, self.count = [], 0


def recombine(ab: torch.Tensor, full_lightness: torch.Tensor, alpha: Image.Image | None) -> list[Image.Image]:
    """Samples ab (N, 2, h, w) + the photo's own lightness (1, 1, H, W) -> N full-size PIL images.

    Each image is made a strip of rows at a time (guided upsampling, Lab to sRGB), so memory beyond
    the images themselves stays about the same for a photo of any size; the colours outside the sRGB
    gamut are then fitted into it at constant L and hue, all of them together (``GamutFit``).
    """
    height, width = full_lightness.shape[2:]
    if tuple(ab.shape[2:]) == (height, width):  # nothing to upsample: ab = 0 * lightness + ab
        slope, offset = torch.zeros_like(ab), ab
    else:
        guide = F.interpolate(full_lightness, size=ab.shape[2:], mode="area")
        slope, offset = guided_coefficients(ab, guide)
    rows = bilinear_weights(height, ab.shape[2], ab.device)
    columns = bilinear_weights(width, ab.shape[3], ab.device).T
    step = strip_rows(width)
    pixels = [np.empty((height, width, 3), dtype=np.uint8) for _ in range(len(ab))]
    gamut = GamutFit(pixels)
    for index, (sample_slope, sample_offset) in enumerate(zip(slope, offset, strict=True)):
        for top in range(0, height, step):
            lightness = full_lightness[0, 0, top : top + step]
            ab_rows = apply_guided_rows(sample_slope, sample_offset, lightness, rows[top : top + step], columns)
            lab = torch.cat([denormalize_lightness(lightness)[None], denormalize_ab(ab_rows)])
            rgb = linear_to_srgb(lab_to_linear_rgb(lab))
            pixels[index][top : top + step] = srgb_bytes(rgb).cpu().numpy()
            outside = ~in_srgb_gamut(rgb)
            if bool(outside.any()):
                gamut.add(index, top, lab, outside)
    gamut.finish()
    images = []
    for array in pixels:
        image = Image.fromarray(array)
        if alpha is not None:
            image.putalpha(alpha)
        images.append(image)
    return images
