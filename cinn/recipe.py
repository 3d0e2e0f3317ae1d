"""The sections of a YAML recipe (``configs/*.yaml``): model, data, pretraining and training."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cinn.conditioning_nets import REGISTRY
from cinn.config import ConfigError, at_least, bounded, positive
from cinn.glow import GlowConfig

if TYPE_CHECKING:  # the data pipeline (torchvision) is for training only: loading a release skips it
    from cinn.data import DatasetConfig


@dataclass(frozen=True)
class GuideConfig:
    """The pretrained colorization head, kept in the model as the flow's colour guide (``Colorizer``).

    The head's mean colour for each pixel is given to every coupling as two more condition channels,
    and the flow models ab as an offset from it, so its samples centre on what the pretrained
    colorizer predicts rather than on gray; the offset is a translation, its log-determinant 0.

    Attributes:
        hidden_channels: the head's width, as pretrained (``pretrain.head_hidden_channels``).
        level: the level whose resolution the head predicts at, as pretrained (``pretrain.head_level``).
        temperature: annealed-mean temperature of its colour (1: the plain mean of its bins, the
            least-squares prediction; lower is more saturated).
    """

    hidden_channels: int = positive(64)
    level: int = at_least(0, 0)
    temperature: float = positive(1.0)


@dataclass(frozen=True)
class ModelConfig:
    """What a release needs to rebuild the model; saved as its ``config.yaml``.

    Attributes:
        conditioning_net: a name in ``conditioning_nets.REGISTRY``.
        conditioning_kwargs: its constructor arguments, except ``num_levels`` and ``first_stride``,
            which follow from the flow and the two resolutions.
        lightness_size: side of the lightness the conditioning net sees.
        ab_size: side of the ab the flow models; ``lightness_size`` must be a multiple of it.
        flow: the conditional Glow's shape.
        temperature: the model's default sampling temperature, chosen on validation photos (Glow's
            0.7 unless measured otherwise); a per-model choice, so the release carries it.
        guide: the pretrained head as the flow's colour guide, or None for none.
    """

    conditioning_net: str = "small"
    conditioning_kwargs: dict[str, Any] = field(default_factory=dict)
    lightness_size: int = positive(64)
    ab_size: int = positive(32)
    flow: GlowConfig = field(default_factory=GlowConfig)
    temperature: float = at_least(0.7, 0)
    guide: GuideConfig | None = None

    @property
    def lightness_per_ab(self) -> int:
        """Lightness pixels per ab pixel along a side (2 for lightness 64, ab 32): the flow's ab for a
        lightness of (H, W) is (H, W) divided by it, and the conditioning net's first stride."""
        return self.lightness_size // self.ab_size

    def __post_init__(self) -> None:
        if self.lightness_size % self.ab_size:
            raise ValueError(f"lightness_size {self.lightness_size} must be a multiple of ab_size {self.ab_size}")
        if self.ab_size % 2 ** (self.flow.num_levels - 1):
            raise ValueError(f"ab_size {self.ab_size} must be divisible by 2**(levels - 1)")
        if self.guide is not None and self.guide.level >= self.flow.num_levels:
            raise ValueError(
                f"guide.level must name one of the flow's {self.flow.num_levels} levels, got {self.guide.level}"
            )
        reserved = {"num_levels", "first_stride"} & set(self.conditioning_kwargs)
        if reserved:
            raise ValueError(f"conditioning_kwargs may not set {sorted(reserved)}: they follow from the flow")
        if self.conditioning_net not in REGISTRY:
            raise ValueError(
                f"conditioning_net must be one of {', '.join(sorted(REGISTRY))}, got {self.conditioning_net!r}"
            )
        accepted = set(inspect.signature(REGISTRY[self.conditioning_net]).parameters) - {"num_levels", "first_stride"}
        unknown = sorted(set(self.conditioning_kwargs) - accepted)
        if unknown:
            raise ValueError(
                f"conditioning_kwargs.{unknown[0]} is not a setting of the {self.conditioning_net!r} net "
                f"(its settings: {', '.join(sorted(accepted))})"
            )


@dataclass(frozen=True)
class DataConfig:
    """How photos become batches (the image sizes come from the model section).

    Attributes:
        ab_noise: std of the Gaussian noise on normalised ab in training (the cINN paper: 0.05).
        min_colourfulness: photos less colourful than this are skipped as grayscale.
        crop_scale: area range of the random resized crop in training.
        reduced_decoding: decode JPEGs at reduced size when that still covers the output.
        cache_images: keep decoded photos in memory (small photo sets only, e.g. the kit).
        val_fraction: share of the photos held out for validation when no list is given.
        num_workers: DataLoader worker processes.
    """

    ab_noise: float = at_least(0.05, 0)
    min_colourfulness: float = at_least(5.0, 0)
    crop_scale: tuple[float, ...] = bounded((0.3, 1.0), 0, 1, low_open=True)
    reduced_decoding: bool = True
    cache_images: bool = False
    val_fraction: float = bounded(0.1, 0, 1, high_open=True)
    num_workers: int = at_least(2, 0)

    def dataset_config(self, model: ModelConfig) -> DatasetConfig:
        from cinn.data import DatasetConfig

        return DatasetConfig(
            lightness_size=model.lightness_size,
            ab_size=model.ab_size,
            ab_noise=self.ab_noise,
            min_colourfulness=self.min_colourfulness,
            crop_scale=self.crop_scale,
            reduced_decoding=self.reduced_decoding,
            cache_images=self.cache_images,
        )


def check_schedule(schedule: str) -> None:
    if schedule not in ("cosine", "constant"):
        raise ValueError(f"schedule must be 'cosine' or 'constant', got {schedule!r}")


@dataclass(frozen=True)
class PretrainConfig:
    """Pretraining the conditioning net as a deterministic colorizer (classification over ab bins).

    Attributes:
        rebalance_mix: lambda of Zhang et al.'s class rebalancing, the uniform distribution's share
            (0.5 in the paper; 1 weighs every colour alike, i.e. no rebalancing).
        regression_weight: weight of the squared error of the predicted mean colour beside the
            cross-entropy (``ColorizationHead.loss``); 0 for the paper's pure classification.
        baseline_temperature: annealed-mean temperature of the deterministic baseline (0.38 in
            Zhang et al.; 1 is the plain mean, the least-squares prediction).
        head_level: the flow level whose resolution the colorization head predicts at (0: the
            finest, the ab size; 1: half of it, about 3x faster for the small nets).
        schedule: "constant" learning rate, or "cosine" (warmup, then cosine decay to
            ``min_lr_ratio``), as in training.
        export_weights: what ``backbone.safetensors`` and ``baseline.safetensors`` hold: the "last"
            step's weights, or the "best" validation loss's (``checkpoints/best.pt``).
    """

    steps: int = positive(2000)
    batch_size: int = positive(32)
    lr: float = positive(1e-3)
    weight_decay: float = at_least(1e-5, 0)
    rebalance_mix: float = bounded(0.5, 0, 1)
    regression_weight: float = at_least(0.0, 0)
    baseline_temperature: float = positive(0.38)
    head_hidden_channels: int = positive(64)
    head_level: int = at_least(0, 0)
    schedule: str = "constant"
    warmup_steps: int = at_least(0, 0)
    min_lr_ratio: float = bounded(0.05, 0, 1)
    export_weights: str = "last"
    bin_count_batches: int = positive(20)
    log_every: int = positive(20)
    val_every: int = positive(250)
    checkpoint_every: int = positive(250)
    seed: int = 0

    def __post_init__(self) -> None:
        check_schedule(self.schedule)
        if self.export_weights not in ("last", "best"):
            raise ValueError(f"export_weights must be 'last' or 'best', got {self.export_weights!r}")


@dataclass(frozen=True)
class TrainConfig:
    """Training the cINN with the MAP objective.

    Attributes:
        pretrained_conditioning: backbone weights from ``pretrain_condnet.py`` (None: train the
            conditioning net from scratch, end to end).
        init_from: a model release (``runs/NAME/release``, ``cinn/pretrained/default``) whose weights,
            all of them, the run starts from instead: fine-tuning a trained model. Its model settings
            must be the recipe's; the schedule and optimiser start afresh.
        freeze_conditioning_steps: steps with the conditioning net frozen before joint fine-tuning
            (-1: frozen for the whole run).
        conditioning_lr: learning rate of the conditioning net once it is fine-tuned.
        l2_weight: coefficient of the L2 weight penalty (per bits/dim of NLL).
        schedule: "cosine" (warmup then cosine decay to ``min_lr_ratio``) or "constant".
        max_bad_steps: consecutive non-finite steps that stop the run.
    """

    steps: int = positive(10000)
    batch_size: int = positive(32)
    lr: float = positive(1e-3)
    conditioning_lr: float = at_least(1e-4, 0)
    pretrained_conditioning: str | None = None
    init_from: str | None = None
    freeze_conditioning_steps: int = at_least(0, -1)
    l2_weight: float = at_least(1e-5, 0)
    adam_eps: float = positive(1e-6)
    warmup_steps: int = at_least(200, 0)
    schedule: str = "cosine"
    min_lr_ratio: float = bounded(0.05, 0, 1)
    grad_clip: float = positive(10.0)
    max_bad_steps: int = positive(20)
    log_every: int = positive(20)
    val_every: int = positive(500)
    val_batches: int = positive(8)
    image_every: int = positive(1000)
    checkpoint_every: int = positive(500)
    seed: int = 0
    device: str = "auto"
    bf16: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        check_schedule(self.schedule)


@dataclass(frozen=True)
class Recipe:
    """A whole ``configs/*.yaml`` file."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.pretrain.head_level >= self.model.flow.num_levels:
            raise ConfigError(
                f"pretrain.head_level must name one of the flow's {self.model.flow.num_levels} levels "
                f"(0 to {self.model.flow.num_levels - 1}), got {self.pretrain.head_level}"
            )
        guide, train = self.model.guide, self.train
        if train.init_from is not None and train.pretrained_conditioning is not None:
            raise ConfigError(
                "train.init_from and train.pretrained_conditioning both name the weights to start from: "
                "set one of them (train.pretrained_conditioning=null to fine-tune a release)"
            )
        if guide is not None and train.pretrained_conditioning is None and train.init_from is None:
            raise ConfigError(
                "model.guide needs train.pretrained_conditioning (the guide is the head pretrained with it) "
                "or train.init_from (a release that has one)"
            )
        if guide is not None and (guide.hidden_channels, guide.level) != (
            self.pretrain.head_hidden_channels,
            self.pretrain.head_level,
        ):
            raise ConfigError(
                f"model.guide (hidden_channels {guide.hidden_channels}, level {guide.level}) must be the head "
                f"the pretraining trains (pretrain.head_hidden_channels {self.pretrain.head_hidden_channels}, "
                f"pretrain.head_level {self.pretrain.head_level})"
            )
