"""Quantised ab space and class rebalancing, for pretraining a conditioning net as a colorizer.

Zhang et al. 2016 ("Colorful Image Colorization", Sec. 2.1-2.2) treat colorization as classification
over ab bins of a 10-unit grid inside the sRGB gamut, with soft targets on the 5 nearest bins and
per-class weights that boost rare (saturated) colours; a plain regression loss instead averages the
modes and collapses to brown. All ab tensors here are normalised (``cinn.color.normalize_ab``); grid
spacing and sigmas are in Lab units.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import torch
from torch import nn

from cinn.color import AB_SCALE, rgb_to_lab

ANNEALED_MEAN_TEMPERATURE = 0.38  # Zhang et al. 2016, Sec. 2.3
GAMUT_SAMPLES_PER_CHANNEL = 64  # 64**3 sRGB colours; finer sampling finds the same bins


@functools.lru_cache(maxsize=4)
def in_gamut_bin_centers(grid_spacing: float = 10.0) -> torch.Tensor:
    """Centres of the ab grid cells reached by some sRGB colour, in Lab units.

    Deterministic: a regular 64^3 sampling of the RGB cube is converted to Lab (float64) and each
    colour is assigned to its nearest grid centre in [-110, 110]^2; the occupied centres are the bins.

    Returns:
        (Q, 2) centres (a, b), ordered by a then b; Q = 261 for the default 10-unit grid.
    """
    values = torch.linspace(0.0, 1.0, GAMUT_SAMPLES_PER_CHANNEL, dtype=torch.float64)
    rgb = torch.stack(torch.meshgrid(values, values, values, indexing="ij")).reshape(1, 3, -1, 1)
    ab = rgb_to_lab(rgb)[0, 1:].reshape(2, -1)
    axis = torch.arange(-AB_SCALE, AB_SCALE + grid_spacing / 2, grid_spacing, dtype=torch.float64)
    cell = torch.round((ab + AB_SCALE) / grid_spacing).long().clamp(0, len(axis) - 1)
    occupied = torch.zeros(len(axis), len(axis), dtype=torch.bool)
    occupied[cell[0], cell[1]] = True
    a_index, b_index = occupied.nonzero(as_tuple=True)
    return torch.stack([axis[a_index], axis[b_index]], dim=1).float()


class AbQuantizer(nn.Module):
    """Maps ab to bins and back; the bin centres are a buffer, so a state_dict carries them.

    Args:
        grid_spacing: distance between bin centres, Lab units (10 as Zhang).
        num_neighbors: bins sharing the soft target of one pixel (5 as Zhang).
        sigma: width of the Gaussian soft-encoding kernel, Lab units (5 as Zhang).
    """

    def __init__(self, grid_spacing: float = 10.0, num_neighbors: int = 5, sigma: float = 5.0) -> None:
        super().__init__()
        self.num_neighbors = num_neighbors
        self.sigma = sigma
        self.register_buffer("centers", in_gamut_bin_centers(grid_spacing).clone() / AB_SCALE)

    @property
    def num_bins(self) -> int:
        """Number of in-gamut bins Q."""
        return self.centers.shape[0]

    def nearest_bins(self, ab: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``count`` nearest bins of every pixel, nearest first.

        Args:
            ab: (B, 2, H, W), normalised.

        Returns:
            indices (B, count, H, W) long and distances (B, count, H, W) in Lab units.
        """
        batch, _, height, width = ab.shape
        points = ab.permute(0, 2, 3, 1).reshape(-1, 2).float()
        distances = torch.cdist(points, self.centers) * AB_SCALE
        distances, indices = distances.topk(count, dim=1, largest=False)
        unflatten = (batch, height, width, count)
        return (
            indices.reshape(unflatten).permute(0, 3, 1, 2),
            distances.reshape(unflatten).permute(0, 3, 1, 2),
        )

    def encode_sparse(self, ab: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Soft encoding as (indices, weights), both (B, num_neighbors, H, W); weights sum to 1."""
        indices, distances = self.nearest_bins(ab, self.num_neighbors)
        weights = torch.softmax(-(distances**2) / (2 * self.sigma**2), dim=1)
        return indices, weights

    def encode(self, ab: torch.Tensor) -> torch.Tensor:
        """ab: (B, 2, H, W) -> soft targets (B, Q, H, W): Gaussian weights on the nearest bins (Zhang)."""
        indices, weights = self.encode_sparse(ab)
        targets = ab.new_zeros(ab.shape[0], self.num_bins, *ab.shape[2:])
        return targets.scatter_(1, indices, weights)

    def encode_hard(self, ab: torch.Tensor) -> torch.Tensor:
        """ab: (B, 2, H, W) -> index of the nearest bin, (B, H, W) long."""
        return self.nearest_bins(ab, 1)[0][:, 0]

    def count_bins(self, ab: torch.Tensor) -> torch.Tensor:
        """ab: (B, 2, H, W) -> number of pixels nearest to each bin, (Q,) float64."""
        return torch.bincount(self.encode_hard(ab).flatten(), minlength=self.num_bins).double()

    def decode_annealed_mean(
        self, logits: torch.Tensor, temperature: float = ANNEALED_MEAN_TEMPERATURE
    ) -> torch.Tensor:
        """Annealed mean of the bin distribution (Zhang et al. 2016, Eq. 5).

        Args:
            logits: (B, Q, H, W) unnormalised log-probabilities.
            temperature: 1 gives the mean (desaturated), -> 0 the mode (patchy); 0.38 as Zhang.

        Returns:
            ab: (B, 2, H, W), normalised.
        """
        probabilities = torch.softmax(logits / temperature, dim=1)
        return torch.einsum("bqhw,qc->bchw", probabilities, self.centers.to(probabilities.dtype))


def rebalancing_weights(
    bin_counts: torch.Tensor, bin_centers: torch.Tensor, mix: float = 0.5, sigma: float = 5.0
) -> torch.Tensor:
    """Class-rebalancing weights of Zhang et al. 2016, Eq. 4.

    ``w ~ ((1 - mix) * p_smooth + mix / Q) ** -1``, scaled so that ``sum_q p_smooth[q] * w[q] = 1``,
    where ``p_smooth`` is the empirical bin distribution smoothed by a Gaussian over ab.

    Args:
        bin_counts: (Q,) pixel counts per bin (``AbQuantizer.count_bins``); not all zero.
        bin_centers: (Q, 2) normalised bin centres (``AbQuantizer.centers``).
        mix: weight of the uniform distribution (lambda = 0.5 in Zhang).
        sigma: smoothing width, Lab units (5 in Zhang).

    Returns:
        (Q,) float32 weights.
    """
    counts = bin_counts.double()
    if counts.sum() <= 0:
        raise ValueError("rebalancing_weights needs bin_counts with at least one pixel.")
    distances = torch.cdist(bin_centers.double(), bin_centers.double()) * AB_SCALE
    kernel = torch.exp(-(distances**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum(dim=0, keepdim=True)  # every bin spreads its mass, keeping it
    smoothed = kernel @ (counts / counts.sum())
    weights = 1.0 / ((1.0 - mix) * smoothed + mix / len(counts))
    return (weights / (smoothed * weights).sum()).float()


def accumulate_bin_counts(
    quantizer: AbQuantizer, ab_batches: Iterable[torch.Tensor], max_batches: int | None = None
) -> torch.Tensor:
    """Bin counts over a stream of ab batches, e.g. the first N batches of a data loader.

    Args:
        quantizer: defines the bins.
        ab_batches: iterable of (B, 2, H, W) normalised ab.
        max_batches: stop after this many batches; None for all.

    Returns:
        (Q,) float64 counts, to pass to ``ColorizationHead.set_bin_counts``.
    """
    counts = torch.zeros(quantizer.num_bins, dtype=torch.float64)
    for index, ab in enumerate(ab_batches):
        if max_batches is not None and index >= max_batches:
            break
        counts += quantizer.count_bins(ab.to(quantizer.centers.device)).cpu()
    return counts
