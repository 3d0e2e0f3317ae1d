"""Glow's activation normalisation (Kingma & Dhariwal 2018, section 3.1)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from cinn.blocks.base import InvertibleModule


class ActNorm(InvertibleModule):
    """Per-channel affine map ``y = (x + bias) * exp(log_scale)``.

    Glow initialises it so that the first batch has zero mean and unit variance per channel. That
    initialisation is explicit here (``data_dependent_init``) and its ``initialized`` flag is a
    buffer: loading a trained model never re-initialises it, which a hidden first-forward init does.

    Args:
        channels: channels of ``x``.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.log_scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(False))
        self._initializing = False

    @torch.no_grad()
    def initialize_from(self, x: torch.Tensor) -> None:
        """Set bias and scale so that ``x`` (B, C, H, W) leaves with zero mean, unit variance."""
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        std = x.std(dim=(0, 2, 3), keepdim=True, unbiased=False)
        self.bias.copy_(-mean)
        self.log_scale.copy_(-torch.log(std + 1e-6))
        self.initialized.fill_(True)

    def _logdet(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[2:]
        return (height * width * self.log_scale.sum()).expand(x.shape[0])

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, C, H, W) -> (B, C, H, W), logdet (B,)."""
        if self._initializing:
            self.initialize_from(x)
        return (x + self.bias) * self.log_scale.exp(), self._logdet(x)

    def inverse(self, y: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """y: (B, C, H, W) -> (B, C, H, W), logdet (B,)."""
        return y * (-self.log_scale).exp() - self.bias, -self._logdet(y)


@contextlib.contextmanager
def data_dependent_init(model: nn.Module) -> Iterator[list[ActNorm]]:
    """Within this context, every ActNorm of ``model`` initialises itself from its next input.

    Run one forward pass on a representative batch inside it, once, before training::

        with data_dependent_init(flow):
            flow(ab, conds)
    """
    actnorms = [module for module in model.modules() if isinstance(module, ActNorm)]
    for actnorm in actnorms:
        actnorm._initializing = True
    try:
        with torch.no_grad():
            yield actnorms
    finally:
        for actnorm in actnorms:
            actnorm._initializing = False
