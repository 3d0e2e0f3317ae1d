"""Conditioning nets: declared shapes, input checks, ab quantisation, rebalancing, pretraining head."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.color
import torch
from cinn.conditioning_nets import (
    REGISTRY,
    AbQuantizer,
    PretrainingModel,
    accumulate_bin_counts,
    build_conditioning_net,
    level_strides,
    rebalancing_weights,
)

from cinn.color import AB_SCALE

# (registry name, constructor arguments, lightness sizes (H, W) to run)
NETWORK_CASES = [
    ("small", {}, [(64, 64), (32, 48)]),
    ("small", {"num_levels": 3, "first_stride": 1, "global_channels": 16, "width": 8}, [(32, 32), (12, 8)]),
    ("small", {"num_levels": 1, "first_stride": 4, "blocks_per_level": 0}, [(8, 16)]),
    ("unet", {}, [(64, 64), (32, 48)]),
    ("unet", {"num_levels": 3, "first_stride": 4, "global_channels": 16, "width": 8}, [(64, 64), (48, 32)]),
    ("unet", {"num_levels": 1, "first_stride": 2, "blocks_per_level": 0}, [(8, 16)]),
    ("vgg", {}, [(64, 64), (32, 96)]),
    ("vgg", {"num_levels": 2, "first_stride": 8, "global_channels": 0}, [(16, 32)]),
    ("vgg", {"num_levels": 5, "first_stride": 2, "level_channels": (8, 8, 16, 16, 32)}, [(32, 32)]),
]


def test_registry_covers_every_network() -> None:
    assert set(REGISTRY) == {"small", "unet", "vgg"}
    assert {name for name, _, _ in NETWORK_CASES} == set(REGISTRY)


@pytest.mark.parametrize(("name", "kwargs", "sizes"), NETWORK_CASES)
def test_outputs_match_declared_shapes(name: str, kwargs: dict, sizes: list[tuple[int, int]]) -> None:
    torch.manual_seed(0)
    net = build_conditioning_net(name, **kwargs)
    num_levels = kwargs.get("num_levels", 4)
    assert len(net.out_channels) == len(net.strides) == num_levels
    assert all(coarse == 2 * fine for fine, coarse in zip(net.strides, net.strides[1:], strict=False))
    assert net.strides[0] == kwargs.get("first_stride", net.strides[0])
    for height, width in sizes:
        outputs = net(torch.randn(2, 1, height, width))
        assert len(outputs) == num_levels + (1 if net.global_channels else 0)
        for level, (channels, stride) in enumerate(zip(net.out_channels, net.strides, strict=True)):
            assert outputs[level].shape == (2, channels, height // stride, width // stride)
            assert torch.isfinite(outputs[level]).all()
        if net.global_channels:
            assert outputs[-1].shape == (2, net.global_channels)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_one_image_is_independent_of_its_batch(name: str) -> None:
    torch.manual_seed(0)
    net = build_conditioning_net(name).train()
    lightness = torch.randn(3, 1, 32, 32)
    alone = net(lightness[:1])
    in_batch = net(lightness)
    for single, batched in zip(alone, in_batch, strict=True):
        torch.testing.assert_close(single, batched[:1], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(("name", "size"), [("small", (64, 60)), ("small", (30, 64)), ("vgg", (64, 48))])
def test_bad_input_size_names_the_required_multiple(name: str, size: tuple[int, int]) -> None:
    net = build_conditioning_net(name)
    with pytest.raises(ValueError, match=f"multiples of {net.input_multiple}"):
        net(torch.zeros(1, 1, *size))


def test_wrong_channel_count_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        build_conditioning_net("small")(torch.zeros(1, 3, 64, 64))


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(ValueError, match="'resnet'.*small, unet, vgg"):
        build_conditioning_net("resnet")


@pytest.mark.parametrize(("first_stride", "num_levels"), [(3, 2), (2, 0), (0, 2)])
def test_level_strides_rejects_bad_arguments(first_stride: int, num_levels: int) -> None:
    with pytest.raises(ValueError):
        level_strides(first_stride, num_levels)


def test_vgg_rejects_first_stride_without_backbone_map() -> None:
    with pytest.raises(ValueError, match="first_stride"):
        build_conditioning_net("vgg", first_stride=16)


def test_quantizer_bins_are_the_srgb_gamut() -> None:
    quantizer = AbQuantizer()
    centers = quantizer.centers * AB_SCALE
    assert 250 <= quantizer.num_bins <= 320
    torch.testing.assert_close(centers, torch.round(centers / 10) * 10, atol=1e-4, rtol=0)
    bins = {tuple(int(value) for value in center) for center in torch.round(centers).tolist()}
    assert (0, 0) in bins and (-110, -110) not in bins and (110, 110) not in bins
    # Independent reference: saturated sRGB colours, through skimage, land on a bin of the set.
    corners = np.array([[[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 1], [1, 0, 1]]], float)
    for _, a, b in skimage.color.rgb2lab(corners)[0]:
        assert (int(round(a / 10) * 10), int(round(b / 10) * 10)) in bins


def test_quantizer_round_trip_on_bin_centres() -> None:
    quantizer = AbQuantizer()
    ab = quantizer.centers.T.reshape(1, 2, quantizer.num_bins, 1)
    indices = quantizer.encode_hard(ab)
    assert torch.equal(indices.flatten(), torch.arange(quantizer.num_bins))
    one_hot = torch.nn.functional.one_hot(indices, quantizer.num_bins).permute(0, 3, 1, 2).float()
    decoded = quantizer.decode_annealed_mean(torch.log(one_hot.clamp_min(1e-12)))
    torch.testing.assert_close(decoded, ab, atol=1e-5, rtol=0)


def test_soft_encoding_is_gaussian_on_five_nearest_bins() -> None:
    quantizer = AbQuantizer()
    ab = torch.tensor([12.0, -33.0]).reshape(1, 2, 1, 1) / AB_SCALE
    targets = quantizer.encode(ab)[0, :, 0, 0]
    assert (targets > 0).sum() == 5
    torch.testing.assert_close(targets.sum(), torch.tensor(1.0))
    distances = ((quantizer.centers * AB_SCALE - torch.tensor([12.0, -33.0])) ** 2).sum(dim=1)
    nearest = distances.argsort()[:5]
    expected = torch.exp(-distances[nearest] / (2 * 5.0**2))
    torch.testing.assert_close(targets[nearest], expected / expected.sum())


def test_rebalancing_weights_favour_rare_bins() -> None:
    quantizer = AbQuantizer()
    counts = torch.ones(quantizer.num_bins)
    counts[:10] = 1000.0
    probabilities = counts / counts.sum()
    # Without smoothing, the expectation under the empirical distribution is exactly 1 (Zhang Eq. 4).
    sharp = rebalancing_weights(counts, quantizer.centers, sigma=1e-3)
    torch.testing.assert_close((probabilities * sharp).sum(), torch.tensor(1.0))
    # ... and the weights are proportional to 1 / (0.5 p + 0.5 / Q).
    scaled = sharp * (0.5 * probabilities + 0.5 / len(counts))
    torch.testing.assert_close(scaled, scaled[:1].expand_as(scaled))
    smoothed = rebalancing_weights(counts, quantizer.centers)
    assert smoothed[50:].min() > 10 * smoothed[:10].max()
    uniform = rebalancing_weights(counts, quantizer.centers, mix=1.0)
    torch.testing.assert_close(uniform, torch.ones_like(uniform))


def test_bin_counts_accumulate_and_travel_in_state_dict() -> None:
    torch.manual_seed(0)
    batches = [torch.rand(2, 2, 4, 4) * 0.6 - 0.3 for _ in range(3)]
    quantizer = AbQuantizer()
    counts = accumulate_bin_counts(quantizer, batches, max_batches=2)
    assert counts.sum() == 2 * 2 * 4 * 4
    model = PretrainingModel(build_conditioning_net("small", num_levels=2, width=8))
    model.head.set_bin_counts(counts)
    restored = PretrainingModel(build_conditioning_net("small", num_levels=2, width=8))
    restored.load_state_dict(model.state_dict())
    assert torch.equal(restored.head.bin_counts, counts)
    assert torch.equal(restored.head.class_weights, model.head.class_weights)
    assert not torch.allclose(restored.head.class_weights, torch.ones(quantizer.num_bins))


def test_sparse_loss_equals_dense_rebalanced_cross_entropy() -> None:
    torch.manual_seed(0)
    model = PretrainingModel(build_conditioning_net("small", num_levels=2, width=8))
    lightness, ab = torch.randn(2, 1, 16, 16), torch.rand(2, 2, 16, 16) * 0.6 - 0.3
    logits = model(lightness)
    targets = model.head.quantizer.encode(torch.nn.functional.avg_pool2d(ab, 2))
    cross_entropy = -(targets * torch.log_softmax(logits, dim=1)).sum(dim=1)
    torch.testing.assert_close(model.head.loss(logits, ab), cross_entropy.mean())
    # Zhang Eq. 3: each pixel is weighted by the weight of its most probable target bin.
    weights = torch.rand(model.head.quantizer.num_bins) + 0.5
    rebalanced = (weights[targets.argmax(dim=1)] * cross_entropy).mean()
    torch.testing.assert_close(model.head.loss(logits, ab, weights), rebalanced)


def test_regression_term_is_the_squared_error_of_the_mean_colour() -> None:
    torch.manual_seed(0)
    model = PretrainingModel(build_conditioning_net("small", num_levels=2, width=8))
    lightness, ab = torch.randn(2, 1, 16, 16), torch.rand(2, 2, 16, 16) * 0.6 - 0.3
    logits = model(lightness)
    probabilities = torch.softmax(logits, dim=1).permute(0, 2, 3, 1)  # (B, h, w, Q)
    mean = (probabilities @ model.head.quantizer.centers).permute(0, 3, 1, 2) * AB_SCALE  # Lab units
    truth = torch.nn.functional.avg_pool2d(ab, 2) * AB_SCALE
    squared_error_in_bins = ((mean - truth) / 10).pow(2).sum(dim=1).mean()
    plain = model.head.loss(logits, ab)
    torch.testing.assert_close(model.head.loss(logits, ab, regression_weight=3.0), plain + 3 * squared_error_in_bins)


def test_annealed_mean_interpolates_between_mean_and_mode() -> None:
    quantizer = AbQuantizer()
    logits = torch.full((1, quantizer.num_bins, 1, 1), -1e4)
    logits[0, 3], logits[0, 7] = np.log(0.6), np.log(0.4)
    centers = quantizer.centers
    mean = quantizer.decode_annealed_mean(logits, temperature=1.0)[0, :, 0, 0]
    torch.testing.assert_close(mean, 0.6 * centers[3] + 0.4 * centers[7])
    mode = quantizer.decode_annealed_mean(logits, temperature=0.01)[0, :, 0, 0]
    torch.testing.assert_close(mode, centers[3])
    annealed = quantizer.decode_annealed_mean(logits)[0, :, 0, 0]
    share = 0.6 ** (1 / 0.38) / (0.6 ** (1 / 0.38) + 0.4 ** (1 / 0.38))
    torch.testing.assert_close(annealed, share * centers[3] + (1 - share) * centers[7])


def test_pretraining_reduces_loss_and_predicts_ab() -> None:
    torch.manual_seed(0)
    model = PretrainingModel(build_conditioning_net("small", num_levels=3, width=8))
    lightness = torch.linspace(-1, 1, 16).expand(2, 1, 16, 16).clone()
    ab = torch.stack([torch.full((16, 16), 0.5), torch.linspace(-0.4, 0.4, 16).expand(16, 16)])
    ab = ab.expand(2, 2, 16, 16)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        optimizer.zero_grad()
        loss = model.loss(lightness, ab)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
    prediction = model.predict_ab(lightness, out_size=(16, 16))
    assert prediction.shape == (2, 2, 16, 16)
    # The target's a is 0.5 (55 Lab units) everywhere; the annealed mean must have found it.
    assert abs(prediction[:, 0].mean().item() - 0.5) < 0.1


@pytest.mark.parametrize(
    ("name", "kwargs", "size"),
    [
        ("small", {"global_channels": 8}, 32),
        ("unet", {"global_channels": 8}, 32),
        ("vgg", {"level_channels": (8, 8, 8, 8), "global_channels": 8}, 32),
    ],
)
def test_gradients_reach_every_parameter(name: str, kwargs: dict, size: int) -> None:
    torch.manual_seed(0)
    model = PretrainingModel(build_conditioning_net(name, **kwargs), hidden_channels=8)
    model.loss(torch.randn(2, 1, size, size), torch.rand(2, 2, size, size) - 0.5).backward()
    missing = [
        parameter_name
        for parameter_name, parameter in model.named_parameters()
        if parameter.grad is None or not parameter.grad.abs().sum() > 0
    ]
    assert not missing


def test_unet_finest_map_sees_the_whole_photo() -> None:
    """A change in one corner of the photo reaches the opposite corner of the finest map through the
    encoder-decoder's context; in the small net only through GroupNorm's per-image statistics (its
    finest map sees ~13 pixels), so the far response relative to the near one is far weaker."""

    def far_to_near_response(name: str) -> float:
        torch.manual_seed(0)
        net = build_conditioning_net(name).eval()
        lightness = torch.randn(1, 1, 64, 64)
        changed = lightness.clone()
        changed[..., :8, :8] = -lightness[..., :8, :8]
        with torch.no_grad():
            difference = (net(lightness)[0] - net(changed)[0]).abs()
        return (difference[..., -4:, -4:].mean() / difference[..., :4, :4].mean()).item()

    assert far_to_near_response("unet") > 10 * far_to_near_response("small")
