"""Conditional affine coupling (Ardizzone et al. 2019, cINN; Dinh et al. 2017, Real NVP)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cinn.blocks.base import InvertibleModule

# A coupling's condition: a map (Bc, condition_channels, H, W), or a pair (map, vector) with the
# vector (Bc, G) standing for its broadcast over the map's pixels, concatenated after the map's
# channels (the map then has condition_channels - G channels).
Condition = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


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
    net), and one condition can serve several samples without being repeated. A global vector
    broadcast over the pixels (``c = (map, vector)``) is convolved exactly without being broadcast
    (``constant_map_convolution``).

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
        self, subnet: nn.Sequential, x: torch.Tensor, c: Condition | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        layer = subnet[0]
        if not self.condition_channels:
            hidden = layer(x)
        elif c is None:
            raise ValueError("this coupling is conditional but no condition was given")
        else:
            condition_map, vector = c if isinstance(c, tuple) else (c, None)
            parts = (x.shape[1], condition_map.shape[1])
            if vector is not None:
                parts += (vector.shape[1],)
            if sum(parts[1:]) != self.condition_channels:
                raise ValueError(f"expected {self.condition_channels} condition channels, got {sum(parts[1:])}")
            # split, not slices: its backward writes the weight's gradient once, without zero-filling.
            weights = layer.weight.split(parts, dim=1)
            hidden = F.conv2d(convolution_layout(x), weights[0], layer.bias, layer.stride, layer.padding)
            term = F.conv2d(convolution_layout(condition_map), weights[1], None, layer.stride, layer.padding)
            if vector is not None:
                term = term + constant_map_convolution(vector, weights[2], term.shape[2:], layer.padding)
            hidden = add_shared_condition(hidden, term)
        for module in itertools.islice(subnet, 1, None):
            hidden = module(hidden)
        log_scale, shift = hidden.chunk(2, dim=1)
        return soft_clamp(log_scale, self.clamp), shift

    def forward(self, x: torch.Tensor, c: Condition | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, C, H, W), c: (Bc, condition_channels, H, W) -> y: (B, C, H, W), logdet: (B,).

        ``Bc`` is ``B``, or divides it: each condition then serves ``B / Bc`` consecutive samples.
        ``c`` may also be a pair (map, vector), see ``Condition``.
        """
        x1, x2 = x.split(self.split_sizes, dim=1)
        log_scale1, shift1 = self._coefficients(self.subnet_first, x2, c)
        y1 = x1 * log_scale1.exp() + shift1
        log_scale2, shift2 = self._coefficients(self.subnet_second, y1, c)
        y2 = x2 * log_scale2.exp() + shift2
        logdet = log_scale1.flatten(1).sum(1) + log_scale2.flatten(1).sum(1)
        return torch.cat([y1, y2], dim=1), logdet

    def inverse(self, y: torch.Tensor, c: Condition | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """y: (B, C, H, W), c as in ``forward`` -> x: (B, C, H, W), logdet of the inverse: (B,)."""
        y1, y2 = y.split(self.split_sizes, dim=1)
        log_scale2, shift2 = self._coefficients(self.subnet_second, y1, c)
        x2 = (y2 - shift2) * (-log_scale2).exp()
        log_scale1, shift1 = self._coefficients(self.subnet_first, x2, c)
        x1 = (y1 - shift1) * (-log_scale1).exp()
        logdet = -(log_scale1.flatten(1).sum(1) + log_scale2.flatten(1).sum(1))
        return torch.cat([x1, x2], dim=1), logdet


def constant_map_convolution(
    vector: torch.Tensor, weight: torch.Tensor, size: Sequence[int], padding: Sequence[int]
) -> torch.Tensor:
    """``conv2d(vector broadcast to size, weight, padding=padding)``, without the broadcast.

    Stride 1, "same" padding (``(kernel - 1) / 2`` zeros, as the coupling subnetworks use). On a
    constant map a kernel tap contributes ``weight[:, :, u, v] @ vector`` wherever it falls inside
    the map, so the result is those per-tap products summed over the taps inside at each pixel:
    (B, G) x (K, G, kh, kw) -> (B, K, H, W), for ``B * K * G * kh * kw`` multiply-adds instead of
    ``H * W`` times as many.
    """
    height, width = size
    kernel_height, kernel_width = weight.shape[2:]
    if (
        tuple(padding) != ((kernel_height - 1) // 2, (kernel_width - 1) // 2)
        or not kernel_height % 2 == kernel_width % 2 == 1
    ):
        raise ValueError(
            f"only odd kernels with 'same' padding are supported, got {tuple(weight.shape[2:])}, {padding}"
        )
    taps = torch.einsum("kguv,bg->bkuv", weight, vector)

    def inside(length: int, kernel: int) -> torch.Tensor:
        """(kernel, length): 1 where tap u of a pixel falls inside the map."""
        positions = torch.arange(length, device=vector.device) + torch.arange(kernel, device=vector.device)[:, None]
        offset = (kernel - 1) // 2
        return ((positions >= offset) & (positions < length + offset)).to(vector.dtype)

    return torch.einsum("bkuv,uh,vw->bkhw", taps, inside(height, kernel_height), inside(width, kernel_width))


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
