"""``Colorizer``: conditioning network + conditional Glow, with sampling and release I/O."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from PIL import Image
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from cinn.conditioning_nets import ColorizationHead, ConditioningNet, PretrainingModel, build_conditioning_net
from cinn.conditioning_nets.quantization import ANNEALED_MEAN_TEMPERATURE
from cinn.config import ConfigError, from_dict, save_config
from cinn.errors import ReleaseError, UsageError
from cinn.glow import ConditionalGlow
from cinn.inference import Colorization, interpolate_latents, prepare_photo, recombine
from cinn.limits import MAX_WORKING_SIDE, PhotoLimits
from cinn.loss import bits_per_dim, negative_log_likelihood, sample_latents
from cinn.recipe import ModelConfig

CONFIG_FILE, WEIGHTS_FILE, CARD_FILE = "config.yaml", "model.safetensors", "README.md"
BASELINE_FILE = "baseline.safetensors"  # optional: the pretrained net + head, a deterministic baseline
GUIDE_CHANNELS = 2  # the guide's colour (a, b), appended to every level's condition map


class Colorizer(nn.Module):
    """Lightness -> conditioning features -> ConditionalGlow over ab (Ardizzone et al. 2019).

    With a colour guide (``config.guide``), the pretrained colorization head stays in the model:
    its mean colour ``g`` is two more channels of every level's condition map, and the flow maps
    the offset ``ab - g`` to the latents. The offset is a translation, so the likelihood stays
    exact (log-determinant 0) and samples centre on the head's colours rather than on gray.

    Args:
        config: the model section of a recipe.
        conditioning_net: an already built (e.g. pretrained) conditioning net; built from
            ``config`` if None.
    """

    def __init__(self, config: ModelConfig, conditioning_net: ConditioningNet | None = None):
        super().__init__()
        self.config = config
        first_stride = config.lightness_per_ab
        if conditioning_net is None:
            conditioning_net = conditioning_net_for(config)
        expected = tuple(first_stride * 2**level for level in range(config.flow.num_levels))
        if tuple(conditioning_net.strides) != expected:
            raise ValueError(f"conditioning net strides {conditioning_net.strides} != {expected} for this flow")
        self.conditioning_net = conditioning_net
        self.guide = None
        condition_channels = conditioning_net.out_channels
        if config.guide is not None:
            self.guide = ColorizationHead(
                conditioning_net.out_channels,
                conditioning_net.global_channels,
                config.guide.hidden_channels,
                output_level=config.guide.level,
            )
            condition_channels = tuple(channels + GUIDE_CHANNELS for channels in condition_channels)
        self.flow = ConditionalGlow(config.flow, condition_channels, global_channels=conditioning_net.global_channels)
        # Runs ``invert`` instead of torch when set, e.g. ``cinn.onnx.OnnxSampler`` (an exported graph).
        self.sampler: Callable[[torch.Tensor, list[torch.Tensor]], tuple[torch.Tensor, torch.Tensor]] | None = None

    def conditioning_modules(self) -> list[nn.Module]:
        """What turns lightness into conditions: the conditioning net, and the guide if there is one
        (trained, or frozen, together)."""
        return [self.conditioning_net] + ([self.guide] if self.guide is not None else [])

    def conditioning_parameters(self) -> list[nn.Parameter]:
        """The parameters of ``conditioning_modules``: what the conditioning learning rate applies to."""
        return [parameter for module in self.conditioning_modules() for parameter in module.parameters()]

    def conditions(self, lightness: torch.Tensor) -> list[torch.Tensor]:
        """lightness (B, 1, Hl, Wl) normalised -> the flow's condition tensors.

        With a guide, each level's map ends with the guide's colour (2 channels, normalised ab) at
        that level's resolution; the finest map runs at the ab size, so it carries the offset's centre.
        """
        features = self.conditioning_net(lightness)
        if self.guide is None:
            return features
        guide_ab = self.guide.predict_ab(features, self.config.guide.temperature)
        num_levels = self.config.flow.num_levels
        maps = [
            torch.cat([map_, self.guide_at(guide_ab, level)], dim=1) for level, map_ in enumerate(features[:num_levels])
        ]
        return maps + features[num_levels:]

    def guide_at(self, guide_ab: torch.Tensor, level: int) -> torch.Tensor:
        """The guide's colour (B, 2, h, w) at its own level, resized to ``level``: area-averaged when
        coarser, bilinear when finer. Levels halve the size, so the factors are fixed (which an ONNX
        graph needs: a resize to a size computed at run time does not export)."""
        factor = 2 ** abs(level - self.config.guide.level)
        if level > self.config.guide.level:
            return F.avg_pool2d(guide_ab, factor)
        if level < self.config.guide.level:
            return F.interpolate(guide_ab, scale_factor=factor, mode="bilinear", align_corners=False)
        return guide_ab

    def offset(self, ab: torch.Tensor, c: list[torch.Tensor], sign: int = -1) -> torch.Tensor:
        """``ab + sign * g`` for the guide's colour ``g`` in ``c`` (``ab`` unchanged without a guide).

        ``ab`` (B, 2, Ha, Wa) may hold several samples per condition (batch Bc dividing B), as the flow allows.
        """
        if self.guide is None:
            return ab
        centre = c[0][:, -GUIDE_CHANNELS:]
        per_condition = ab.unflatten(0, (centre.shape[0], -1))
        return (per_condition + sign * centre[:, None]).flatten(0, 1)

    def encode(self, ab: torch.Tensor, c: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """ab (B, 2, Ha, Wa) normalised, given the conditions ``c`` -> (zs, logdet (B,))."""
        return self.flow(self.offset(ab, c), c)

    def decode(self, zs: list[torch.Tensor], c: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-level latents given the conditions ``c`` -> (ab, logdet (B,) of the inverse pass)."""
        ab, logdet = self.flow.inverse(zs, c)
        return self.offset(ab, c, sign=1), logdet

    def initialize(self, lightness: torch.Tensor, ab: torch.Tensor) -> None:
        """Data-dependent initialisation of the flow's ActNorms from one batch; call once before training."""
        c = self.conditions(lightness)
        self.flow.initialize(self.offset(ab, c), c)

    def forward(self, lightness: torch.Tensor, ab: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """ab (B, 2, Ha, Wa) given lightness (B, 1, Hl, Wl), both normalised -> (zs, logdet (B,))."""
        return self.encode(ab, self.conditions(lightness))

    def nll(self, lightness: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
        """Exact negative log-likelihood of normalised ``ab`` given ``lightness``, (B,) bits/dim."""
        zs, logdet = self(lightness, ab)
        return bits_per_dim(negative_log_likelihood(zs, logdet), ab[0].numel())

    def sample(
        self,
        lightness: torch.Tensor,
        num_samples: int = 1,
        temperature: float | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Draws colorizations by inverting the flow from ``z ~ N(0, temperature^2 I)``.

        The conditioning net runs once per image; its features are shared by that image's samples.

        Args:
            lightness: (B, 1, Hl, Wl) normalised.
            num_samples: draws per image.
            temperature: standard deviation of z; the model's default (``config.temperature``) if None.

        Returns:
            ab: (B, num_samples, 2, Ha, Wa) normalised.
        """
        ab, _ = self.sample_with_likelihood(lightness, num_samples, temperature, generator)
        return ab

    def sample_with_likelihood(
        self,
        lightness: torch.Tensor,
        num_samples: int = 1,
        temperature: float | None = None,
        generator: torch.Generator | None = None,
        zs: list[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """As ``sample``, also returning each sample's exact NLL (B, num_samples) in bits/dim.

        The NLL comes free with the inverse pass: ``-log p(ab) = ||z||^2/2 + D log(2 pi)/2 +
        log|det d ab/dz|``. Pass ``zs`` (per-level, batch B * num_samples) to decode given latents.
        """
        batch = lightness.shape[0]
        temperature = self.sampling_temperature(temperature)
        if zs is None:
            shapes = self.latent_shapes(lightness)
            zs = sample_latents(shapes, batch * num_samples, temperature, generator, lightness.device, lightness.dtype)
        ab, logdet_inverse = self.invert(lightness, zs)
        bits = bits_per_dim(negative_log_likelihood(zs, -logdet_inverse), ab[0].numel())
        return ab.reshape(batch, num_samples, *ab.shape[1:]), bits.reshape(batch, num_samples)

    def invert(self, lightness: torch.Tensor, zs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Conditioning net + flow inverse, the part ``cinn.onnx`` exports: (ab, logdet of the inverse).

        One set of conditions serves all of an image's samples: the flow shares, never copies, it.
        """
        if self.sampler is not None and lightness.shape[0] == 1:
            return self.sampler(lightness, zs)
        return self.decode(zs, self.conditions(lightness))

    def latent_shapes(self, lightness: torch.Tensor) -> list[tuple[int, int, int]]:
        """Per-level latent (C, H, W) for the ab that goes with lightness (B, 1, Hl, Wl)."""
        height, width = (side // self.config.lightness_per_ab for side in lightness.shape[2:])
        return self.flow.latent_shapes(height, width)

    def sampling_temperature(self, temperature: float | None) -> float:
        """``temperature``, or the model's default if None; a negative or non-finite one is an error."""
        temperature = self.config.temperature if temperature is None else temperature
        if not math.isfinite(temperature) or temperature < 0:
            raise ValueError(f"temperature must be a finite number >= 0, got {temperature}")
        return temperature

    @property
    def input_multiple(self) -> int:
        """Lightness sides must be multiples of this, for the conditioning net and the flow's levels."""
        first_stride = self.config.lightness_per_ab
        return math.lcm(self.conditioning_net.input_multiple, first_stride * 2 ** (self.config.flow.num_levels - 1))

    @torch.no_grad()
    def colorize_photo(
        self,
        image: Image.Image | np.ndarray,
        num_samples: int = 8,
        temperature: float | None = None,
        generator: torch.Generator | None = None,
        working_side: int | None = None,
        limits: PhotoLimits | None = None,
        own_likelihood: bool = True,
    ) -> Colorization:
        """Colorizes a photo at its full resolution, with each sample's likelihood.

        A colour photo is first reduced to its lightness. The model runs at a working size whose
        short side is ``working_side`` (default: the training lightness size); each sampled ab is
        upsampled guided by the photo's own full-resolution lightness and recombined with it, so
        the lightness of the result is exactly the input's. Temperature 0 gives the single mode-like
        sample ``z = 0``, so only one image is returned.

        Args:
            image: a PIL image of any mode, or a uint8 array (H, W), (H, W, 3) or (H, W, 4).
            limits: largest photo and number of samples served (``PhotoLimits()`` if None).
            own_likelihood: for a colour photo, also the likelihood of its own colours
                (``original_bits_per_dim``; one more pass of the flow).

        Raises:
            UsageError: a photo, number of samples, temperature or working side beyond what is served.
        """
        image, limits = as_pil_image(image), limits or PhotoLimits()
        problem = limits.size_problem(*image.size)
        if problem is not None:
            raise UsageError(f"this photo cannot be colorized: {problem}")
        limits.check_samples(num_samples)
        side = working_side or self.config.lightness_size
        if not self.input_multiple <= side <= MAX_WORKING_SIDE:
            raise UsageError(
                f"the working side must be between {self.input_multiple} and {MAX_WORKING_SIDE}, got {side}"
            )
        device = next(self.parameters()).device
        try:
            temperature = self.sampling_temperature(temperature)
        except ValueError as error:
            raise UsageError(str(error)) from None
        full_lightness, lightness, alpha, _, ab_truth = prepare_photo(
            image, side, self.input_multiple, device, self.config.lightness_per_ab if own_likelihood else None
        )
        num_samples = 1 if temperature == 0 else num_samples
        ab, bits = self.sample_with_likelihood(lightness, num_samples, temperature, generator)
        if not bool(torch.isfinite(ab).all()):
            raise RuntimeError("the model produced non-finite colours; its weights or settings are broken")
        original = None if ab_truth is None else self.nll(lightness, ab_truth).item()
        images = recombine(ab[0], full_lightness, alpha)
        return Colorization(images, bits[0].tolist(), original, ab[0])

    def colorize(
        self,
        image: Image.Image,
        num_samples: int = 8,
        temperature: float | None = None,
        generator: torch.Generator | None = None,
    ) -> list[Image.Image]:
        """``num_samples`` different colorizations of a PIL photo at its full resolution."""
        return self.colorize_photo(image, num_samples, temperature, generator).images

    @torch.no_grad()
    def interpolate(
        self,
        image: Image.Image,
        num_frames: int = 8,
        temperature: float | None = None,
        generator: torch.Generator | None = None,
        working_side: int | None = None,
    ) -> list[Image.Image]:
        """Colorizations along a path in latent space between two random samples (temperature > 0)."""
        device = next(self.parameters()).device
        temperature = self.sampling_temperature(temperature)
        if temperature == 0:
            raise ValueError("a latent path needs a temperature above 0: at 0 every sample is the same")
        full_lightness, lightness, alpha, _, _ = prepare_photo(
            image, working_side or self.config.lightness_size, self.input_multiple, device
        )
        shapes = self.latent_shapes(lightness)
        ends = [sample_latents(shapes, 1, temperature, generator, device) for _ in range(2)]
        zs = interpolate_latents(ends[0], ends[1], num_frames)
        ab, _ = self.sample_with_likelihood(lightness, num_frames, temperature, zs=zs)
        return recombine(ab[0], full_lightness, alpha)

    def save_pretrained(self, directory: str | Path, card: str | None = None, **metadata: object) -> Path:
        """Writes a release: ``config.yaml``, ``model.safetensors`` (``metadata`` JSON-encoded in its
        header: where the weights came from) and a model card ``README.md``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_config(self.config, directory / CONFIG_FILE)
        tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in self.state_dict().items()}
        check_finite(tensors, "the model to save")
        save_file(tensors, directory / WEIGHTS_FILE, metadata={k: json.dumps(v) for k, v in metadata.items()})
        if card is not None:
            (directory / CARD_FILE).write_text(card, encoding="utf-8")
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu") -> Colorizer:
        """Loads a release written by ``save_pretrained``; needs no training config.

        Raises:
            ReleaseError: the folder is not a complete, readable release (the message names the file).
        """
        directory = Path(directory)
        if not directory.is_dir():
            raise ReleaseError(f"model release '{directory}' does not exist")
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            if not (directory / name).is_file():
                raise ReleaseError(f"'{directory}' is not a model release: it has no {name}")
        try:
            values = yaml.safe_load((directory / CONFIG_FILE).read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as error:
            raise ReleaseError(f"'{directory / CONFIG_FILE}' is not valid YAML ({type(error).__name__})") from None
        if not isinstance(values, dict):
            raise ReleaseError(f"'{directory / CONFIG_FILE}' must hold the model's settings, not {values!r}")
        try:
            config = from_dict(ModelConfig, values)
        except ConfigError as error:
            raise ReleaseError(f"{directory / CONFIG_FILE}: {error}") from None
        model = cls(config)
        try:
            tensors = load_file(directory / WEIGHTS_FILE, device=str(device))
        except (SafetensorError, OSError) as error:
            raise ReleaseError(f"'{directory / WEIGHTS_FILE}' is damaged or not safetensors ({error})") from None
        check_finite(tensors, f"'{directory / WEIGHTS_FILE}'")
        missing, unexpected = model.state_dict().keys() - tensors.keys(), tensors.keys() - model.state_dict().keys()
        if missing or unexpected:
            first = sorted(missing or unexpected)[0]
            problem = "lacks" if missing else "has an unknown tensor"
            raise ReleaseError(f"'{directory / WEIGHTS_FILE}' {problem} '{first}': it does not match its config.yaml")
        try:
            model.load_state_dict(tensors)
        except RuntimeError as error:  # a tensor of the wrong shape
            reason = str(error).strip().splitlines()[-1].strip()
            raise ReleaseError(f"'{directory / WEIGHTS_FILE}' does not match its config.yaml ({reason})") from None
        return model.to(device).eval()


def load_regression_baseline(directory: str | Path, config: ModelConfig, device: str | torch.device = "cpu"):
    """The release's pretrained conditioning net + colorization head (a ``PretrainingModel``, whose
    ``predict_ab`` is the deterministic regression baseline), or None if the release ships none.

    It decodes with the annealed-mean temperature the pretraining chose (metadata
    ``baseline_temperature``; Zhang et al.'s 0.38 for baselines written before it was recorded).
    """
    path = Path(directory) / BASELINE_FILE
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), "pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(path)
    except (SafetensorError, OSError) as error:
        raise ReleaseError(f"'{path}' is damaged or not safetensors ({error})") from None
    if "head_hidden_channels" not in metadata:
        raise ReleaseError(f"'{path}' lacks the 'head_hidden_channels' metadata written by pretrain_condnet.py.")
    hidden_channels = int(json.loads(metadata["head_hidden_channels"]))
    temperature = float(json.loads(metadata.get("baseline_temperature", str(ANNEALED_MEAN_TEMPERATURE))))
    head_level = int(json.loads(metadata.get("head_level", "0")))  # baselines written before it: the finest
    baseline = PretrainingModel(
        conditioning_net_for(config), hidden_channels, prediction_temperature=temperature, output_level=head_level
    )
    try:
        baseline.load_state_dict(tensors)
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[-1].strip()
        raise ReleaseError(f"'{path}' does not match the release's config.yaml ({reason})") from None
    return baseline.to(device).eval()


def as_pil_image(image: Image.Image | np.ndarray) -> Image.Image:
    """A PIL image as it is, or a uint8 array (H, W), (H, W, 3) or (H, W, 4) as one; a clear
    ``UsageError`` for anything else."""
    if isinstance(image, Image.Image):
        return image
    if (
        isinstance(image, np.ndarray)
        and image.dtype == np.uint8
        and (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4)))
    ):
        return Image.fromarray(image)
    description = f"{type(image).__name__} {getattr(image, 'dtype', '')} {tuple(getattr(image, 'shape', ()))}"
    raise UsageError(
        f"a photo is a PIL image (Image.open(path)) or a uint8 array of shape (H, W), (H, W, 3) or (H, W, 4); "
        f"got {description.strip()}"
    )


def check_finite(tensors: dict[str, torch.Tensor], what: str) -> None:
    """Raise ``ReleaseError`` naming the first tensor with a NaN or infinite value: such weights only
    ever give black or NaN images, so they are neither written nor used."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            count = int((~torch.isfinite(tensor)).sum())
            raise ReleaseError(f"{what} has {count} non-finite value(s) in '{name}' (a diverged training run?)")


def conditioning_net_for(config: ModelConfig) -> ConditioningNet:
    """The conditioning net a model config names, with levels and strides that fit its flow."""
    return build_conditioning_net(
        config.conditioning_net,
        num_levels=config.flow.num_levels,
        first_stride=config.lightness_per_ab,
        **config.conditioning_kwargs,
    )
