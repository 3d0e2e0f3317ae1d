"""``Colorizer``: conditioning network + conditional Glow, with sampling and release I/O."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file, save_file
from torch import nn

from cinn.color import normalize_lightness, rgb_to_lab
from cinn.config import ConfigError, from_dict, save_config
from cinn.glow import ConditionalGlow
from cinn.loss import bits_per_dim, negative_log_likelihood, sample_latents
from cinn.recipe import ModelConfig
from conditioning_nets import ConditioningNet, build_conditioning_net

CONFIG_FILE, WEIGHTS_FILE, CARD_FILE = "config.yaml", "model.safetensors", "README.md"


class Colorizer(nn.Module):
    """Lightness -> conditioning features -> ConditionalGlow over ab (Ardizzone et al. 2019).

    Args:
        config: the model section of a recipe.
        conditioning_net: an already built (e.g. pretrained) conditioning net; built from
            ``config`` if None.
    """

    def __init__(self, config: ModelConfig, conditioning_net: ConditioningNet | None = None):
        super().__init__()
        self.config = config
        first_stride = config.lightness_size // config.ab_size
        if conditioning_net is None:
            conditioning_net = conditioning_net_for(config)
        expected = tuple(first_stride * 2**level for level in range(config.flow.num_levels))
        if tuple(conditioning_net.strides) != expected:
            raise ValueError(f"conditioning net strides {conditioning_net.strides} != {expected} for this flow")
        self.conditioning_net = conditioning_net
        self.flow = ConditionalGlow(
            config.flow, conditioning_net.out_channels, global_channels=conditioning_net.global_channels
        )

    def conditions(self, lightness: torch.Tensor) -> list[torch.Tensor]:
        """lightness (B, 1, Hl, Wl) normalised -> the flow's condition tensors."""
        return self.conditioning_net(lightness)

    def forward(self, lightness: torch.Tensor, ab: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """ab (B, 2, Ha, Wa) given lightness (B, 1, Hl, Wl), both normalised -> (zs, logdet (B,))."""
        return self.flow(ab, self.conditions(lightness))

    def nll(self, lightness: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
        """Exact negative log-likelihood of normalised ``ab`` given ``lightness``, (B,) bits/dim."""
        zs, logdet = self(lightness, ab)
        return bits_per_dim(negative_log_likelihood(zs, logdet), ab[0].numel())

    def sample(
        self,
        lightness: torch.Tensor,
        num_samples: int = 1,
        temperature: float = 0.7,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Draws colorizations by inverting the flow from ``z ~ N(0, temperature^2 I)``.

        The conditioning net runs once per image; its features are shared by that image's samples.

        Args:
            lightness: (B, 1, Hl, Wl) normalised.
            num_samples: draws per image.

        Returns:
            ab: (B, num_samples, 2, Ha, Wa) normalised.
        """
        batch = lightness.shape[0]
        conditions = [c.repeat_interleave(num_samples, dim=0) for c in self.conditions(lightness)]
        ab_height = lightness.shape[2] * self.config.ab_size // self.config.lightness_size
        ab_width = lightness.shape[3] * self.config.ab_size // self.config.lightness_size
        shapes = self.flow.latent_shapes(ab_height, ab_width)
        zs = sample_latents(shapes, batch * num_samples, temperature, generator, lightness.device, lightness.dtype)
        ab, _ = self.flow.inverse(zs, conditions)
        return ab.reshape(batch, num_samples, *ab.shape[1:])

    def save_pretrained(self, directory: str | Path, card: str | None = None, **metadata: str) -> Path:
        """Writes a release: ``config.yaml``, ``model.safetensors`` and a model card ``README.md``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_config(self.config, directory / CONFIG_FILE)
        tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in self.state_dict().items()}
        save_file(tensors, directory / WEIGHTS_FILE, metadata={k: json.dumps(v) for k, v in metadata.items()})
        if card is not None:
            (directory / CARD_FILE).write_text(card, encoding="utf-8")
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu") -> Colorizer:
        """Loads a release written by ``save_pretrained``; needs no training config."""
        directory = Path(directory)
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            if not (directory / name).is_file():
                raise FileNotFoundError(f"'{directory}' is not a model release: it has no {name}")
        values = yaml.safe_load((directory / CONFIG_FILE).read_text(encoding="utf-8"))
        try:
            config = from_dict(ModelConfig, values)
        except ConfigError as error:
            raise ConfigError(f"{directory / CONFIG_FILE}: {error}") from None
        model = cls(config)
        model.load_state_dict(load_file(directory / WEIGHTS_FILE, device=str(device)))
        return model.to(device).eval()


def conditioning_net_for(config: ModelConfig) -> ConditioningNet:
    """The conditioning net a model config names, with levels and strides that fit its flow."""
    return build_conditioning_net(
        config.conditioning_net,
        num_levels=config.flow.num_levels,
        first_stride=config.lightness_size // config.ab_size,
        **config.conditioning_kwargs,
    )


def lightness_from_rgb(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB (B, 3, H, W) in [0, 1] -> normalised lightness (B, 1, H, W)."""
    return normalize_lightness(rgb_to_lab(rgb)[:, :1])
