"""The standard normal prior and the MAP objective (Ardizzone et al. 2019, eq. 4-5)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

LOG_2PI = math.log(2.0 * math.pi)


def negative_log_likelihood(zs: Sequence[torch.Tensor], logdet: torch.Tensor) -> torch.Tensor:
    """Exact NLL in nats of the data under the flow with a standard normal prior.

    ``-log p(x) = ||z||^2 / 2 + D log(2 pi) / 2 - log |det dz/dx|``.

    Args:
        zs: latents, each (B, ...).
        logdet: (B,) log |det dz/dx| of the forward pass.

    Returns:
        (B,) NLL per sample.
    """
    squared_norm = sum(z.flatten(1).pow(2).sum(1) for z in zs)
    num_dims = sum(z[0].numel() for z in zs)
    return 0.5 * squared_norm + 0.5 * num_dims * LOG_2PI - logdet


def bits_per_dim(nll: torch.Tensor, num_dims: int) -> torch.Tensor:
    """NLL in nats over ``num_dims`` dimensions -> bits per dimension."""
    return nll / (num_dims * math.log(2.0))


def l2_penalty(parameters: Iterable[torch.Tensor]) -> torch.Tensor:
    """Sum of squared weights: the Gaussian weight prior of the MAP objective."""
    return sum(parameter.pow(2).sum() for parameter in parameters)


@dataclass
class MAPLoss:
    """The MAP objective and its two parts, each a scalar tensor.

    Attributes:
        total: ``nll_bits_per_dim + l2_weight * l2``, the value to minimise.
        nll_bits_per_dim: mean NLL of the batch in bits per dimension.
        l2: sum of squared trainable weights (before its coefficient).
    """

    total: torch.Tensor
    nll_bits_per_dim: torch.Tensor
    l2: torch.Tensor


def map_loss(
    zs: Sequence[torch.Tensor],
    logdet: torch.Tensor,
    parameters: Iterable[torch.Tensor],
    l2_weight: float,
) -> MAPLoss:
    """MAP loss: mean NLL in bits/dim plus ``l2_weight`` times the squared norm of ``parameters``.

    Expressing the NLL per dimension keeps ``l2_weight`` meaningful across image sizes.
    """
    num_dims = sum(z[0].numel() for z in zs)
    nll = bits_per_dim(negative_log_likelihood(zs, logdet), num_dims).mean()
    l2 = l2_penalty(p for p in parameters if p.requires_grad)
    l2 = l2 if torch.is_tensor(l2) else nll.new_zeros(())
    return MAPLoss(total=nll + l2_weight * l2, nll_bits_per_dim=nll, l2=l2)


def sample_latents(
    shapes: Sequence[tuple[int, ...]],
    batch_size: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> list[torch.Tensor]:
    """Draws ``z ~ N(0, temperature^2 I)`` for each latent shape (Glow's reduced-temperature sampling).

    Args:
        shapes: per-level (C, H, W), e.g. ``ConditionalGlow.latent_shapes``.
        batch_size: number of draws.
        generator: a ``torch.Generator`` on ``device`` for reproducible draws.
    """
    return [
        temperature * torch.randn(batch_size, *shape, generator=generator, device=device, dtype=dtype)
        for shape in shapes
    ]
