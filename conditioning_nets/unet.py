"""An encoder-decoder conditioning net: every level's map sees the whole photo.

The ``small`` net hands each flow level the encoder's features at that resolution, so the finest
coupling blocks are conditioned on a few pixels of texture only; whether a patch is sky, skin or
foliage is decided where the features are coarse. The published colorization cINN instead derives
every level's condition from the deepest features of its colorization network (Ardizzone et al.
2019, Sec. 4.3). This net does the same at CPU cost: an encoder as in ``small`` down to the coarsest
level, the photo's global context fused into that level (the mean-pooled features through a
linear layer, added everywhere, as in Iizuka et al. 2016, "Let there be Color!"), and a decoder that
upsamples it level by level, merging the encoder's map of each resolution (a U-Net, Ronneberger et
al. 2015). Level ``k``'s condition is the decoder's map at that level.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from cinn.conditioning_nets.base import (
    ConditioningNet,
    GlobalFeatures,
    conv_block,
    encoder_levels,
    level_channels,
    level_strides,
)
from torch import nn


class UNetConditioningNet(ConditioningNet):
    """Encoder (as ``SmallConditioningNet``) + global fusion + decoder with skip connections.

    Args:
        num_levels: number of feature maps (flow levels).
        first_stride: stride of the finest map relative to the lightness input (power of 2).
        width: channels of the finest map; level k has ``min(width * 2**k, max_width)``.
        max_width: cap on the channels of the coarse levels.
        blocks_per_level: conv3x3 blocks per encoder level after the downsampling.
        global_channels: size of the global vector handed to the flow (0 for none); the fusion
            inside the net happens either way.
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
        self.encoder = encoder_levels(width, self.out_channels, first_stride, blocks_per_level)
        coarsest = self.out_channels[-1]
        self.context = nn.Linear(coarsest, coarsest)
        self.fuse = conv_block(coarsest, coarsest)
        # decoder[k] turns the upsampled map of level k + 1 and the encoder's map of level k into level k.
        self.decoder = nn.ModuleList(
            nn.Sequential(
                conv_block(self.out_channels[level + 1] + channels, channels),
                conv_block(channels, channels),
            )
            for level, channels in enumerate(self.out_channels[:-1])
        )
        self.global_features = GlobalFeatures(coarsest, global_channels) if global_channels > 0 else None

    def extract(self, lightness: torch.Tensor) -> list[torch.Tensor]:
        """lightness: (B, 1, H, W) -> per-level maps (+ global vector), as ``ConditioningNet.forward``."""
        features = self.stem(lightness)
        skips = []
        for level in self.encoder:
            features = level(features)
            skips.append(features)
        context = torch.relu(self.context(features.mean(dim=(2, 3))))
        features = self.fuse(features + context[:, :, None, None])
        outputs = [features]
        for level in reversed(range(len(self.decoder))):
            skip = skips[level]
            upsampled = F.interpolate(features, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            features = self.decoder[level](torch.cat([upsampled, skip], dim=1))
            outputs.insert(0, features)
        if self.global_features is not None:
            outputs.append(self.global_features(outputs[-1]))
        return outputs
