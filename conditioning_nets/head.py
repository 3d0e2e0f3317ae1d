"""Colorization head: pretrains a conditioning net as a deterministic colorizer (Zhang et al. 2016).

The cINN paper (Ardizzone et al. 2019, Sec. 4.3) first trains the conditioning network as a plain
colorizer and then uses its features as the flow's condition. ``PretrainingModel`` is that
colorizer: backbone -> ``ColorizationHead`` -> logits over the ab bins of ``AbQuantizer``, trained
with the class-rebalanced cross-entropy of Zhang et al. 2016 (Eq. 2-4), decoded by the annealed
mean. Its ``predict_ab`` doubles as the deterministic baseline the flow's samples are compared to.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from cinn.conditioning_nets.base import ConditioningNet, conv_block
from cinn.conditioning_nets.quantization import ANNEALED_MEAN_TEMPERATURE, AbQuantizer, rebalancing_weights
from torch import nn

from cinn.color import AB_SCALE

BIN_SPACING = 10.0  # Lab units; the unit of the regression term (``AbQuantizer``'s default grid)


def resize_ab(ab: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """ab: (B, 2, H, W) -> (B, 2, *size); area averaging when shrinking, bilinear otherwise."""
    if tuple(ab.shape[-2:]) == tuple(size):
        return ab
    shrinking = ab.shape[-2] >= size[0] and ab.shape[-1] >= size[1]
    if shrinking:
        return F.interpolate(ab, size=size, mode="area")
    return F.interpolate(ab, size=size, mode="bilinear", align_corners=False)


class ColorizationHead(nn.Module):
    """Per-level maps -> logits over the ab bins, at the resolution of level ``output_level``'s map.

    Every level map is projected to ``hidden_channels`` by a 1x1 conv and resized (bilinear) to
    the output level's map; they are summed together with a projection of the global vector, then a
    conv3x3 block and a 1x1 conv give the logits. The head costs more than a small backbone at the
    finest level (its conv3x3 and the per-pixel softmax over ~260 bins run at the ab resolution);
    ``output_level=1`` predicts at half that resolution: pretraining of the ``unet`` net is about 3x
    faster (35 -> 106 images/s on a 2-core CPU). The pixel statistics used by the rebalancing live
    in the buffers ``bin_counts`` (Q,) and ``class_weights`` (Q,), so a state_dict carries them.

    Args:
        in_channels: channels of the level maps, fine to coarse (``ConditioningNet.out_channels``).
        global_channels: size of the global vector, 0 if none (``ConditioningNet.global_channels``).
        hidden_channels: common width the levels are projected to.
        quantizer: the ab bins; a default ``AbQuantizer()`` if None.
        output_level: the level whose resolution the logits have (0: the finest).
    """

    def __init__(
        self,
        in_channels: tuple[int, ...],
        global_channels: int = 0,
        hidden_channels: int = 64,
        quantizer: AbQuantizer | None = None,
        output_level: int = 0,
    ) -> None:
        super().__init__()
        if not 0 <= output_level < len(in_channels):
            raise ValueError(f"output_level must be one of the {len(in_channels)} levels, got {output_level}.")
        self.quantizer = quantizer if quantizer is not None else AbQuantizer()
        self.num_levels = len(in_channels)
        self.output_level = output_level
        self.global_channels = global_channels
        self.projections = nn.ModuleList(nn.Conv2d(channels, hidden_channels, 1) for channels in in_channels)
        self.global_projection = nn.Linear(global_channels, hidden_channels) if global_channels else None
        self.trunk = nn.Sequential(
            nn.ReLU(),
            conv_block(hidden_channels, hidden_channels),
            nn.Conv2d(hidden_channels, self.quantizer.num_bins, 1),
        )
        num_bins = self.quantizer.num_bins
        self.register_buffer("bin_counts", torch.zeros(num_bins, dtype=torch.float64))
        self.register_buffer("class_weights", torch.ones(num_bins))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Logits over the ab bins.

        Args:
            features: a conditioning net's output: maps (B, in_channels[k], H_k, W_k), fine to
                coarse, then (B, global_channels) iff global_channels > 0.

        Returns:
            logits: (B, Q, H_k, W_k) at the output level k.
        """
        expected = self.num_levels + (1 if self.global_channels else 0)
        if len(features) != expected:
            raise ValueError(f"ColorizationHead expects {expected} feature tensors, got {len(features)}.")
        size = features[self.output_level].shape[-2:]
        hidden = sum(
            F.interpolate(projection(level), size=size, mode="bilinear", align_corners=False)
            for projection, level in zip(self.projections, features[: self.num_levels], strict=True)
        )
        if self.global_projection is not None:
            hidden = hidden + self.global_projection(features[-1])[:, :, None, None]
        return self.trunk(hidden)

    @torch.no_grad()
    def set_bin_counts(self, bin_counts: torch.Tensor, mix: float = 0.5, sigma: float = 5.0) -> None:
        """Store pixel counts per bin (``accumulate_bin_counts``) and the rebalancing weights from them.

        Args:
            bin_counts: (Q,) counts.
            mix, sigma: see ``rebalancing_weights``.
        """
        self.bin_counts.copy_(bin_counts)
        weights = rebalancing_weights(self.bin_counts, self.quantizer.centers, mix=mix, sigma=sigma)
        self.class_weights.copy_(weights)

    def loss(
        self,
        logits: torch.Tensor,
        ab_target: torch.Tensor,
        weights: torch.Tensor | None = None,
        regression_weight: float = 0.0,
    ) -> torch.Tensor:
        """Class-rebalanced soft-target cross-entropy (Zhang et al. 2016, Eq. 2), mean over pixels,
        plus ``regression_weight`` times the squared error of the predicted mean colour.

        The mean of the bin distribution is the prediction that minimises the squared ab error; its
        loss term ties the distribution's centre to the true colour, where the cross-entropy alone
        (above all with rebalancing) rewards saturated guesses.

        Args:
            logits: (B, Q, h, w).
            ab_target: (B, 2, H, W) normalised ab, resized to (h, w) here.
            weights: (Q,) per-bin weights; the ``class_weights`` buffer if None (all ones until
                ``set_bin_counts`` is called).
            regression_weight: weight of the mean's squared error, measured in units of the bin
                spacing (10 Lab units), summed over a and b and averaged over pixels.

        Returns:
            Scalar loss.
        """
        weights = self.class_weights if weights is None else weights
        ab = resize_ab(ab_target, logits.shape[-2:])
        with torch.no_grad():
            indices, target_weights = self.quantizer.encode_sparse(ab)
        log_probabilities = torch.log_softmax(logits.float(), dim=1)
        cross_entropy = -(log_probabilities.gather(1, indices) * target_weights).sum(dim=1)
        # Each pixel is weighted by the class of its nearest bin, v(Z) = w[argmax Z] in Zhang (Eq. 3).
        loss = (weights[indices[:, 0]] * cross_entropy).mean()
        if regression_weight:
            mean = torch.einsum("bqhw,qc->bchw", log_probabilities.exp(), self.quantizer.centers)
            squared = ((mean - ab.float()) * (AB_SCALE / BIN_SPACING)).pow(2).sum(dim=1)
            loss = loss + regression_weight * squared.mean()
        return loss

    def predict_ab(self, features: list[torch.Tensor], temperature: float = ANNEALED_MEAN_TEMPERATURE) -> torch.Tensor:
        """features (as ``forward``) -> annealed-mean ab (B, 2, H_k, W_k) at the output level, normalised."""
        return self.quantizer.decode_annealed_mean(self(features), temperature)


class PretrainingModel(nn.Module):
    """A conditioning net with a colorization head: lightness -> ab bins.

    Args:
        backbone: the conditioning net to pretrain; ``model.backbone`` is then reused by the flow.
        hidden_channels: width of the head.
        quantizer: the ab bins; a default ``AbQuantizer()`` if None.
        prediction_temperature: default annealed-mean temperature of ``predict_ab``.
        output_level: the level whose resolution the head predicts at (``ColorizationHead``).
    """

    def __init__(
        self,
        backbone: ConditioningNet,
        hidden_channels: int = 64,
        quantizer: AbQuantizer | None = None,
        prediction_temperature: float = ANNEALED_MEAN_TEMPERATURE,
        output_level: int = 0,
    ) -> None:
        super().__init__()
        self.prediction_temperature = prediction_temperature
        self.backbone = backbone
        self.head = ColorizationHead(
            backbone.out_channels, backbone.global_channels, hidden_channels, quantizer, output_level
        )

    def forward(self, lightness: torch.Tensor) -> torch.Tensor:
        """lightness: (B, 1, H, W) normalised -> logits (B, Q, H / strides[k], W / strides[k]) at the output level k."""
        return self.head(self.backbone(lightness))

    def loss(self, lightness: torch.Tensor, ab: torch.Tensor, regression_weight: float = 0.0) -> torch.Tensor:
        """``ColorizationHead.loss`` of lightness (B, 1, H, W) against ab (B, 2, H', W'), both normalised."""
        return self.head.loss(self(lightness), ab, regression_weight=regression_weight)

    @torch.no_grad()
    def predict_ab(
        self,
        lightness: torch.Tensor,
        out_size: tuple[int, int] | None = None,
        temperature: float | None = None,
    ) -> torch.Tensor:
        """Deterministic colorization.

        Args:
            lightness: (B, 1, H, W) normalised.
            out_size: (height, width) to resize to (bilinear); the output level's size if None.
            temperature: annealed-mean temperature; ``prediction_temperature`` if None.

        Returns:
            ab: (B, 2, *out_size) normalised.
        """
        temperature = self.prediction_temperature if temperature is None else temperature
        ab = self.head.quantizer.decode_annealed_mean(self(lightness), temperature)
        if out_size is not None:
            ab = F.interpolate(ab, size=out_size, mode="bilinear", align_corners=False)
        return ab
