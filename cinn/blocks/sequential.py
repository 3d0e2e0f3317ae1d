"""A chain of invertible blocks sharing one condition."""

from __future__ import annotations

import torch
from torch import nn

from cinn.blocks.base import Condition, InvertibleModule, zero_logdet


class InvertibleSequential(InvertibleModule):
    """Runs its blocks in order (``forward``) or in reverse order (``inverse``), summing log-dets.

    Every block receives the same condition ``c``; unconditional blocks ignore it.
    """

    def __init__(self, *blocks: InvertibleModule):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor, c: Condition | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        logdet = zero_logdet(x)
        for block in self.blocks:
            x, block_logdet = block(x, c)
            logdet = logdet + block_logdet
        return x, logdet

    def inverse(self, y: torch.Tensor, c: Condition | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        logdet = zero_logdet(y)
        for block in reversed(self.blocks):
            y, block_logdet = block.inverse(y, c)
            logdet = logdet + block_logdet
        return y, logdet
