"""The paper-scale conditioning net: the VGG-style colorization backbone of Zhang et al. 2016.

Backbone ("Colorful Image Colorization", Zhang et al. 2016, Table 4), for a 256x256 input::

    conv1  2 x conv3x3   64, second stride 2   -> 128x128  (stride 2)
    conv2  2 x conv3x3  128, second stride 2   ->  64x64   (stride 4)
    conv3  3 x conv3x3  256, third stride 2    ->  32x32   (stride 8)
    conv4  3 x conv3x3  512                    ->  32x32
    conv5  3 x conv3x3  512, dilation 2        ->  32x32
    conv6  3 x conv3x3  512, dilation 2        ->  32x32
    conv7  3 x conv3x3  512                    ->  32x32
    conv8  deconv4x4 /2 256, 2 x conv3x3 256   ->  64x64   (stride 4)

The per-level conditions of a 64x64 ab flow are taken from this backbone: the stride-2 map from
conv1, stride 4 from conv8, stride 8 from conv7 (each through a 1x1 conv), coarser ones by stride-2
conv3x3 blocks from the previous level; the global vector is pooled from conv7 and concatenated,
broadcast, to the condition of the coarsest level's couplings. This differs from the published
colorization cINN (Ardizzone et al. 2019, Sec. 4.3, and its code), which derives every level's
condition from the conv8 features (strided convolutions of them) and feeds its global vector to a
separate stage of fully connected couplings after the convolutional ones. Zhang's BatchNorm is
replaced by GroupNorm (see ``conditioning_nets.base``).
"""

from __future__ import annotations

import torch
from cinn.conditioning_nets.base import (
    ConditioningNet,
    GlobalFeatures,
    conv_block,
    group_norm,
    level_strides,
)
from torch import nn

DEFAULT_LEVEL_CHANNELS = (64, 128, 128, 256)
BACKBONE_STRIDE = 8  # conv3 to conv7 run at 1/8 of the input
# Stride of each backbone map a level can be read from, and that map's channels.
SOURCE_CHANNELS = {2: 64, 4: 256, 8: 512}


def vgg_stage(
    in_channels: int, channels: int, num_convs: int, last_stride: int = 1, dilation: int = 1
) -> nn.Sequential:
    """``num_convs`` conv3x3 + ReLU layers, the last one with ``last_stride``, then one GroupNorm (Zhang)."""
    layers: list[nn.Module] = []
    for index in range(num_convs):
        stride = last_stride if index == num_convs - 1 else 1
        layers.append(nn.Conv2d(in_channels, channels, 3, stride, dilation, dilation))
        layers.append(nn.ReLU(inplace=True))
        in_channels = channels
    layers.append(group_norm(channels))
    return nn.Sequential(*layers)


class ZhangBackbone(nn.Module):
    """conv1 ... conv8 of Zhang et al. 2016; returns the maps the levels are read from."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = vgg_stage(1, 64, 2, last_stride=2)
        self.conv2 = vgg_stage(64, 128, 2, last_stride=2)
        self.conv3 = vgg_stage(128, 256, 3, last_stride=2)
        self.conv4 = vgg_stage(256, 512, 3)
        self.conv5 = vgg_stage(512, 512, 3, dilation=2)
        self.conv6 = vgg_stage(512, 512, 3, dilation=2)
        self.conv7 = vgg_stage(512, 512, 3)
        self.upsample8 = nn.Sequential(nn.ConvTranspose2d(512, 256, 4, 2, 1), nn.ReLU(inplace=True))
        self.conv8 = vgg_stage(256, 256, 2)

    def forward(self, lightness: torch.Tensor) -> dict[int, torch.Tensor]:
        """lightness: (B, 1, H, W) -> {2: conv1 (B, 64, H/2, W/2), 4: conv8 (B, 256, H/4, W/4),
        8: conv7 (B, 512, H/8, W/8)}."""
        conv1 = self.conv1(lightness)
        features = self.conv3(self.conv2(conv1))
        conv7 = self.conv7(self.conv6(self.conv5(self.conv4(features))))
        conv8 = self.conv8(self.upsample8(conv7))
        return {2: conv1, 4: conv8, 8: conv7}


class VggConditioningNet(ConditioningNet):
    """Zhang et al. 2016 backbone with per-level projections; defaults give the paper's 64x64 ab flow.

    Args:
        num_levels: number of feature maps (flow levels).
        first_stride: stride of the finest map; 2, 4 or 8 (a backbone map exists there). With a
            256x256 lightness and a 64x64 ab flow this is 4, giving strides (4, 8, 16, 32).
        level_channels: channels of each level's map; defaults to (64, 128, 128, 256), truncated or
            padded with its last entry to ``num_levels``.
        global_channels: size of the global vector pooled from conv7; 0 for none.
    """

    def __init__(
        self,
        num_levels: int = 4,
        first_stride: int = 4,
        level_channels: tuple[int, ...] | None = None,
        global_channels: int = 512,
    ) -> None:
        super().__init__()
        if first_stride not in SOURCE_CHANNELS:
            raise ValueError(f"VggConditioningNet first_stride must be 2, 4 or 8, got {first_stride}.")
        self.strides = level_strides(first_stride, num_levels)
        if level_channels is None:
            padding = (DEFAULT_LEVEL_CHANNELS[-1],) * max(0, num_levels - len(DEFAULT_LEVEL_CHANNELS))
            level_channels = (DEFAULT_LEVEL_CHANNELS + padding)[:num_levels]
        if len(level_channels) != num_levels:
            raise ValueError(f"level_channels {tuple(level_channels)} must have num_levels={num_levels} entries.")
        self.out_channels = tuple(level_channels)
        self.global_channels = global_channels
        self.backbone = ZhangBackbone()
        self.projections = nn.ModuleList()
        for level, (stride, channels) in enumerate(zip(self.strides, self.out_channels, strict=True)):
            if stride in SOURCE_CHANNELS:
                self.projections.append(conv_block(SOURCE_CHANNELS[stride], channels, kernel_size=1))
            else:  # coarser than the backbone: downsample the previous level's map
                self.projections.append(conv_block(self.out_channels[level - 1], channels, stride=2))
        self.global_features = GlobalFeatures(512, global_channels) if global_channels > 0 else None

    @property
    def input_multiple(self) -> int:
        """The backbone itself needs multiples of 8, the levels multiples of the largest stride."""
        return max(BACKBONE_STRIDE, *self.strides)

    def extract(self, lightness: torch.Tensor) -> list[torch.Tensor]:
        """lightness: (B, 1, H, W) -> per-level maps (+ global vector), as ``ConditioningNet.forward``."""
        sources = self.backbone(lightness)
        outputs: list[torch.Tensor] = []
        for stride, projection in zip(self.strides, self.projections, strict=True):
            outputs.append(projection(sources[stride] if stride in sources else outputs[-1]))
        if self.global_features is not None:
            outputs.append(self.global_features(sources[BACKBONE_STRIDE]))
        return outputs
