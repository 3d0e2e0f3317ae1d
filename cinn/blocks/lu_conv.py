"""Glow's invertible 1x1 convolution in LU form (Kingma & Dhariwal 2018, section 3.2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cinn.blocks.base import InvertibleModule
from cinn.blocks.orthogonal import random_orthogonal


class InvertibleConv1x1LU(InvertibleModule):
    """``y = W x`` over channels with a learned ``W = P L (U + diag(sign(s) exp(log_s)))``.

    ``P`` (a permutation) and ``sign(s)`` are fixed buffers; ``L`` is unit lower triangular and
    ``U`` strictly upper triangular. The log-determinant is then ``H W sum(log_s)``, O(C) instead
    of a determinant. Starts from a random rotation.

    Args:
        channels: channels of ``x``.
        seed: seed of the initial rotation.
    """

    def __init__(self, channels: int, seed: int = 0):
        super().__init__()
        permutation, lower, upper = torch.linalg.lu(random_orthogonal(channels, seed).float())
        diagonal = torch.diagonal(upper)
        self.register_buffer("permutation", permutation)
        self.register_buffer("sign_s", torch.sign(diagonal))
        self.register_buffer("lower_mask", torch.tril(torch.ones(channels, channels), diagonal=-1))
        self.lower = nn.Parameter(lower * self.lower_mask)
        self.upper = nn.Parameter(torch.triu(upper, diagonal=1))
        self.log_s = nn.Parameter(torch.log(diagonal.abs()))

    def weight(self) -> torch.Tensor:
        """The (C, C) matrix ``W``."""
        eye = torch.eye(self.log_s.shape[0], device=self.log_s.device, dtype=self.log_s.dtype)
        lower = self.lower * self.lower_mask + eye
        upper = self.upper * self.lower_mask.t() + torch.diag(self.sign_s * self.log_s.exp())
        return self.permutation @ lower @ upper

    def _logdet(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[2:]
        return (height * width * self.log_s.sum()).expand(x.shape[0])

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, C, H, W) -> (B, C, H, W), logdet (B,)."""
        return F.conv2d(x, self.weight().to(x.dtype)[:, :, None, None]), self._logdet(x)

    def inverse(self, y: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """y: (B, C, H, W) -> (B, C, H, W), logdet (B,)."""
        weight_inverse = torch.linalg.inv(self.weight())
        return F.conv2d(y, weight_inverse.to(y.dtype)[:, :, None, None]), -self._logdet(y)
