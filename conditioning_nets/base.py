"""The conditioning-network contract, and the layers every conditioning net is built from.

A conditioning net turns normalised lightness into one feature map per flow level (Ardizzone et al.
2019, cINN, Sec. 3: the condition is pre-processed by a feed-forward network whose multi-scale
outputs feed the coupling blocks of the matching level). The flow is built from the net's declared
``out_channels``, ``strides`` and ``global_channels``; those three attributes are the only place the
shapes are written.

Normalisation is ``GroupNorm`` everywhere, never ``BatchNorm``: the flow's conditional density of one
image must not depend on the other images of its batch, and batch-size-1 inference must behave
exactly like training.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def level_strides(first_stride: int, num_levels: int) -> tuple[int, ...]:
    """Strides of the per-level maps relative to the lightness input, doubling per level.

    Args:
        first_stride: stride of the finest map; a power of 2 (e.g. 2 when ab has half the
            lightness resolution).
        num_levels: number of flow levels, at least 1.

    Returns:
        ``(first_stride, 2 * first_stride, ..., 2 ** (num_levels - 1) * first_stride)``.
    """
    if num_levels < 1:
        raise ValueError(f"num_levels must be at least 1, got {num_levels}.")
    if first_stride < 1 or first_stride & (first_stride - 1):
        raise ValueError(f"first_stride must be a power of 2, got {first_stride}.")
    return tuple(first_stride * 2**level for level in range(num_levels))


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with about 16 channels per group (per-sample statistics, see the module docstring)."""
    return nn.GroupNorm(math.gcd(channels, max(1, channels // 16)), channels)


def conv_block(
    in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, dilation: int = 1
) -> nn.Sequential:
    """Convolution + GroupNorm + ReLU; 'same' padding, so the output has size ``input / stride``."""
    padding = dilation * (kernel_size - 1) // 2
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, bias=False),
        group_norm(out_channels),
        nn.ReLU(inplace=True),
    )


def level_channels(width: int, max_width: int, num_levels: int) -> tuple[int, ...]:
    """Channels of each level's map: ``width`` doubling per level, capped at ``max_width``."""
    return tuple(min(width * 2**level, max_width) for level in range(num_levels))


def encoder_levels(in_channels: int, channels: tuple[int, ...], first_stride: int, blocks: int) -> nn.ModuleList:
    """One ``nn.Sequential`` of conv blocks per level: the finest level downsamples by ``first_stride``
    (stride-2 blocks), every other level by 2, each then ``blocks`` blocks at its resolution."""
    levels, previous = nn.ModuleList(), in_channels
    for level, width in enumerate(channels):
        downsamplings = int(math.log2(first_stride)) if level == 0 else 1
        layers = []
        for index in range(downsamplings + blocks):
            layers.append(conv_block(previous, width, stride=2 if index < downsamplings else 1))
            previous = width
        levels.append(nn.Sequential(*layers))
    return levels


class GlobalFeatures(nn.Module):
    """Image-level feature vector: spatial mean of a feature map, then Linear + ReLU.

    Args:
        in_channels: channels of the pooled map.
        global_channels: size of the returned vector.
    """

    def __init__(self, in_channels: int, global_channels: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_channels, global_channels)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features: (B, in_channels, H, W) -> (B, global_channels)."""
        return torch.relu(self.linear(features.mean(dim=(2, 3))))


class ConditioningNet(nn.Module):
    """Base class: normalised lightness -> one feature map per flow level (+ optional global vector).

    Subclasses set the three shape attributes in ``__init__`` and implement ``extract``.

    Attributes:
        out_channels: channels of each per-level map, fine to coarse.
        strides: stride of each map relative to the lightness input; powers of 2, doubling per level.
        global_channels: size of the global feature vector, 0 if the net has none.
    """

    out_channels: tuple[int, ...]
    strides: tuple[int, ...]
    global_channels: int

    @property
    def num_levels(self) -> int:
        """Number of per-level feature maps."""
        return len(self.strides)

    @property
    def input_multiple(self) -> int:
        """Lightness height and width must be multiples of this (the largest stride by default)."""
        return max(self.strides)

    def check_lightness(self, lightness: torch.Tensor) -> None:
        """Raise ``ValueError`` unless lightness is (B, 1, H, W), H and W multiples of ``input_multiple``."""
        if lightness.dim() != 4 or lightness.shape[1] != 1:
            raise ValueError(
                f"{type(self).__name__} expects lightness of shape (B, 1, H, W), got {tuple(lightness.shape)}."
            )
        height, width = lightness.shape[-2:]
        if height % self.input_multiple or width % self.input_multiple:
            raise ValueError(
                f"{type(self).__name__} needs lightness height and width that are multiples of "
                f"{self.input_multiple} (strides {self.strides}), got {height}x{width}; "
                "crop or resize the image."
            )

    def forward(self, lightness: torch.Tensor) -> list[torch.Tensor]:
        """Per-level feature maps of a lightness image.

        Args:
            lightness: (B, 1, H, W), normalised to [-1, 1]; H and W multiples of ``input_multiple``.

        Returns:
            ``[(B, out_channels[k], H / strides[k], W / strides[k]) for k in levels]``, followed by one
            ``(B, global_channels)`` tensor iff ``global_channels > 0``.
        """
        self.check_lightness(lightness)
        return self.extract(lightness)

    def extract(self, lightness: torch.Tensor) -> list[torch.Tensor]:
        """The network proper, called by ``forward`` after the input check; same contract."""
        raise NotImplementedError
