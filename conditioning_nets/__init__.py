"""Conditioning networks: normalised lightness -> one feature map per flow level.

``build_conditioning_net(name, **kwargs)`` builds a registered net; every net declares its
``out_channels``, ``strides`` and ``global_channels``, from which the flow is built.
"""

from __future__ import annotations

from cinn.conditioning_nets.base import ConditioningNet, level_strides
from cinn.conditioning_nets.head import ColorizationHead, PretrainingModel
from cinn.conditioning_nets.quantization import AbQuantizer, accumulate_bin_counts, rebalancing_weights
from cinn.conditioning_nets.small import SmallConditioningNet
from cinn.conditioning_nets.unet import UNetConditioningNet
from cinn.conditioning_nets.vgg import VggConditioningNet

REGISTRY: dict[str, type[ConditioningNet]] = {
    "small": SmallConditioningNet,
    "unet": UNetConditioningNet,
    "vgg": VggConditioningNet,
}


def build_conditioning_net(name: str, **kwargs) -> ConditioningNet:
    """Build the registered conditioning net ``name`` with constructor arguments ``kwargs``.

    Raises:
        ValueError: ``name`` is not registered; the message lists the known names.
    """
    if name not in REGISTRY:
        raise ValueError(f"Unknown conditioning net {name!r}; known names: {', '.join(sorted(REGISTRY))}.")
    return REGISTRY[name](**kwargs)


__all__ = [
    "REGISTRY",
    "AbQuantizer",
    "ColorizationHead",
    "ConditioningNet",
    "PretrainingModel",
    "SmallConditioningNet",
    "UNetConditioningNet",
    "VggConditioningNet",
    "accumulate_bin_counts",
    "build_conditioning_net",
    "level_strides",
    "rebalancing_weights",
]
