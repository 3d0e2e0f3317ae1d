"""Conditional affine coupling (Ardizzone et al. 2019, cINN; Dinh et al. 2017, Real NVP)."""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

from cinn.blocks.base import InvertibleModule


def soft_clamp(log_scale: torch.Tensor, alpha: float) -> torch.Tensor:
    """``s -> (2 alpha / pi) atan(s / alpha)``: close to ``s`` near 0, bounded by ``alpha``.

    The cINN paper bounds the log-scale this way so that one coupling can neither explode nor
    vanish the activations, which keeps training stable without a sigmoid's asymmetry.
    """
    return (2.0 * alpha / math.pi) * torch.atan(log_scale / alpha)


def coupling_subnet(in_channels: int, out_channels: int, hidden_channels: int) -> nn.Sequential:
    """Glow's coefficient network: conv3x3 -> ReLU -> conv1x1 -> ReLU -> conv3x3.

    Xavier-initialised, except the last layer, which starts at zero so that every coupling block
    starts as the identity (Kingma & Dhariwal 2018, section 3.3).
    """
    subnet = nn.Sequential(
        nn.Conv2d(in_channels, hidden_channels, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(hidden_channels, hidden_channels, 1),
        nn.ReLU(inplace=True),
        nn.Conv2d(hidden_channels, out_channels, 3, padding=1),
    )
    for layer in subnet[:-1]:
        if isinstance(layer, nn.Conv2d):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
    nn.init.zeros_(subnet[-1].weight)
    nn.init.zeros_(subnet[-1].bias)
    return subnet


class ConditionalAffineCoupling(InvertibleModule):
    """Both halves of ``x`` transformed in turn, each conditioned on the other half and on ``c``.

    With ``x = [x1, x2]``::

        y1 = x1 * exp(clamp(s1(x2, c))) + t1(x2, c)
        y2 = x2 * exp(clamp(s2(y1, c))) + t2(y1, c)

    The condition is concatenated to the input of the coefficient subnetworks (cINN, section 3).
    The first layer is linear, so it is computed as ``conv([x, c]) = conv_x(x) + conv_c(c)``: the
    condition, usually most of the subnetwork's input channels, is then never copied into a
    concatenation, its gradient is only computed when it needs one (not for a frozen conditioning
    net), and one condition can serve several samples without being repeated.

    Args:
        channels: channels of ``x``.
        condition_channels: channels of ``c`` (0 for an unconditional coupling).
        hidden_channels: width of the subnetworks.
        clamp: ``alpha`` of the soft clamp of the log-scales.
    """

    def __init__(self, channels: int, condition_channels: int, hidden_channels: int, clamp: float = 1.5):
        super().__init__()
        if channels < 2:
            raise ValueError(f"a coupling needs at least 2 channels, got {channels}")
        self.split_sizes = (channels // 2, channels - channels // 2)
        self.condition_channels = condition_channels
        self.clamp = clamp
        first, second = self.split_sizes
        self.subnet_first = coupling_subnet(second + condition_channels, 2 * first, hidden_channels)
        self.subnet_second = coupling_subnet(first + condition_channels, 2 * second, hidden_channels)

    def _coefficients(
        self, subnet: nn.Sequential, x: torch.Tensor, c: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        layer = subnet[0]
        if not self.condition_channels:
            hidden = layer(x)
        elif c is None:
            raise ValueError("this coupling is conditional but no condition was given")
        else:
            # split, not two slices: its backward writes the weight's gradient once, without zero-filling.
            weight_x, weight_c = layer.weight.split((x.shape[1], self.condition_channels), dim=1)
            hidden = F.conv2d(convolution_layout(x), weight_x, layer.bias, layer.stride, layer.padding)
            term = F.conv2d(convolution_layout(c), weight_c, None, layer.stride, layer.padding)
            hidden = add_shared_condition(hidden, term)
        for module in itertools.islice(subnet, 1, None):
            hidden = module(hidden)
        log_scale, shift = hidden.chunk(2, dim=1)
        return soft_clamp(log_scale, self.clamp), shift

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, C, H, W), c: (Bc, condition_channels, H, W) -> y: (B, C, H, W), logdet: (B,).

        ``Bc`` is ``B``, or divides it: each condition then serves ``B / Bc`` consecutive samples.
        """
        x1, x2 = x.split(self.split_sizes, dim=1)
        log_scale1, shift1 = self._coefficients(self.subnet_first, x2, c)
        y1 = x1 * log_scale1.exp() + shift1
        log_scale2, shift2 = self._coefficients(self.subnet_second, y1, c)
        y2 = x2 * log_scale2.exp() + shift2
        logdet = log_scale1.flatten(1).sum(1) + log_scale2.flatten(1).sum(1)
        return torch.cat([y1, y2], dim=1), logdet

    def inverse(self, y: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """y: (B, C, H, W), c as in ``forward`` -> x: (B, C, H, W), logdet of the inverse: (B,)."""
        y1, y2 = y.split(self.split_sizes, dim=1)
        log_scale2, shift2 = self._coefficients(self.subnet_second, y1, c)
        x2 = (y2 - shift2) * (-log_scale2).exp()
        log_scale1, shift1 = self._coefficients(self.subnet_first, x2, c)
        x1 = (y1 - shift1) * (-log_scale1).exp()
        logdet = -(log_scale1.flatten(1).sum(1) + log_scale2.flatten(1).sum(1))
        return torch.cat([x1, x2], dim=1), logdet


def convolution_layout(x: torch.Tensor) -> torch.Tensor:
    """``x`` in the memory layout its convolutions run fastest in: channels-last on the CPU, where
    it is oneDNN's own (the subnetwork then stays in it; no reorder before and after every layer)."""
    return x.contiguous(memory_format=torch.channels_last) if x.device.type == "cpu" else x


def add_shared_condition(hidden: torch.Tensor, term: torch.Tensor) -> torch.Tensor:
    """Adds term (Bc, K, H, W) to hidden (B, K, H, W) in place; condition ``i`` serves samples
    ``i * B / Bc`` to ``(i + 1) * B / Bc - 1`` (the order of ``repeat_interleave``)."""
    batch, condition_batch = hidden.shape[0], term.shape[0]
    if condition_batch in (1, batch):
        return hidden.add_(term)
    if batch % condition_batch:
        raise ValueError(f"{batch} samples cannot share {condition_batch} conditions evenly")
    hidden.view(condition_batch, batch // condition_batch, *hidden.shape[1:]).add_(term.unsqueeze(1))
    return hidden
