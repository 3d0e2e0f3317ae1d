"""Numerical references: Haar against its textbook definition, the rational-quadratic spline against
its formula written element by element, Lab against skimage, the prior against torch.distributions,
and the paper-shaped ConditionalGlow's exactness."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage import color as skcolor

from cinn import ConditionalGlow, GlowConfig, map_loss, negative_log_likelihood, sample_latents
from cinn.blocks import HaarDownsampling
from cinn.blocks.spline_coupling import MIN_BIN_SIZE, MIN_DERIVATIVE, rational_quadratic_spline
from cinn.color import (
    denormalize_ab,
    lab_to_rgb,
    normalize_ab,
    normalized_lab_to_rgb,
    rgb_to_lab,
    rgb_to_normalized_lab,
)


def textbook_haar(image: np.ndarray) -> np.ndarray:
    """One level of the 2D Haar transform of (C, H, W), written pixel by pixel."""
    channels, height, width = image.shape
    out = np.zeros((4 * channels, height // 2, width // 2))
    for ch in range(channels):
        for i in range(height // 2):
            for j in range(width // 2):
                a, b = image[ch, 2 * i, 2 * j], image[ch, 2 * i, 2 * j + 1]
                c, d = image[ch, 2 * i + 1, 2 * j], image[ch, 2 * i + 1, 2 * j + 1]
                out[ch, i, j] = (a + b + c + d) / 2
                out[channels + ch, i, j] = (a - b + c - d) / 2
                out[2 * channels + ch, i, j] = (a + b - c - d) / 2
                out[3 * channels + ch, i, j] = (a - b - c + d) / 2
    return out


def test_haar_matches_textbook_definition():
    image = np.random.default_rng(0).normal(size=(3, 6, 8))
    bands, logdet = HaarDownsampling()(torch.from_numpy(image)[None])
    np.testing.assert_allclose(bands[0].numpy(), textbook_haar(image), atol=1e-12)
    assert logdet.item() == 0.0
    # Orthonormal: the energy is preserved.
    assert math.isclose(bands.pow(2).sum().item(), float((image**2).sum()), rel_tol=1e-12)


def test_haar_rescaling_logdet():
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    bands, logdet = HaarDownsampling(scale=0.5)(x)
    np.testing.assert_allclose(bands[0].numpy(), 0.5 * textbook_haar(x[0].numpy()), atol=1e-12)
    torch.testing.assert_close(logdet, torch.full((2,), 48 * math.log(0.5), dtype=torch.float64))


def test_haar_rejects_odd_sizes():
    with pytest.raises(ValueError, match="even height and width"):
        HaarDownsampling()(torch.zeros(1, 2, 5, 4))


def reference_colours() -> np.ndarray:
    """(N, 3) sRGB colours: random ones, the corners of the RGB cube, and greys."""
    rng = np.random.default_rng(0)
    corners = np.array([[r, g, b] for r in (0, 1) for g in (0, 1) for b in (0, 1)], dtype=float)
    greys = np.linspace(0, 1, 11)[:, None].repeat(3, axis=1)
    return np.concatenate([rng.uniform(size=(500, 3)), corners, greys, rng.uniform(size=(100, 3)) ** 4])


def textbook_spline_knots(widths, heights, slopes, bound):
    """Knots (x_k, y_k) and slopes d_k of the spline from its unnormalised parameters (one element):
    softmax shares with a minimum, cumulated over [-bound, bound]; softplus slopes, 1 at the ends."""

    def positions(unnormalised):
        shares = np.exp(unnormalised) / np.exp(unnormalised).sum()
        shares = MIN_BIN_SIZE + (1 - MIN_BIN_SIZE * len(shares)) * shares
        return -bound + 2 * bound * np.concatenate([[0.0], np.cumsum(shares)])

    # softplus(u + shift) + minimum, the shift making it 1 at u = 0
    inner = MIN_DERIVATIVE + np.log1p(np.exp(slopes + np.log(np.expm1(1 - MIN_DERIVATIVE))))
    return positions(widths), positions(heights), np.concatenate([[1.0], inner, [1.0]])


def textbook_spline(x, x_knots, y_knots, derivatives):
    """Durkan et al. 2019, eq. 4: in bin k, with s = dy/dx of the bin and xi the position in it,
    y = y_k + dy (s xi^2 + d_k xi (1 - xi)) / (s + (d_k+1 + d_k - 2 s) xi (1 - xi)); identity outside."""
    if not x_knots[0] <= x <= x_knots[-1]:
        return x
    k = max(i for i in range(len(x_knots) - 1) if x_knots[i] <= x)
    width, height = x_knots[k + 1] - x_knots[k], y_knots[k + 1] - y_knots[k]
    s, xi = height / width, (x - x_knots[k]) / width
    numerator = height * (s * xi**2 + derivatives[k] * xi * (1 - xi))
    return y_knots[k] + numerator / (s + (derivatives[k + 1] + derivatives[k] - 2 * s) * xi * (1 - xi))


def test_spline_matches_its_formula_knots_slopes_and_bisection_inverse():
    generator = torch.Generator().manual_seed(0)
    bins, bound, points = 5, 2.0, 64
    widths, heights = (torch.randn(points, bins, generator=generator, dtype=torch.float64) for _ in range(2))
    slopes = torch.randn(points, bins - 1, generator=generator, dtype=torch.float64)
    x = 3 * torch.rand(points, generator=generator, dtype=torch.float64) - 1.5
    x[:4] = torch.tensor([-2.5, 2.5, -2.0, 2.0])  # two in the tails, two on the bound
    x.requires_grad_(True)
    y, log_slope = rational_quadratic_spline(x, widths, heights, slopes, bound)
    (derivative,) = torch.autograd.grad(y.sum(), x)
    for i in range(points):
        x_knots, y_knots, d = textbook_spline_knots(widths[i].numpy(), heights[i].numpy(), slopes[i].numpy(), bound)
        assert y[i].item() == pytest.approx(textbook_spline(x[i].item(), x_knots, y_knots, d), abs=1e-12)
        # Through every knot with its slope (Gregory & Delbourgo's interpolation conditions).
        at_knots = torch.tensor(x_knots[1:-1], requires_grad=True)
        parameters = [parameter[i].expand(bins - 1, -1) for parameter in (widths, heights, slopes)]
        through, _ = rational_quadratic_spline(at_knots, *parameters, bound)
        np.testing.assert_allclose(through.detach().numpy(), y_knots[1:-1], rtol=0, atol=1e-12)
        np.testing.assert_allclose(torch.autograd.grad(through.sum(), at_knots)[0].numpy(), d[1:-1], rtol=1e-9)
        # The inverse: bisection on the textbook formula (monotone), not the quadratic the code solves.
        low, high = -bound - 1, bound + 1
        for _ in range(80):
            middle = (low + high) / 2
            below = textbook_spline(middle, x_knots, y_knots, d) < y[i].item()
            low, high = (middle, high) if below else (low, middle)
        parameters = [parameter[i : i + 1] for parameter in (widths, heights, slopes)]
        x_back, log_slope_back = rational_quadratic_spline(y[i : i + 1].detach(), *parameters, bound, inverse=True)
        assert x_back.item() == pytest.approx(low, abs=1e-9)
        assert log_slope_back.item() == pytest.approx(-log_slope[i].item(), abs=1e-9)
    torch.testing.assert_close(log_slope, derivative.log(), rtol=1e-10, atol=1e-12)
    assert torch.equal(y[:2], x[:2]) and torch.equal(log_slope[:2], torch.zeros(2, dtype=torch.float64))


def test_rgb_to_lab_matches_skimage():
    rgb = reference_colours()
    expected = skcolor.rgb2lab(rgb[None])[0]
    ours = rgb_to_lab(torch.from_numpy(rgb).float().T[None, :, :, None])[0, :, :, 0].T.numpy()
    assert np.abs(ours - expected).max() < 0.1


def test_lab_to_rgb_matches_skimage():
    lab = skcolor.rgb2lab(reference_colours()[None])[0]
    expected = skcolor.lab2rgb(lab[None])[0]
    ours = lab_to_rgb(torch.from_numpy(lab).float().T[None, :, :, None])[0, :, :, 0].T.numpy()
    assert np.abs(ours - expected).max() < 1e-3
    # Round trip in Lab units, through our own code both ways.
    back = rgb_to_lab(torch.from_numpy(ours).T[None, :, :, None])[0, :, :, 0].T.numpy()
    assert np.abs(back - lab).max() < 0.1


def test_normalisation_round_trip_and_range():
    rgb = torch.rand(2, 3, 8, 8)
    lightness, ab = rgb_to_normalized_lab(rgb)
    assert lightness.shape == (2, 1, 8, 8) and ab.shape == (2, 2, 8, 8)
    assert lightness.min() >= -1 and lightness.max() <= 1 and ab.abs().max() <= 1.01
    torch.testing.assert_close(normalized_lab_to_rgb(lightness, ab), rgb, atol=2e-3, rtol=0)
    torch.testing.assert_close(denormalize_ab(normalize_ab(ab)), ab)


def test_nll_matches_torch_distributions():
    zs = [torch.randn(3, 2, 4, 4), torch.randn(3, 5)]
    logdet = torch.randn(3)
    normal = torch.distributions.Normal(0.0, 1.0)
    expected = -sum(normal.log_prob(z).flatten(1).sum(1) for z in zs) - logdet
    torch.testing.assert_close(negative_log_likelihood(zs, logdet), expected)


def test_map_loss_reports_both_terms():
    zs, logdet = [torch.zeros(2, 1, 2, 2)], torch.zeros(2)
    weights = [torch.full((3,), 2.0, requires_grad=True), torch.ones(4, requires_grad=False)]
    loss = map_loss(zs, logdet, weights, l2_weight=0.1)
    expected_bpd = 0.5 * math.log(2 * math.pi) / math.log(2)  # z = 0: only the normaliser
    assert math.isclose(loss.nll_bits_per_dim.item(), expected_bpd, rel_tol=1e-6)
    assert loss.l2.item() == 12.0  # frozen weights carry no penalty
    assert math.isclose(loss.total.item(), expected_bpd + 1.2, rel_tol=1e-6)


def test_sample_latents_temperature_and_seed():
    shapes = [(4, 16, 16), (8, 8, 8)]
    draws = sample_latents(shapes, 64, temperature=0.7, generator=torch.Generator().manual_seed(1))
    assert [tuple(z.shape[1:]) for z in draws] == shapes
    assert abs(torch.cat([z.flatten() for z in draws]).std().item() - 0.7) < 0.01
    again = sample_latents(shapes, 64, temperature=0.7, generator=torch.Generator().manual_seed(1))
    assert all(torch.equal(a, b) for a, b in zip(draws, again, strict=True))


def paper_shaped_glow(dtype=torch.float32) -> ConditionalGlow:
    """ab 2x64x64, 4 levels (64, 32, 16, 8), Haar between levels, fixed orthogonal mixing."""
    torch.manual_seed(0)
    config = GlowConfig(steps_per_level=(4, 6, 6, 6), hidden_channels=(32, 64, 64, 64))
    glow = ConditionalGlow(config, condition_channels=(8, 16, 16, 32), global_channels=16)
    with torch.no_grad():
        for parameter in glow.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    return glow.to(dtype)


def paper_conditions(batch: int, dtype=torch.float32) -> list[torch.Tensor]:
    sizes = [(8, 64), (16, 32), (16, 16), (32, 8)]
    return [torch.randn(batch, ch, s, s, dtype=dtype) for ch, s in sizes] + [torch.randn(batch, 16, dtype=dtype)]


def test_paper_shaped_glow_reconstructs_in_float32():
    glow = paper_shaped_glow()
    ab = 0.3 * torch.randn(4, 2, 64, 64)
    conditions = paper_conditions(4)
    with torch.no_grad():
        zs, logdet = glow(ab, conditions)
        assert [tuple(z.shape[1:]) for z in zs] == glow.latent_shapes(64, 64)
        assert sum(z[0].numel() for z in zs) == 2 * 64 * 64
        ab_back, logdet_inverse = glow.inverse(zs, conditions)
    assert (ab_back - ab).abs().max().item() < 1e-4
    assert (logdet + logdet_inverse).abs().max().item() < 1e-2  # a sum over 8192 dimensions


def test_flow_conditions_are_checked():
    glow = paper_shaped_glow()
    conditions = paper_conditions(1)
    with pytest.raises(ValueError, match="condition 1 has spatial size"):
        glow(torch.zeros(1, 2, 64, 64), conditions[:1] + [torch.zeros(1, 16, 16, 16)] + conditions[2:])
    with pytest.raises(ValueError, match="expected 5 condition tensors"):
        glow(torch.zeros(1, 2, 64, 64), conditions[:4])
    with pytest.raises(ValueError, match="one width per level"):
        GlowConfig(steps_per_level=(1, 2), hidden_channels=(8,))
