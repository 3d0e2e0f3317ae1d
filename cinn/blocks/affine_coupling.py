"""Conditional affine coupling (Ardizzone et al. 2019, cINN; Dinh et al. 2017, Real NVP)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from cinn.blocks.coupling import ConditionalCoupling
from cinn.config import positive


def soft_clamp(log_scale: torch.Tensor, alpha: float) -> torch.Tensor:
    """``s -> (2 alpha / pi) atan(s / alpha)``: close to ``s`` near 0, bounded by ``alpha``.

    The cINN paper bounds the log-scale this way so that one coupling can neither explode nor
    vanish the activations, which keeps training stable without a sigmoid's asymmetry.
    """
    return (2.0 * alpha / math.pi) * torch.atan(log_scale / alpha)


@dataclass(frozen=True)
class AffineCouplingSettings:
    """Settings of ``ConditionalAffineCoupling`` (a recipe's ``flow.coupling_settings``).

    Attributes:
        clamp: ``alpha`` of the soft clamp of the log-scales.
    """

    clamp: float = positive(1.5)


class ConditionalAffineCoupling(ConditionalCoupling):
    """The affine coupling of the cINN: ``f(x; s, t) = x * exp(clamp(s)) + t`` element by element::

        y1 = x1 * exp(clamp(s1(x2, c))) + t1(x2, c)
        y2 = x2 * exp(clamp(s2(y1, c))) + t2(y1, c)

    Log-det: the sum of the clamped log-scales. Zero coefficients (the subnetworks' initial output)
    make it the identity. See ``ConditionalCoupling`` for the arguments.
    """

    Settings = AffineCouplingSettings
    coefficients_per_element = 2  # log-scale, shift

    def _scale_and_shift(self, coefficients: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_scale, shift = coefficients.chunk(2, dim=1)
        return soft_clamp(log_scale, self.settings.clamp), shift

    def transform(self, x: torch.Tensor, coefficients: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_scale, shift = self._scale_and_shift(coefficients)
        return x * log_scale.exp() + shift, log_scale.flatten(1).sum(1)

    def inverse_transform(self, y: torch.Tensor, coefficients: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_scale, shift = self._scale_and_shift(coefficients)
        return (y - shift) * (-log_scale).exp(), -log_scale.flatten(1).sum(1)
