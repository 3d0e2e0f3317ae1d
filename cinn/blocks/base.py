"""The one contract every invertible block follows."""

from __future__ import annotations

import torch
from torch import nn

# A condition: a map (Bc, condition_channels, H, W), or a pair (map, vector) with the vector (Bc, G)
# standing for its broadcast over the map's pixels, concatenated after the map's channels (the map then
# has condition_channels - G channels). ``Bc`` is the batch B of the data or divides it: each condition
# then serves B / Bc consecutive samples. Blocks that take no condition ignore it.
Condition = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


class InvertibleModule(nn.Module):
    """Base class of every invertible block.

    ``forward`` maps data to latent, ``inverse`` latent to data. Both return ``(output, logdet)``
    where ``logdet`` is the (B,) log-absolute-determinant of the Jacobian of the direction that
    ran, so ``forward`` followed by ``inverse`` gives log-dets that sum to zero. Blocks that take
    no condition accept ``c`` and ignore it, so a chain can pass one condition through.
    """

    def forward(self, x: torch.Tensor, c: Condition | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def inverse(self, y: torch.Tensor, c: Condition | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


def zero_logdet(x: torch.Tensor) -> torch.Tensor:
    """A (B,) zero log-det on the device and dtype of ``x`` (B, ...)."""
    return x.new_zeros(x.shape[0])
