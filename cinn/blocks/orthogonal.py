"""Fixed random orthogonal channel mixing, as used between the couplings of the cINN."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cinn.blocks.base import InvertibleModule, zero_logdet


def random_orthogonal(size: int, seed: int) -> torch.Tensor:
    """A (size, size) float64 orthogonal matrix drawn uniformly (Haar measure) from a seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    gaussian = torch.randn(size, size, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    # Fixing the signs by diag(R) makes the draw uniform over O(n) (Mezzadri 2007).
    return q * torch.sign(torch.diagonal(r))


class FixedOrthogonalMixing(InvertibleModule):
    """``y = W x`` over channels with a fixed random orthogonal ``W``: log-det 0, inverse ``W^T``.

    Unlike a permutation it mixes every channel with every other; unlike Glow's learned 1x1
    convolution it costs no parameters and can never become ill-conditioned. ``W`` is a buffer,
    so a saved model keeps its exact mixing.

    Args:
        channels: channels of ``x``.
        seed: seed of the random matrix; give each block its own.
    """

    def __init__(self, channels: int, seed: int = 0):
        super().__init__()
        # Kept in float64 so that it is orthogonal to the last bit: a float32 copy would carry a
        # log-det of ~1e-7 per pixel that the block does not report.
        self.register_buffer("weight", random_orthogonal(channels, seed))

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, C, H, W) -> (B, C, H, W), logdet (B,) of zeros."""
        return F.conv2d(x, self.weight.to(x.dtype)[:, :, None, None]), zero_logdet(x)

    def inverse(self, y: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """y: (B, C, H, W) -> (B, C, H, W), logdet (B,) of zeros."""
        return F.conv2d(y, self.weight.to(y.dtype).t()[:, :, None, None]), zero_logdet(y)
