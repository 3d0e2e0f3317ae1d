"""Inference library: guided upsampling, working size, gamut fitting, latent paths, likelihoods, releases."""

from __future__ import annotations

import math
import shutil
import warnings

import kornia.color
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file
from skimage.color import lab2rgb, rgb2lab

from cinn import DEFAULT_MODEL, inference
from cinn.color import lab_to_linear_rgb, lab_to_rgb, linear_to_srgb
from cinn.colorizer import BASELINE_FILE, Colorizer, load_regression_baseline
from cinn.data import ColorizationDataset, DatasetConfig
from cinn.errors import ReleaseError
from cinn.gamut import gamut_scale, gamut_scale_bisection
from cinn.inference import fit_to_gamut, interpolate_latents
from cinn.limits import working_size
from cinn.upsample import guided_upsample


def transition_width(row: torch.Tensor) -> int:
    """Pixels of a monotone step profile strictly between 10% and 90% of the way from one level to the other."""
    start, end = row[0], row[-1]
    progress = (row - start) / (end - start)
    return int(((progress > 0.1) & (progress < 0.9)).sum())


def test_guided_upsample_has_the_guide_size_and_keeps_constants():
    generator = torch.Generator().manual_seed(0)
    lightness = torch.rand(2, 1, 141, 203, generator=generator) * 2 - 1  # textured guide, odd size
    ab = torch.tensor([0.3, -0.4]).view(1, 2, 1, 1).expand(2, 2, 18, 25)
    upsampled = guided_upsample(ab, lightness)
    assert upsampled.shape == (2, 2, 141, 203)
    torch.testing.assert_close(upsampled, ab[:, :, :1, :1].expand(2, 2, 141, 203), atol=1e-5, rtol=0)


def test_guided_upsample_is_the_identity_at_equal_sizes():
    ab, lightness = torch.randn(1, 2, 17, 23), torch.randn(1, 1, 17, 23)
    assert torch.equal(guided_upsample(ab, lightness), ab)


def test_guided_upsample_puts_colour_edges_on_lightness_edges():
    # Full resolution 8 x 64 with a lightness step between columns 37 and 38 (inside a low-res pixel);
    # ab has the same step, and the model only sees it area-averaged to 2 x 16.
    edge = 38
    lightness = torch.full((1, 1, 8, 64), -0.8)
    lightness[..., edge:] = 0.6
    ab_full = torch.empty(1, 2, 8, 64)
    ab_full[:, :, :, :edge] = torch.tensor([0.3, -0.1]).view(1, 2, 1, 1)
    ab_full[:, :, :, edge:] = torch.tensor([-0.2, 0.4]).view(1, 2, 1, 1)
    ab_small = F.interpolate(ab_full, size=(2, 16), mode="area")
    guided = guided_upsample(ab_small, lightness)
    bilinear = F.interpolate(ab_small, size=(8, 64), mode="bilinear", align_corners=False)
    for channel in range(2):
        guided_row, bilinear_row = guided[0, channel, 4], bilinear[0, channel, 4]
        assert int(guided_row.diff().abs().argmax()) == edge - 1  # the colour jumps where L jumps
        assert transition_width(guided_row) <= 1 < 3 <= transition_width(bilinear_row)
        # Far from the edge the colour is the true one.
        torch.testing.assert_close(guided_row[[0, -1]], ab_full[0, channel, 4, [0, -1]], atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "height, width, short_side, multiple",
    [(141, 203, 16, 8), (203, 141, 16, 8), (480, 640, 256, 16), (3000, 4000, 256, 16), (10, 3000, 64, 8)],
)
def test_working_size_keeps_the_aspect_ratio_in_multiples(height, width, short_side, multiple):
    size = working_size(height, width, short_side, multiple)
    scale = short_side / min(height, width)
    assert all(side % multiple == 0 and side >= multiple for side in size)
    for side, original in zip(size, (height, width), strict=True):
        assert abs(side - original * scale) <= multiple / 2  # the nearest multiple to the exact size
    assert min(size) == short_side  # all these short sides are multiples already
    # The aspect ratio is off by at most the rounding of each side.
    tolerance = (multiple / 2) / min(size) + (multiple / 2) / max(size)
    assert abs(math.log((size[0] / size[1]) / (height / width))) <= tolerance + 1e-9


def test_fit_to_gamut_keeps_lightness_and_hue_and_leaves_gamut_colours_alone():
    generator = torch.Generator().manual_seed(0)
    lightness = torch.rand(1, 1, 32, 32, generator=generator) * 100
    lab = torch.cat([lightness, torch.randn(1, 2, 32, 32, generator=generator) * 60], dim=1)
    lab[:, 1:, :8] *= 0.02  # near-grey rows of mid lightness: inside the gamut
    lab[:, 0, :8] = lab[:, 0, :8] * 0.8 + 10
    raw = kornia.color.lab_to_rgb(lab, clip=False)[0]
    inside = ((raw >= 0) & (raw <= 1)).all(dim=0)
    assert inside[:8].all() and not inside.all()
    fitted = fit_to_gamut(lab)
    torch.testing.assert_close(fitted[0][:, inside], lab[0][:, inside], atol=1e-5, rtol=0)

    def lab_shown(lab: torch.Tensor) -> np.ndarray:  # scikit-image's Lab of the displayed colours
        return rgb2lab(lab_to_rgb(lab)[0].permute(1, 2, 0).double().numpy())

    wanted, shown, outside = lab[0].permute(1, 2, 0).double().numpy(), lab_shown(fitted), ~inside.numpy()
    assert np.abs(shown[..., 0] - wanted[..., 0]).max() < 0.05
    assert np.abs(lab_shown(lab)[..., 0] - wanted[..., 0]).max() > 5  # what plain clipping does to L
    chroma, wanted_chroma = np.hypot(shown[..., 1], shown[..., 2]), np.hypot(wanted[..., 1], wanted[..., 2])
    assert (chroma[outside] <= wanted_chroma[outside] + 0.05).all()
    hue_change = np.angle(
        np.exp(1j * (np.arctan2(shown[..., 2], shown[..., 1]) - np.arctan2(wanted[..., 2], wanted[..., 1])))
    )
    assert np.abs(hue_change[outside & (chroma > 5)]).max() < 0.02


def test_interpolated_latents_start_and_end_at_the_inputs_and_keep_the_prior():
    generator = torch.Generator().manual_seed(0)
    shapes = [(4, 32, 32), (8, 16, 16)]
    start = [torch.randn(1, *shape, generator=generator) for shape in shapes]
    end = [torch.randn(1, *shape, generator=generator) for shape in shapes]
    frames = interpolate_latents(start, end, 7)
    for level, shape in enumerate(shapes):
        assert frames[level].shape == (7, *shape)
        torch.testing.assert_close(frames[level][0], start[level][0], atol=1e-6, rtol=0)
        torch.testing.assert_close(frames[level][-1], end[level][0], atol=1e-6, rtol=0)
        stds = frames[level].flatten(1).std(dim=1)
        assert (stds - 1).abs().max() < 0.05, stds  # a straight line would dip to 0.71 halfway
        assert not torch.equal(frames[level][2], frames[level][3])


@torch.no_grad()
def test_sample_likelihood_equals_the_nll_of_the_sample(debug_release):
    model = Colorizer.from_pretrained(debug_release)
    generator = torch.Generator().manual_seed(0)
    lightness = torch.rand(2, 1, 16, 24, generator=generator) * 2 - 1
    ab, bits = model.sample_with_likelihood(lightness, num_samples=3, temperature=0.7, generator=generator)
    assert ab.shape == (2, 3, 2, 8, 12) and bits.shape == (2, 3)
    # Independent path: run the returned ab forward through the flow and score it.
    forward_bits = model.nll(lightness.repeat_interleave(3, dim=0), ab.flatten(0, 1)).view(2, 3)
    torch.testing.assert_close(bits, forward_bits, atol=1e-4, rtol=0)
    assert bits.std() > 1e-3  # different samples, different likelihoods: the comparison means something


@torch.no_grad()
def test_a_photos_own_likelihood_is_that_of_the_pair_training_makes_of_it(tmp_path, debug_release):
    # One reduction for both: colorize's likelihood of the photo's colours and the validation pair.
    model = Colorizer.from_pretrained(debug_release)
    y, x = np.mgrid[0:48, 0:48] / 47.0
    pixels = np.stack([200 * x + 30, 180 * y + 40, 220 - 150 * x * y], axis=-1).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "smooth.png")
    side = model.config.lightness_size
    reported = model.colorize_photo(Image.open(tmp_path / "smooth.png"), 1, working_side=side).original_bits_per_dim
    config = DatasetConfig(lightness_size=side, ab_size=model.config.ab_size)
    pair = ColorizationDataset([tmp_path / "smooth.png"], train=False, config=config)[0]
    assert pair["ab"].abs().max() > 0.1  # a colourful photo: the comparison means something
    expected = model.nll(pair["lightness"][None], pair["ab"][None]).item()
    assert reported == pytest.approx(expected, abs=1e-5)


def test_from_pretrained_names_what_is_missing_or_damaged(tmp_path, debug_release):
    with pytest.raises(ReleaseError, match=r"model release '.*nowhere' does not exist"):
        Colorizer.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReleaseError, match=r"'.*empty' is not a model release: it has no config\.yaml"):
        Colorizer.from_pretrained(tmp_path / "empty")
    partial = shutil.copytree(debug_release, tmp_path / "partial")
    (partial / "model.safetensors").unlink()
    with pytest.raises(ReleaseError, match=r"it has no model\.safetensors"):
        Colorizer.from_pretrained(partial)
    weights = (debug_release / "model.safetensors").read_bytes()
    config = (debug_release / "config.yaml").read_text()
    damages = [
        ("model.safetensors", b"", "is damaged or not safetensors"),
        ("model.safetensors", weights[: len(weights) // 2], "is damaged or not safetensors"),
        ("config.yaml", b"", "must hold the model's settings, not None"),
        ("config.yaml", b"3\n", "must hold the model's settings, not 3"),
        ("config.yaml", b"model: [unclosed\n", "is not valid YAML"),
        ("config.yaml", config.replace("lightness_size: 16", "lightness_size: 0").encode(), "'lightness_size' must be"),
        ("config.yaml", config.replace("width: 8", "width: 4").encode(), "does not match its config.yaml"),
    ]
    for number, (name, content, message) in enumerate(damages):
        damaged = shutil.copytree(debug_release, tmp_path / f"damaged_{number}")
        (damaged / name).write_bytes(content)
        with pytest.raises(ReleaseError, match=message):
            Colorizer.from_pretrained(damaged)


def test_the_api_loads_a_releases_regression_baseline(tmp_path, debug_release):
    model = Colorizer.from_pretrained(DEFAULT_MODEL)
    baseline = load_regression_baseline(DEFAULT_MODEL, model.config)
    stored = load_file(DEFAULT_MODEL / BASELINE_FILE)
    assert stored.keys() == baseline.state_dict().keys()
    assert all(torch.equal(stored[name], tensor) for name, tensor in baseline.state_dict().items())
    lightness = torch.rand(2, 1, 64, 64) * 2 - 1
    ab = baseline.predict_ab(lightness, out_size=(32, 32))
    assert ab.shape == (2, 2, 32, 32) and torch.isfinite(ab).all() and ab.std() > 0

    assert load_regression_baseline(debug_release, model.config) is None  # it ships none
    damaged = shutil.copytree(DEFAULT_MODEL, tmp_path / "damaged")
    (damaged / BASELINE_FILE).write_bytes((DEFAULT_MODEL / BASELINE_FILE).read_bytes()[:1000])
    with pytest.raises(ReleaseError, match="is damaged or not safetensors"):
        load_regression_baseline(damaged, model.config)
    other = Colorizer.from_pretrained(debug_release).config  # a conditioning net of another shape
    with pytest.raises(ReleaseError, match="does not match the release's config.yaml"):
        load_regression_baseline(DEFAULT_MODEL, other)


def test_default_temperature_comes_from_the_release(tmp_path, debug_release):
    release = shutil.copytree(debug_release, tmp_path / "cool")
    config = (release / "config.yaml").read_text()
    (release / "config.yaml").write_text(config.replace("temperature: 0.7", "temperature: 0.4"))
    model = Colorizer.from_pretrained(release)
    lightness = torch.rand(1, 1, 16, 16) * 2 - 1
    shapes = model.latent_shapes(lightness)
    generator = torch.Generator().manual_seed(1)
    zs = [torch.randn(3, *shape, generator=generator) for shape in shapes]
    with torch.no_grad():
        decoded, _ = model.sample_with_likelihood(lightness, 3, zs=[0.4 * z for z in zs])
        default = model.sample(lightness, 3, None, torch.Generator().manual_seed(1))
        warmer = model.sample(lightness, 3, 0.7, torch.Generator().manual_seed(1))
    # The same unit-variance draws (level by level from one generator) scaled by the release's 0.4.
    torch.testing.assert_close(default, decoded)
    assert not torch.allclose(default, warmer)
    for bad in (float("nan"), float("inf"), -0.5):
        with pytest.raises(ValueError, match="temperature must be a finite number >= 0"):
            model.sample(lightness, 1, bad)
    (release / "config.yaml").write_text(config.replace("temperature: 0.7", "temperature: .nan"))
    with pytest.raises(ReleaseError, match="'temperature' must be a finite number"):
        Colorizer.from_pretrained(release)


def test_a_latent_path_needs_a_positive_temperature(debug_release):
    from PIL import Image

    model = Colorizer.from_pretrained(debug_release)
    with pytest.raises(ValueError, match="needs a temperature above 0"):
        model.interpolate(Image.new("RGB", (20, 20), (90, 120, 30)), 3, temperature=0)


def test_non_finite_weights_are_neither_written_nor_loaded(tmp_path, debug_release):
    from safetensors.torch import load_file, save_file

    model = Colorizer.from_pretrained(debug_release)
    with torch.no_grad():
        next(model.flow.parameters()).view(-1)[0] = float("nan")
    with pytest.raises(ValueError, match="non-finite value"):
        model.save_pretrained(tmp_path / "nan-release")
    assert not (tmp_path / "nan-release/model.safetensors").exists()
    damaged = shutil.copytree(debug_release, tmp_path / "damaged")
    tensors = load_file(damaged / "model.safetensors")
    name = next(key for key, value in tensors.items() if value.is_floating_point())
    tensors[name].view(-1)[0] = float("inf")
    save_file(tensors, damaged / "model.safetensors")
    with pytest.raises(ReleaseError, match=f"1 non-finite value.*'{name}'"):
        Colorizer.from_pretrained(damaged)


def test_samples_are_decoded_from_z_with_the_temperature_as_standard_deviation(debug_release, monkeypatch):
    model = Colorizer.from_pretrained(debug_release)
    seen = []
    real_inverse = model.flow.inverse

    def recording_inverse(zs, conditions):
        seen.append(torch.cat([z.flatten() for z in zs]))
        return real_inverse(zs, conditions)

    monkeypatch.setattr(model.flow, "inverse", recording_inverse)
    with torch.no_grad():
        model.sample(torch.zeros(2, 1, 16, 16), 64, temperature=0.5, generator=torch.Generator().manual_seed(0))
    z = seen[0]
    assert z.numel() > 10_000 and abs(z.std().item() - 0.5) < 0.02 and abs(z.mean().item()) < 0.02


def test_gamut_scale_finds_the_chroma_where_the_colour_leaves_srgb():
    """Against scikit-image's Lab: a colour is in the gamut when its sRGB round trip returns it unchanged."""
    generator = torch.Generator().manual_seed(1)
    lightness = torch.cat([torch.rand(4000, generator=generator) * 100, torch.tensor([0.0, 0.3, 99.9, 100.0])])
    lab = torch.stack([lightness, *(torch.randn(2, len(lightness), generator=generator) * 70)]).double()
    scale = gamut_scale(lab)

    def round_trip_error(factor: torch.Tensor) -> np.ndarray:
        colours = torch.cat([lab[:1], lab[1:] * factor]).T.numpy()[None]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scikit-image warns about colours it clips
            return np.abs(rgb2lab(lab2rgb(colours)) - colours)[0].max(axis=1)

    assert ((scale >= 0) & (scale <= 1)).all() and 0.3 < (scale < 1).double().mean() < 0.95
    assert scale[-1] == 0  # at L = 100 only white is inside
    assert round_trip_error(scale)[:-1].max() < 1e-5  # inside (white itself is 4e-3 off in scikit-image's)
    shrunk = (scale < 1) & (scale > 0.01)
    assert (round_trip_error(scale * 1.002)[shrunk] > 1e-4).all()  # and nothing more chroma would be
    assert (scale[lab[1:].abs().amax(dim=0) < 1] == 1).all()  # near-grey colours are left alone


def test_the_searched_gamut_scale_is_the_first_exit_from_grey_and_the_closed_forms_but_for_a_reentry():
    """``gamut_scale_bisection`` (the ONNX graph's) against scikit-image's Lab: its colour is inside the
    gamut, the segment from grey to it too, and a little more chroma is not; it equals ``gamut_scale``
    except for colours whose segment leaves and re-enters the gamut, where the closed form keeps a later
    point whose segment from grey is not inside."""
    generator = torch.Generator().manual_seed(4)
    lightness = torch.rand(3000, generator=generator) * 100
    lab = torch.stack([lightness, *((torch.rand(2, 3000, generator=generator) - 0.5) * 250)]).double()
    # A yellow whose red exceeds 1 between t = 0.26 and 0.64, and whose green does from 0.67 on.
    lab = torch.cat([lab, torch.tensor([[97.3444], [-29.4377], [115.9677]], dtype=torch.float64)], dim=1)
    lightness = lab[0]
    searched, closed = gamut_scale_bisection(lab).double(), gamut_scale(lab)
    chroma = lab[1:].norm(dim=0)

    def inside(factor: torch.Tensor) -> torch.Tensor:  # (N,) -> whether (L, t a, t b) survives sRGB
        colours = torch.cat([lab[:1], lab[1:] * factor]).T.numpy()[None]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scikit-image warns about colours it clips
            return torch.from_numpy(np.abs(rgb2lab(lab2rgb(colours)) - colours)[0].max(axis=1) < 5e-4)

    def segment_inside(factor: torch.Tensor) -> torch.Tensor:
        return torch.stack([inside(factor * step) for step in torch.linspace(0, 1, 101)[1:]]).all(dim=0)

    usable = lightness < 99.9  # at the top of L only white fits, to scikit-image's rounding
    assert segment_inside(searched)[usable].all()
    beyond = (searched < 1) & (searched * chroma > 1)
    assert not inside(searched * 1.002)[beyond & usable].any()  # the exit, not a point before it
    agree = (searched - closed).abs() * chroma < 1e-3  # Lab units
    assert agree.double().mean() > 0.995 and not agree[-1]
    assert inside(closed)[~agree & usable].all() and not segment_inside(closed)[~agree & usable].any()


def test_recombination_in_strips_is_the_whole_image_guided_and_converted_by_scikit_image(monkeypatch):
    generator = torch.Generator().manual_seed(2)
    lightness = F.interpolate(torch.rand(1, 1, 12, 16, generator=generator), size=(75, 101), mode="bicubic")
    lightness = lightness.clamp(0, 1) * 2 - 1
    ab = torch.randn(2, 2, 8, 12, generator=generator) * 0.4
    monkeypatch.setattr(inference, "STRIP_PIXELS", 5 * 101)  # 5 rows a strip, the last one shorter
    images = [np.asarray(image) for image in inference.recombine(ab, lightness, None)]
    for sample, image in zip(ab, images, strict=True):
        full_ab = guided_upsample(sample[None], lightness)
        lab = torch.cat([(lightness + 1) * 50, full_ab * 110], dim=1)[0].double()
        fitted = torch.cat([lab[:1], lab[1:] * gamut_scale(lab.flatten(1)).view(1, *lab.shape[1:])])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = lab2rgb(fitted.permute(1, 2, 0).numpy())
        assert image.shape == (75, 101, 3) and image.dtype == np.uint8
        assert np.abs(image - expected * 255).max() < 0.51  # the same colours, rounded to bytes
        assert np.abs(rgb2lab(image)[..., 0] - lab[0].numpy()).max() < 0.6  # the photo's L, up to the rounding


def test_out_of_gamut_colours_fitted_in_batches_of_any_size_give_the_same_images(monkeypatch):
    """``GamutFit`` fits the colours of all strips and samples together; flushed every few colours
    (here 7), the images are byte for byte the same."""
    generator = torch.Generator().manual_seed(3)
    lightness = torch.rand(1, 1, 40, 52, generator=generator) * 2 - 1
    ab = torch.randn(3, 2, 10, 13, generator=generator) * 0.6  # saturated: many colours outside sRGB
    monkeypatch.setattr(inference, "STRIP_PIXELS", 9 * 52)
    together = [np.asarray(image) for image in inference.recombine(ab, lightness, None)]
    monkeypatch.setattr(inference.GamutFit, "FIT_BATCH", 7)
    batched = [np.asarray(image) for image in inference.recombine(ab, lightness, None)]
    for first, second in zip(together, batched, strict=True):
        np.testing.assert_array_equal(first, second)
    colours = torch.cat([(lightness + 1) * 50, guided_upsample(ab[:1], lightness) * 110], dim=1)[0]
    assert not inference.in_srgb_gamut(linear_to_srgb(lab_to_linear_rgb(colours))).all()  # the fit had work to do
