"""``cinn.metrics`` on hand-made cases whose answers are known without the code under test."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from cinn import metrics


def random_samples(batch: int = 3, count: int = 5, side: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    samples = 40 * torch.randn(batch, count, 2, side, side, generator=generator, dtype=torch.float64)
    truth = 40 * torch.randn(batch, 2, side, side, generator=generator, dtype=torch.float64)
    return samples, truth


def test_rmse_is_the_euclidean_ab_distance():
    truth = torch.zeros(2, 2, 2)
    ab = torch.zeros(2, 2, 2)
    ab[0, 0, 0], ab[1, 0, 0] = 3.0, 4.0  # one pixel at distance 5, three at 0
    assert metrics.rmse(ab, truth).item() == pytest.approx((25 / 4) ** 0.5)


def test_gray_baseline_error_is_the_rms_chroma():
    _, truth = random_samples()
    gray = torch.zeros_like(truth)[:, None]
    chroma = torch.hypot(truth[:, 0], truth[:, 1])
    expected = chroma.pow(2).mean(dim=(-2, -1)).sqrt()
    for error in (metrics.best_of_n_rmse_per_image, metrics.best_of_n_rmse_per_pixel, metrics.best_of_one_rmse):
        torch.testing.assert_close(error(gray, truth), expected)


def test_a_perfect_sample_has_zero_best_of_n_error():
    samples, truth = random_samples()
    samples[:, 3] = truth
    assert torch.all(metrics.best_of_n_rmse_per_image(samples, truth) == 0)
    assert torch.all(metrics.best_of_n_rmse_per_pixel(samples, truth) == 0)
    assert torch.all(metrics.best_of_one_rmse(samples, truth) > 0)  # the perfect one is not the first


def test_per_pixel_best_of_n_below_per_image_below_best_of_one():
    for seed in range(5):
        samples, truth = random_samples(seed=seed)
        per_pixel = metrics.best_of_n_rmse_per_pixel(samples, truth)
        per_image = metrics.best_of_n_rmse_per_image(samples, truth)
        first = metrics.best_of_one_rmse(samples, truth)
        assert torch.all(per_pixel <= per_image) and torch.all(per_image <= first)
        assert torch.all(per_pixel < per_image)  # strictly, for independent random samples


def test_per_image_best_of_n_picks_the_closest_whole_sample():
    truth = torch.zeros(2, 1, 2)
    near_left = torch.tensor([[[1.0, 10.0]], [[0.0, 0.0]]])  # errors 1 and 10 -> RMSE sqrt(50.5)
    near_right = torch.tensor([[[10.0, 2.0]], [[0.0, 0.0]]])  # errors 10 and 2 -> RMSE sqrt(52)
    samples = torch.stack([near_left, near_right])
    assert metrics.best_of_n_rmse_per_image(samples, truth).item() == pytest.approx(50.5**0.5)
    assert metrics.best_of_n_rmse_per_pixel(samples, truth).item() == pytest.approx(((1 + 4) / 2) ** 0.5)


def test_mean_of_symmetric_samples_is_exact():
    _, truth = random_samples()
    offset = 25 * torch.randn_like(truth)
    samples = torch.stack([truth + offset, truth - offset], dim=1)
    torch.testing.assert_close(metrics.mean_of_samples_rmse(samples, truth), torch.zeros(3, dtype=truth.dtype))
    assert torch.all(metrics.best_of_one_rmse(samples, truth) > 1)


def test_identical_samples_have_zero_diversity():
    _, truth = random_samples()
    samples = truth[:, None].expand(-1, 4, -1, -1, -1)
    assert torch.all(metrics.sample_variance(samples) == 0)
    assert torch.all(metrics.mean_pairwise_rmse(samples) == 0)
    assert torch.all(metrics.mean_pairwise_rmse(samples[:, :1]) == 0)  # one sample: no pairs


def test_diversity_of_two_constant_samples():
    first, second = torch.zeros(2, 3, 3), torch.zeros(2, 3, 3)
    first[0], second[0], second[1] = 6.0, -6.0, 5.0  # ab (6, 0) and (-6, 5) everywhere: distance 13
    samples = torch.stack([first, second])
    assert metrics.mean_pairwise_rmse(samples).item() == pytest.approx(13.0)
    # variance per channel with N = 2 is (difference / 2)^2: 36 + 6.25
    assert metrics.sample_variance(samples).item() == pytest.approx(36 + 6.25)


def test_variance_and_mean_squared_pair_distance_agree():
    samples, _ = random_samples(count=6)
    count = samples.shape[1]
    differences = samples[:, :, None] - samples[:, None, :]
    mean_squared_distance = differences.pow(2).sum(dim=3).mean(dim=(-2, -1)).sum(dim=(1, 2)) / (count * (count - 1))
    torch.testing.assert_close(metrics.sample_variance(samples), (count - 1) / (2 * count) * mean_squared_distance)


def test_colourfulness_of_a_gray_image_is_zero_and_grows_with_chroma():
    lightness = torch.linspace(10, 90, 16).reshape(1, 1, 4, 4)
    gray = metrics.lab_colourfulness(lightness, torch.zeros(1, 2, 4, 4))
    assert gray.abs().item() < 0.05  # only the rounding of the Lab -> sRGB matrices
    pale = metrics.lab_colourfulness(lightness, torch.full((1, 2, 4, 4), 10.0))
    vivid = metrics.lab_colourfulness(lightness, torch.full((1, 2, 4, 4), 30.0))
    assert 0 < pale.item() < vivid.item()


def test_histogram_distance():
    _, truth = random_samples()
    histogram = metrics.ab_histogram(truth)
    assert histogram.shape == (metrics.HISTOGRAM_BINS, metrics.HISTOGRAM_BINS)
    assert histogram.sum().item() == pytest.approx(1.0)
    # Positions do not matter: the pixels shuffled give the same histogram, distance exactly 0.
    shuffled = truth.flatten(-2)[..., torch.randperm(truth.shape[-1] * truth.shape[-2])].reshape(truth.shape)
    assert not torch.equal(shuffled, truth)
    assert metrics.histogram_intersection_distance(histogram, metrics.ab_histogram(shuffled)).item() == 0
    # A pixel at (a, b) = (15, -25) falls into bin ((15 + 110) // 10, (-25 + 110) // 10) = (12, 8).
    single = metrics.ab_histogram(torch.tensor([15.0, -25.0]).view(2, 1, 1))
    assert single[12, 8].item() == 1.0
    gray = metrics.ab_histogram(torch.zeros_like(truth))
    assert gray.max().item() == 1.0  # every pixel in one bin
    distance = metrics.histogram_intersection_distance(histogram, gray).item()
    assert 0 < distance <= 1
    # A set half inside one bin and half inside another: intersection 0.5 with the gray set.
    half = torch.zeros(2, 1, 2)
    half[0, 0, 1] = 50.0
    assert metrics.histogram_intersection_distance(metrics.ab_histogram(half), gray).item() == pytest.approx(0.5)


def test_bootstrap_interval_contains_the_mean_and_narrows_with_more_data():
    generator = torch.Generator().manual_seed(0)
    values = torch.randn(4000, generator=generator, dtype=torch.float64) + 3
    widths = []
    for count in (20, 200, 4000):
        summary = metrics.summarize(values[:count], seed=1)
        assert summary["low"] < summary["mean"] < summary["high"]
        assert summary["mean"] == pytest.approx(values[:count].mean().item())
        widths.append(summary["high"] - summary["low"])
    assert widths[0] > widths[1] > widths[2]
    # normal data: the 95% interval is about mean +- 1.96 sigma / sqrt(M)
    assert widths[2] == pytest.approx(2 * 1.96 / 4000**0.5, rel=0.15)
    assert metrics.bootstrap_interval(values[:50], seed=3) == metrics.bootstrap_interval(values[:50], seed=3)
    assert metrics.bootstrap_interval(torch.tensor([2.5])) == pytest.approx((2.5, 2.5))
    with pytest.raises(ValueError, match="at least one value"):
        metrics.bootstrap_interval(torch.tensor([]))


def test_frechet_distance_of_shifted_and_scaled_gaussians():
    rng = np.random.default_rng(0)
    features = rng.standard_normal((4000, 3))
    assert metrics.frechet_distance(features, features) == pytest.approx(0, abs=1e-6)
    shift = np.array([1.0, -2.0, 0.5])
    assert metrics.frechet_distance(features + shift, features) == pytest.approx(shift @ shift, rel=1e-6)
    # N(0, I) against N(0, 4 I) in 3D: tr(I + 4I - 2 * 2I) = 3
    assert metrics.frechet_distance(rng.standard_normal((20000, 3)) * 2, features) == pytest.approx(3, rel=0.1)
    with pytest.raises(ValueError, match=">= 2 feature vectors"):
        metrics.frechet_distance(features[:1], features)


@pytest.mark.parametrize("count", [5, 40])  # fewer and more feature vectors than dimensions
def test_frechet_distance_matches_the_sqrtm_formula(count):
    rng = np.random.default_rng(count)
    features = rng.standard_normal((count, 8)) @ rng.standard_normal((8, 8))
    reference = rng.standard_normal((count + 3, 8)) + 0.3
    covariance, reference_covariance = np.cov(features, rowvar=False), np.cov(reference, rowvar=False)
    root = scipy.linalg.sqrtm(covariance @ reference_covariance).real
    difference = features.mean(axis=0) - reference.mean(axis=0)
    expected = difference @ difference + np.trace(covariance + reference_covariance - 2 * root)
    assert metrics.frechet_distance(features, reference) == pytest.approx(expected, rel=1e-6)


def test_cast_and_local_error_on_a_tinted_copy():
    """A sample that is the truth plus one tint (3, -4) everywhere: cast 5, local 0, RMSE 5."""
    _, truth = random_samples(batch=2)
    tinted = (truth + torch.tensor([3.0, -4.0], dtype=truth.dtype)[:, None, None])[:, None]
    torch.testing.assert_close(metrics.cast_error(tinted, truth), torch.full((2,), 5.0, dtype=truth.dtype))
    torch.testing.assert_close(metrics.local_error(tinted, truth), torch.zeros(2, dtype=truth.dtype))
    torch.testing.assert_close(metrics.mean_sample_rmse(tinted, truth), torch.full((2,), 5.0, dtype=truth.dtype))


def test_gray_cast_error_is_the_norm_of_the_mean_colour():
    truth = torch.zeros(2, 2, 3)
    truth[0, :, 0], truth[1, :, 1] = 6.0, 24.0  # a = 2, b = 8 on average
    gray = torch.zeros(1, 2, 2, 3)
    assert metrics.cast_error(gray, truth).item() == pytest.approx(68**0.5)
    # What is left is the spread around the mean: a is 6 - 2 on 2 pixels and -2 on 4, b likewise.
    expected = ((16 * 2 + 4 * 4) / 6 + (256 * 2 + 64 * 4) / 6) ** 0.5
    assert metrics.local_error(gray, truth).item() == pytest.approx(expected)


def test_cast_and_local_error_split_every_samples_squared_error():
    samples, truth = random_samples(count=1)
    total = metrics.rmse(samples[:, 0], truth)
    parts = metrics.cast_error(samples, truth) ** 2 + metrics.local_error(samples, truth) ** 2
    torch.testing.assert_close(parts, total**2)


def test_mean_sample_rmse_averages_the_per_sample_errors():
    truth = torch.zeros(2, 1, 1)
    samples = torch.tensor([[[[3.0]], [[4.0]]], [[[0.0]], [[1.0]]]])  # errors 5 and 1
    assert metrics.mean_sample_rmse(samples, truth).item() == pytest.approx(3.0)
    assert metrics.mean_chroma(samples).tolist() == pytest.approx([5.0, 1.0])
