"""The multi-scale conditional Glow of the colorization cINN (Ardizzone et al. 2019, section 4)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from cinn.blocks import (
    ActNorm,
    Condition,
    ConditionalAffineCoupling,
    ConditionalCoupling,
    ConditionalSplineCoupling,
    FixedOrthogonalMixing,
    HaarDownsampling,
    InvertibleConv1x1LU,
    InvertibleModule,
    InvertibleSequential,
    data_dependent_init,
)
from cinn.blocks.condition import convolution_layout
from cinn.config import ConfigError, from_dict, positive, to_dict

MIXINGS = {"orthogonal": FixedOrthogonalMixing, "lu": InvertibleConv1x1LU}
# A coupling type: a ConditionalCoupling subclass; its Settings are a recipe's flow.coupling_settings.
COUPLINGS: dict[str, type[ConditionalCoupling]] = {
    "affine": ConditionalAffineCoupling,
    "spline": ConditionalSplineCoupling,
}


@dataclass(frozen=True)
class GlowConfig:
    """Shape of a ``ConditionalGlow``; condition channels come from the conditioning network.

    Attributes:
        steps_per_level: coupling steps at each level, fine to coarse (its length is the number
            of levels; the paper's colorization model uses (4, 6, 6, 6)).
        hidden_channels: width of the coupling subnetworks at each level.
        coupling: the coupling type, a name in ``COUPLINGS``: "affine" (the cINN's, with a soft-clamped
            log-scale) or "spline" (rational-quadratic splines, Durkan et al. 2019).
        coupling_settings: that coupling's settings, the fields of its ``Settings`` (e.g. ``clamp`` of
            the affine one); omitted ones take their defaults, and the config keeps them all.
        mixing: channel mixing between couplings: "orthogonal" (fixed random rotation, the
            cINN's choice) or "lu" (Glow's learned LU 1x1 convolution).
        actnorm: put Glow's ActNorm at the start of every step.
        haar_scale: rescaling of the Haar coefficients (1 = orthonormal).
        seed: seed of the random rotations.
    """

    steps_per_level: tuple[int, ...] = positive((4, 6, 6, 6))
    hidden_channels: tuple[int, ...] = positive((64, 128, 128, 256))
    coupling: str = "affine"
    coupling_settings: dict[str, Any] = field(default_factory=dict)
    mixing: str = "orthogonal"
    actnorm: bool = False
    haar_scale: float = positive(1.0)
    seed: int = 0

    def __post_init__(self) -> None:
        if len(self.hidden_channels) != len(self.steps_per_level):
            raise ValueError(
                f"hidden_channels has {len(self.hidden_channels)} entries but steps_per_level has "
                f"{len(self.steps_per_level)}; give one width per level"
            )
        if self.mixing not in MIXINGS:
            raise ValueError(f"mixing must be one of {sorted(MIXINGS)}, got {self.mixing!r}")
        if self.coupling not in COUPLINGS:
            raise ValueError(f"coupling must be one of {sorted(COUPLINGS)}, got {self.coupling!r}")
        # Every setting written out, so that a saved config does not depend on later defaults.
        object.__setattr__(self, "coupling_settings", to_dict(self.coupling_config))

    @property
    def coupling_config(self) -> Any:
        """``coupling_settings`` as the coupling's ``Settings``; a wrong key, type or range is a ConfigError."""
        return from_dict(COUPLINGS[self.coupling].Settings, self.coupling_settings, prefix="coupling_settings.")

    @classmethod
    def prepare_values(cls, values: dict[str, Any], prefix: str) -> dict[str, Any]:
        """Checks ``coupling_settings`` against the coupling's ``Settings`` with the whole key in errors,
        and reads the old place of the clamp.

        Configs written before couplings were a family (releases up to 0.2.0) have ``clamp`` in the
        flow section: it is the affine coupling's ``coupling_settings.clamp``, and is read as that where
        neither ``coupling`` nor ``coupling_settings`` is given (with either, it is an error: a config
        that mixes the two places is ambiguous).
        """
        if "clamp" in values:
            if "coupling" in values or "coupling_settings" in values:
                raise ConfigError(
                    f"'{prefix}clamp' is the old place of the affine coupling's clamp; next to '{prefix}coupling' "
                    f"or '{prefix}coupling_settings' write it as '{prefix}coupling_settings.clamp'"
                )
            values["coupling_settings"] = {"clamp": values.pop("clamp")}
        coupling, settings = values.get("coupling", cls.coupling), values.get("coupling_settings", {})
        if isinstance(coupling, str) and coupling in COUPLINGS and isinstance(settings, dict):
            from_dict(COUPLINGS[coupling].Settings, settings, prefix=f"{prefix}coupling_settings.")
        return values

    @property
    def num_levels(self) -> int:
        return len(self.steps_per_level)


def glow_step(channels: int, condition_channels: int, hidden_channels: int, config: GlowConfig, seed: int):
    """One step: [ActNorm] -> channel mixing -> conditional coupling."""
    blocks: list[InvertibleModule] = [ActNorm(channels)] if config.actnorm else []
    blocks.append(MIXINGS[config.mixing](channels, seed=seed))
    coupling = COUPLINGS[config.coupling]
    blocks.append(coupling(channels, condition_channels, hidden_channels, config.coupling_config))
    return blocks


def level_layout(in_channels: int, num_levels: int) -> list[tuple[int, int]]:
    """(channels its steps run on, channels it splits off as its latent) of each level: the Haar
    downsampling before every level but the first multiplies the channels by 4; every level but the
    last hands half of them out (none when fewer than 4 remain), the last level all of them."""
    layout, channels = [], in_channels
    for level in range(num_levels):
        channels *= 4 if level > 0 else 1
        split = channels if level == num_levels - 1 else (channels // 2 if channels >= 4 else 0)
        layout.append((channels, split))
        channels -= split
    return layout


def level_size(height: int, width: int, level: int) -> tuple[int, int]:
    """(H, W) at which ``level`` runs for ab of ``height`` x ``width``: halved by each Haar downsampling."""
    return height >> level, width >> level


class ConditionalGlow(nn.Module):
    """Multi-scale conditional Glow mapping ab (B, 2, H, W) to one latent per level.

    Level ``k`` runs at ``H / 2**k``: it starts with a Haar downsampling (except level 0), runs
    its coupling steps conditioned on the ``k``-th condition map, then splits half of its
    channels off as that level's latent; the last level hands all of its channels out. Splits
    happen here and nowhere else.

    Args:
        config: the flow's shape.
        condition_channels: channels of each level's condition map (the conditioning network's
            ``out_channels``).
        global_channels: size of an optional global condition vector, broadcast over the
            coarsest level; 0 for none.
        in_channels: channels of the data (2 for ab).
    """

    def __init__(
        self,
        config: GlowConfig,
        condition_channels: Sequence[int],
        global_channels: int = 0,
        in_channels: int = 2,
    ):
        super().__init__()
        if len(condition_channels) != config.num_levels:
            raise ValueError(
                f"the flow has {config.num_levels} levels but the conditioning network gives "
                f"{len(condition_channels)} feature maps"
            )
        self.config = config
        self.in_channels = in_channels
        self.global_channels = global_channels
        self.levels = nn.ModuleList()
        layout = level_layout(in_channels, config.num_levels)
        seed = config.seed
        for level, (num_steps, (channels, _)) in enumerate(zip(config.steps_per_level, layout, strict=True)):
            blocks: list[InvertibleModule] = [HaarDownsampling(config.haar_scale)] if level > 0 else []
            level_condition = condition_channels[level]
            if level == config.num_levels - 1:
                level_condition += global_channels
            for _ in range(num_steps):
                blocks += glow_step(channels, level_condition, config.hidden_channels[level], config, seed)
                seed += 1
            self.levels.append(InvertibleSequential(*blocks))
        self.split_channels = tuple(split for _, split in layout)

    def latent_shapes(self, height: int, width: int) -> list[tuple[int, int, int]]:
        """(C, H, W) of each level's latent for ab of size ``height`` x ``width``."""
        sizes = [level_size(height, width, level) for level in range(self.config.num_levels)]
        return [(split, *size) for split, size in zip(self.split_channels, sizes, strict=True) if split]

    def _level_conditions(self, c: Sequence[torch.Tensor], height: int, width: int) -> list[Condition]:
        """Checks the conditions against the flow; the last level gets (map, global vector)."""
        expected = self.config.num_levels + (1 if self.global_channels else 0)
        if len(c) != expected:
            raise ValueError(f"expected {expected} condition tensors, got {len(c)}")
        maps = list(c[: self.config.num_levels])
        for level, condition in enumerate(maps):
            size = level_size(height, width, level)
            if tuple(condition.shape[2:]) != size:
                raise ValueError(
                    f"condition {level} has spatial size {tuple(condition.shape[2:])}, level {level} of "
                    f"the flow runs at {size}"
                )
        # Once per level here, rather than in each of the level's couplings.
        conditions: list[Condition] = [convolution_layout(condition) for condition in maps]
        if self.global_channels:
            vector = c[-1]
            if vector.shape != (maps[-1].shape[0], self.global_channels):
                raise ValueError(
                    f"the global condition has shape {tuple(vector.shape)}, expected "
                    f"({maps[-1].shape[0]}, {self.global_channels})"
                )
            # Broadcast over the last level's pixels and concatenated to its map, as far as the
            # couplings compute; they do it without materialising the broadcast.
            conditions[-1] = (conditions[-1], vector)
        return conditions

    def forward(self, x: torch.Tensor, c: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Data to latent.

        Args:
            x: ab, (B, in_channels, H, W) with H, W divisible by ``2**(num_levels - 1)``.
            c: one condition map per level, (Bc, condition_channels[k], H / 2**k, W / 2**k), then
                the (Bc, global_channels) vector if the flow has one. ``Bc`` is ``B`` or divides it:
                each condition then serves ``B / Bc`` consecutive samples, as if repeated with
                ``repeat_interleave`` but computed once (e.g. ``Bc = 1`` for samples of one photo).

        Returns:
            zs: the latents, shapes ``latent_shapes(H, W)`` with the batch dimension in front;
            logdet: (B,) log |det dz/dx|.
        """
        conditions = self._level_conditions(c, x.shape[2], x.shape[3])
        zs, logdet = [], x.new_zeros(x.shape[0])
        for level, condition, split in zip(self.levels, conditions, self.split_channels, strict=True):
            x, level_logdet = level(x, condition)
            logdet = logdet + level_logdet
            if split:
                zs.append(x[:, :split])
                x = x[:, split:]
        return zs, logdet

    def inverse(self, zs: Sequence[torch.Tensor], c: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent to data: ``zs`` as returned by ``forward`` -> (ab (B, in_channels, H, W), logdet (B,)).

        ``c`` as in ``forward``: pass a photo's conditions once (batch 1) for many samples of it.
        """
        # The finest condition map runs at the data's resolution; the finest latent may not.
        conditions = self._level_conditions(c, c[0].shape[2], c[0].shape[3])
        remaining = list(zs)
        x = remaining.pop()
        logdet = x.new_zeros(x.shape[0])
        for level in reversed(range(self.config.num_levels)):
            if level < self.config.num_levels - 1 and self.split_channels[level]:
                x = torch.cat([remaining.pop(), x], dim=1)
            x, level_logdet = self.levels[level].inverse(x, conditions[level])
            logdet = logdet + level_logdet
        return x, logdet

    def initialize(self, x: torch.Tensor, c: Sequence[torch.Tensor]) -> None:
        """Data-dependent initialisation of every ActNorm from one batch; call once before training."""
        with data_dependent_init(self):
            self(x, c)
