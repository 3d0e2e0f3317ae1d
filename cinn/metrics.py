"""Metrics for diverse colorization: sample errors, diversity, colour statistics, intervals, FID.

Every function is pure and works on ab in **Lab units** (multiply normalised ab by
``cinn.color.AB_SCALE`` first). Errors are Euclidean in the ab plane: the squared error of a pixel
is ``(a - a_true)^2 + (b - b_true)^2`` and an image's RMSE is the square root of its mean over
pixels, so the all-gray prediction (ab = 0) scores the RMS chroma ``sqrt(mean(a^2 + b^2))``.

Shapes: ``samples`` (..., N, 2, H, W) are N colorizations of one image, ``truth`` (..., 2, H, W) its
own ab; any leading batch dimensions are kept in the result. Best-of-n follows the cINN paper's
evaluation (Ardizzone et al. 2019, sec. 4.3): the error of the closest of n samples.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from cinn.color import lab_to_rgb
from cinn.pixels import colourfulness

# 2D ab histograms: square bins of 10 Lab units over [-110, 110]^2 (the sRGB gamut lies inside it);
# values outside fall into the edge bins.
HISTOGRAM_RANGE = 110.0
HISTOGRAM_BINS = 22


def squared_error(ab: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Per-pixel squared ab distance, (..., 2, H, W) x (..., 2, H, W) -> (..., H, W)."""
    return (ab - truth).pow(2).sum(dim=-3)


def rmse(ab: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Root mean squared ab distance over pixels, (..., 2, H, W) x (..., 2, H, W) -> (...)."""
    return squared_error(ab, truth).mean(dim=(-2, -1)).sqrt()


def best_of_n_rmse_per_image(samples: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """RMSE of the sample closest to the truth as a whole image: ``min_n rmse(sample_n, truth)``.

    Args:
        samples: (..., N, 2, H, W).
        truth: (..., 2, H, W).

    Returns:
        (...).
    """
    return rmse(samples, truth.unsqueeze(-4)).amin(dim=-1)


def best_of_n_rmse_per_pixel(samples: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """RMSE after picking, for every pixel and channel separately, the closest sample.

    ``sqrt(mean_pixels sum_channels min_n (sample_n - truth)^2)``, as the original cINN evaluation
    computed best-of-n. It mixes samples within one image, so it is never above the per-image one.

    Args:
        samples: (..., N, 2, H, W).
        truth: (..., 2, H, W).

    Returns:
        (...).
    """
    closest = (samples - truth.unsqueeze(-4)).pow(2).amin(dim=-4)
    return closest.sum(dim=-3).mean(dim=(-2, -1)).sqrt()


def best_of_one_rmse(samples: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """RMSE of the first sample alone (what a user who draws one colorization gets), (...)."""
    return rmse(samples[..., 0, :, :, :], truth)


def mean_of_samples_rmse(samples: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """RMSE of the per-pixel mean of the N samples, (...)."""
    return rmse(samples.mean(dim=-4), truth)


def mean_sample_rmse(samples: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """RMSE of a sample, averaged over the N samples: the expected error of one draw, (...).

    A steadier estimate of what a user drawing a single colorization gets than ``best_of_one_rmse``.
    """
    return rmse(samples, truth.unsqueeze(-4)).mean(dim=-1)


def cast_error(samples: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Distance between a sample's mean ab and the truth's, averaged over samples, (...).

    The error of one tint laid over the whole picture. With ``local_error`` it splits the RMSE
    exactly: ``rmse(sample)^2 = cast^2 + local^2`` for every sample (the image mean is an
    orthogonal projection). The all-gray prediction's cast error is the norm of the truth's mean ab.
    """
    difference = samples.mean(dim=(-2, -1)) - truth.mean(dim=(-2, -1)).unsqueeze(-2)
    return difference.pow(2).sum(dim=-1).sqrt().mean(dim=-1)


def local_error(samples: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """RMSE after removing each image's mean ab from sample and truth, averaged over samples, (...).

    What is left once the cast is forgiven: colours in the wrong places (see ``cast_error``).
    """
    centred_samples = samples - samples.mean(dim=(-2, -1), keepdim=True)
    centred_truth = truth - truth.mean(dim=(-2, -1), keepdim=True)
    return rmse(centred_samples, centred_truth.unsqueeze(-4)).mean(dim=-1)


def mean_chroma(ab: torch.Tensor) -> torch.Tensor:
    """Mean chroma ``sqrt(a^2 + b^2)`` over pixels, (..., 2, H, W) -> (...)."""
    return torch.hypot(ab[..., 0, :, :], ab[..., 1, :, :]).mean(dim=(-2, -1))


def sample_variance(samples: torch.Tensor) -> torch.Tensor:
    """Diversity as the variance of ab across samples: ``mean_pixels sum_channels var_n(ab)``.

    The variance is the population one (divided by N), in Lab units squared; identical samples
    give 0. It equals ``(N - 1) / (2 N)`` times the mean squared distance between two samples.

    Args:
        samples: (..., N, 2, H, W).

    Returns:
        (...).
    """
    return samples.var(dim=-4, unbiased=False).sum(dim=-3).mean(dim=(-2, -1))


def mean_pairwise_rmse(samples: torch.Tensor) -> torch.Tensor:
    """Diversity as the mean RMSE between two different samples, over the N (N - 1) / 2 pairs.

    A single sample (N = 1) has no pairs and gives 0. Pairs are taken one at a time so that
    full-resolution samples need no (N, N, 2, H, W) tensor.

    Args:
        samples: (..., N, 2, H, W).

    Returns:
        (...).
    """
    count = samples.shape[-4]
    total = torch.zeros(samples.shape[:-4], dtype=samples.dtype, device=samples.device)
    for first, second in itertools.combinations(range(count), 2):
        total = total + rmse(samples[..., first, :, :, :], samples[..., second, :, :, :])
    return total / max(count * (count - 1) // 2, 1)


def lab_colourfulness(lightness: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """Hasler & Suesstrunk (2003) colourfulness of Lab images, via sRGB (out-of-gamut clipped).

    Args:
        lightness: (..., 1, H, W) L in [0, 100], broadcastable to ``ab``'s leading dimensions.
        ab: (..., 2, H, W) in Lab units.

    Returns:
        (...) on the paper's 0-255 scale (0 for a gray image).
    """
    lightness = lightness.expand(*ab.shape[:-3], 1, *ab.shape[-2:])
    lab = torch.cat([lightness, ab], dim=-3)
    rgb = lab_to_rgb(lab.reshape(-1, *lab.shape[-3:])).reshape(lab.shape)
    return colourfulness(rgb)


def ab_histogram(ab: torch.Tensor) -> torch.Tensor:
    """Normalised 2D histogram of the (a, b) pairs of all pixels of all images given.

    Bins are ``HISTOGRAM_BINS`` squares of side ``2 HISTOGRAM_RANGE / HISTOGRAM_BINS`` (10 Lab
    units) over [-110, 110]^2; values outside land in the edge bins.

    Args:
        ab: (..., 2, H, W) in Lab units; every leading dimension is pooled.

    Returns:
        (HISTOGRAM_BINS, HISTOGRAM_BINS) probabilities summing to 1, indexed [a bin, b bin].
    """
    pairs = ab.movedim(-3, 0).reshape(2, -1)
    width = 2 * HISTOGRAM_RANGE / HISTOGRAM_BINS
    indices = ((pairs + HISTOGRAM_RANGE) / width).floor().long().clamp(0, HISTOGRAM_BINS - 1)
    counts = torch.bincount(indices[0] * HISTOGRAM_BINS + indices[1], minlength=HISTOGRAM_BINS**2)
    return (counts.double() / counts.sum()).reshape(HISTOGRAM_BINS, HISTOGRAM_BINS)


def histogram_intersection_distance(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """``1 - sum(min(p, q))`` of two normalised histograms (Swain & Ballard 1991), a scalar.

    0 for identical histograms, 1 for disjoint ones. Computed as the equal total-variation form
    ``sum(|p - q|) / 2``, which is exactly 0 for identical histograms (no round-off).
    """
    return 0.5 * (first - second).abs().sum()


def bootstrap_interval(
    values: torch.Tensor, confidence: float = 0.95, num_resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (Efron & Tibshirani 1993, ch. 13).

    Args:
        values: (M,) one number per image.
        confidence: coverage of the interval.
        num_resamples: bootstrap resamples of M values drawn with replacement.
        seed: seeds the resampling, so a report is reproducible.

    Returns:
        (low, high).
    """
    values = torch.as_tensor(values, dtype=torch.float64).flatten()
    if values.numel() == 0:
        raise ValueError("bootstrap_interval needs at least one value, got none.")
    generator = torch.Generator().manual_seed(seed)
    chunk = max(1, 4_000_000 // values.numel())  # keep the (chunk, M) index tensor small
    means = []
    for start in range(0, num_resamples, chunk):
        rows = min(chunk, num_resamples - start)
        indices = torch.randint(values.numel(), (rows, values.numel()), generator=generator)
        means.append(values[indices].mean(dim=1))
    tail = (1.0 - confidence) / 2.0
    low, high = torch.quantile(torch.cat(means), torch.tensor([tail, 1.0 - tail], dtype=torch.float64))
    return low.item(), high.item()


def summarize(values: torch.Tensor, seed: int = 0) -> dict[str, float]:
    """``{"mean", "low", "high"}``: the mean of (M,) values and its 95% bootstrap interval."""
    values = torch.as_tensor(values, dtype=torch.float64).flatten()
    low, high = bootstrap_interval(values, seed=seed)
    return {"mean": values.mean().item(), "low": low, "high": high}


def frechet_distance(features: np.ndarray, reference: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (Heusel et al. 2017, FID).

    ``|mu_1 - mu_2|^2 + tr(S_1) + tr(S_2) - 2 tr((S_1 S_2)^(1/2))``, with unbiased covariances.
    The last trace is the sum of the square roots of the (real, non-negative) eigenvalues of
    ``S_1 S_2``, found from symmetric matrices rather than ``scipy.linalg.sqrtm``: no complex
    round-off, and with fewer feature vectors than dimensions only their small Gram matrix is
    decomposed (exact, as every other eigenvalue is 0).

    Args:
        features: (M1, D), at least two rows.
        reference: (M2, D), at least two rows.
    """
    if len(features) < 2 or len(reference) < 2:
        raise ValueError(f"The Fréchet distance needs >= 2 feature vectors per set, got {len(features)} and "
                         f"{len(reference)}.")  # fmt: skip
    features, reference = np.asarray(features, np.float64), np.asarray(reference, np.float64)
    mean_difference = features.mean(axis=0) - reference.mean(axis=0)
    centred = features - features.mean(axis=0)
    centred_reference = reference - reference.mean(axis=0)
    scale = (len(features) - 1) * (len(reference) - 1)
    if max(len(features), len(reference)) <= features.shape[1]:
        # eig(X1^T X1 X2^T X2) = eig((X1 X2^T)(X1 X2^T)^T) = squared singular values of X1 X2^T
        root_trace = np.linalg.svd(centred @ centred_reference.T, compute_uv=False).sum() / np.sqrt(scale)
    else:
        covariance = centred.T @ centred / (len(features) - 1)
        values, vectors = np.linalg.eigh(centred_reference.T @ centred_reference / (len(reference) - 1))
        root = (vectors * np.sqrt(values.clip(min=0))) @ vectors.T
        root_trace = np.sqrt(np.linalg.eigvalsh(root @ covariance @ root).clip(min=0)).sum()
    traces = (centred**2).sum() / (len(features) - 1) + (centred_reference**2).sum() / (len(reference) - 1)
    return float(mean_difference @ mean_difference + traces - 2.0 * root_trace)
