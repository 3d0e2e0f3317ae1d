"""The conditioned subnetwork every coupling computes its coefficients with (Ardizzone et al. 2019, cINN)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cinn.blocks.base import Condition


class ConditionedSubnet(nn.Sequential):
    """Glow's coefficient network on ``[x, c]``: conv3x3 -> ReLU -> conv1x1 -> ReLU -> conv3x3.

    The condition is concatenated to the input (cINN, section 3). The first layer is linear, so it is
    computed as ``conv([x, c]) = conv_x(x) + conv_c(c)``: the condition, usually most of the input
    channels, is then never copied into a concatenation, its gradient is only computed when it needs
    one (not for a frozen conditioning net), and one condition can serve several samples without
    being repeated (``add_shared_condition``). A global vector broadcast over the pixels
    (``c = (map, vector)``, see ``Condition``) is convolved exactly without being broadcast
    (``constant_map_convolution``).

    Xavier-initialised, except the last layer, which starts at zero, so that a coupling whose
    identity corresponds to zero coefficients starts as the identity (Kingma & Dhariwal 2018,
    section 3.3). A plain ``nn.Sequential`` of its layers otherwise: called without a condition it
    is the network on ``x`` alone, and its parameters are named ``0.weight`` ... ``4.bias``.

    Args:
        in_channels: channels of ``x``.
        condition_channels: channels of ``c`` (0: the network ignores any condition).
        out_channels: coefficients per pixel.
        hidden_channels: width of the hidden layers.
    """

    def __init__(self, in_channels: int, condition_channels: int, out_channels: int, hidden_channels: int):
        super().__init__(
            nn.Conv2d(in_channels + condition_channels, hidden_channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden_channels, hidden_channels, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden_channels, out_channels, 3, padding=1),
        )
        self.condition_channels = condition_channels
        for layer in list(self)[:-1]:
            if isinstance(layer, nn.Conv2d):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)
        nn.init.zeros_(self[-1].weight)
        nn.init.zeros_(self[-1].bias)

    def forward(self, x: torch.Tensor, c: Condition | None = None) -> torch.Tensor:
        """x: (B, in_channels, H, W), c: see ``Condition`` -> (B, out_channels, H, W)."""
        layer = self[0]
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
        for module in itertools.islice(self, 1, None):
            hidden = module(hidden)
        return hidden


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
