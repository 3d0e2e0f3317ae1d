"""What every conditional coupling shares: two halves, each transformed given the other and the condition."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from cinn.blocks.base import Condition, InvertibleModule
from cinn.blocks.condition import ConditionedSubnet


class ConditionalCoupling(InvertibleModule):
    """Both halves of ``x`` transformed in turn, each conditioned on the other half and on ``c``.

    With ``x = [x1, x2]`` and an elementwise invertible map ``f(x; theta)``::

        y1 = f(x1; theta1(x2, c))
        y2 = f(x2; theta2(y1, c))

    (Dinh et al. 2017, Real NVP; conditioned as in Ardizzone et al. 2019, cINN, section 3). The
    parameters ``theta`` come from a ``ConditionedSubnet`` per half. A coupling type is a subclass
    that says how many parameters ``f`` takes per element (``coefficients_per_element``), what its
    settings are (``Settings``, a frozen dataclass that recipes fill) and how ``f`` runs both ways
    (``transform``, ``inverse_transform``); register it in ``cinn.glow.COUPLINGS``.

    Args:
        channels: channels of ``x`` (at least 2).
        condition_channels: channels of ``c`` (0 for an unconditional coupling).
        hidden_channels: width of the subnetworks.
        settings: the coupling type's ``Settings`` (its defaults if None).
    """

    Settings: ClassVar[type]
    coefficients_per_element: int  # parameters of f per element of x, given the settings

    def __init__(self, channels: int, condition_channels: int, hidden_channels: int, settings: Any = None):
        super().__init__()
        if channels < 2:
            raise ValueError(f"a coupling needs at least 2 channels, got {channels}")
        self.settings = self.Settings() if settings is None else settings
        if not isinstance(self.settings, self.Settings):
            raise TypeError(f"{type(self).__name__} takes {self.Settings.__name__}, got {type(self.settings).__name__}")
        self.split_sizes = (channels // 2, channels - channels // 2)
        self.condition_channels = condition_channels
        first, second = self.split_sizes
        count = self.coefficients_per_element
        self.subnet_first = ConditionedSubnet(second, condition_channels, count * first, hidden_channels)
        self.subnet_second = ConditionedSubnet(first, condition_channels, count * second, hidden_channels)

    def transform(self, x: torch.Tensor, coefficients: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``f``: x (B, C, H, W), coefficients (B, coefficients_per_element * C, H, W) -> y, logdet (B,)."""
        raise NotImplementedError

    def inverse_transform(self, y: torch.Tensor, coefficients: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``f^-1`` with the coefficients of ``transform`` -> x (B, C, H, W), logdet of the inverse (B,)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, c: Condition | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, C, H, W), c: (Bc, condition_channels, H, W) -> y: (B, C, H, W), logdet: (B,).

        ``Bc`` is ``B``, or divides it: each condition then serves ``B / Bc`` consecutive samples.
        ``c`` may also be a pair (map, vector), see ``Condition``.
        """
        x1, x2 = x.split(self.split_sizes, dim=1)
        y1, logdet_first = self.transform(x1, self.subnet_first(x2, c))
        y2, logdet_second = self.transform(x2, self.subnet_second(y1, c))
        return torch.cat([y1, y2], dim=1), logdet_first + logdet_second

    def inverse(self, y: torch.Tensor, c: Condition | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """y: (B, C, H, W), c as in ``forward`` -> x: (B, C, H, W), logdet of the inverse: (B,)."""
        y1, y2 = y.split(self.split_sizes, dim=1)
        x2, logdet_second = self.inverse_transform(y2, self.subnet_second(y1, c))
        x1, logdet_first = self.inverse_transform(y1, self.subnet_first(x2, c))
        return torch.cat([x1, x2], dim=1), logdet_first + logdet_second
