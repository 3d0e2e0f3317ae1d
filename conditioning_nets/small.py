"""A small convolutional conditioning net, cheap enough to train the default model on a CPU.

Lightness 64x64 with ``first_stride=2`` gives maps for a 32x32 ab flow: 32x32, 16x16, 8x8, (4x4).
Each level is a stride-2 conv3x3 block (or none, for the finest level at stride 1) followed by
``blocks_per_level`` conv3x3 blocks; widths double per level from ``width`` up to ``max_width``.
The defaults, channels (16, 32, 64, 128), cost about 0.15 GFLOP per 64x64 image for forward plus
backward; ``width=32`` triples that, ``blocks_per_level=1`` saves about a third.
"""

from __future__ import annotations

import torch
from cinn.conditioning_nets.base import (
    ConditioningNet,
    GlobalFeatures,
    conv_block,
    encoder_levels,
    level_channels,
    level_strides,
)


class SmallConditioningNet(ConditioningNet):
    """Small conv net: per level [stride-2 conv3x3] + ``blocks_per_level`` x (conv3x3 + GroupNorm + ReLU).

    Args:
        num_levels: number of feature maps (flow levels).
        first_stride: stride of the finest map relative to the lightness input (power of 2).
        width: channels of the finest map; level k has ``min(width * 2**k, max_width)``.
        max_width: cap on the channels of the coarse levels.
        blocks_per_level: conv3x3 blocks per level after the downsampling.
        global_channels: size of the global vector pooled from the coarsest map; 0 for none.
    """

    def __init__(
        self,
        num_levels: int = 4,
        first_stride: int = 2,
        width: int = 16,
        max_width: int = 128,
        blocks_per_level: int = 2,
        global_channels: int = 0,
    ) -> None:
        super().__init__()
        self.strides = level_strides(first_stride, num_levels)
        self.out_channels = level_channels(width, max_width, num_levels)
        self.global_channels = global_channels
        self.stem = conv_block(1, width)
        self.levels = encoder_levels(width, self.out_channels, first_stride, blocks_per_level)
        self.global_features = GlobalFeatures(self.out_channels[-1], global_channels) if global_channels > 0 else None

    def extract(self, lightness: torch.Tensor) -> list[torch.Tensor]:
        """lightness: (B, 1, H, W) -> per-level maps (+ global vector), as ``ConditioningNet.forward``."""
        features = self.stem(lightness)
        outputs = []
        for level in self.levels:
            features = level(features)
            outputs.append(features)
        if self.global_features is not None:
            outputs.append(self.global_features(features))
        return outputs
