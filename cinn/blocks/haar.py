"""Haar wavelet downsampling between flow levels (Ardizzone et al. 2019, section 4)."""

from __future__ import annotations

import math

import torch

from cinn.blocks.base import InvertibleModule

# Rows: average, horizontal detail, vertical detail, diagonal detail; columns: the 2x2 pixels
# in the order (top-left, top-right, bottom-left, bottom-right). Orthonormal: H H^T = I.
HAAR_MATRIX = 0.5 * torch.tensor(
    [
        [1.0, 1.0, 1.0, 1.0],
        [1.0, -1.0, 1.0, -1.0],
        [1.0, 1.0, -1.0, -1.0],
        [1.0, -1.0, -1.0, 1.0],
    ]
)


class HaarDownsampling(InvertibleModule):
    """(B, C, H, W) -> (B, 4C, H/2, W/2): each 2x2 patch becomes its four Haar coefficients.

    Output channels are ordered by band: ``[average (C), horizontal (C), vertical (C),
    diagonal (C)]``, so a later split can separate coarse content from detail. The transform is
    orthonormal (log-det 0); an optional ``scale`` rescales the output (FrEIA's "rebalance") and
    its log-det ``C H W log(scale)`` is accounted for.

    Args:
        scale: factor applied to all coefficients.
    """

    def __init__(self, scale: float = 1.0):
        super().__init__()
        if scale <= 0:
            raise ValueError(f"Haar scale must be positive, got {scale}")
        self.scale = scale
        self.register_buffer("matrix", HAAR_MATRIX.clone(), persistent=False)

    def _logdet(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_full((x.shape[0],), x[0].numel() * math.log(self.scale))

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, C, H, W) with even H, W -> (B, 4C, H/2, W/2), logdet (B,)."""
        batch, channels, height, width = x.shape
        if height % 2 or width % 2:
            raise ValueError(f"Haar downsampling needs an even height and width, got {height}x{width}")
        patches = x.reshape(batch, channels, height // 2, 2, width // 2, 2)
        patches = patches.permute(0, 1, 2, 4, 3, 5).reshape(batch, channels, height // 2, width // 2, 4)
        bands = torch.einsum("bchwp,kp->bkchw", patches, self.matrix.to(x.dtype) * self.scale)
        return bands.reshape(batch, 4 * channels, height // 2, width // 2), self._logdet(x)

    def inverse(self, y: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """y: (B, 4C, H/2, W/2) -> (B, C, H, W), logdet (B,)."""
        batch, channels4, half_height, half_width = y.shape
        channels = channels4 // 4
        bands = y.reshape(batch, 4, channels, half_height, half_width)
        patches = torch.einsum("bkchw,kp->bchwp", bands, self.matrix.to(y.dtype) / self.scale)
        x = patches.reshape(batch, channels, half_height, half_width, 2, 2).permute(0, 1, 2, 4, 3, 5)
        x = x.reshape(batch, channels, 2 * half_height, 2 * half_width)
        return x, -self._logdet(x)
