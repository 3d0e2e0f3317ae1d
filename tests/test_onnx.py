"""The ONNX export against torch: the sampling graph, the torch-free colorizer around it, and colorize.py on it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import skimage.data
import torch
from cinn.programs import colorize, export
from PIL import Image

from cinn.colorizer import Colorizer
from cinn.inference import prepare_photo, recombine
from cinn.loss import sample_latents
from cinn.upsample import guided_upsample

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def graphs(debug_release, tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx") / "graphs"
    assert export.main(["--onnx", str(folder), "--model", str(debug_release)]) == 0
    return folder


def test_an_export_never_replaces_graphs_without_overwrite(debug_release, graphs, capsys):
    before = {path.name: path.read_bytes() for path in graphs.iterdir()}
    assert export.main(["--onnx", str(graphs), "--model", str(debug_release)]) == 2
    assert "already exists (use --overwrite to replace it)" in capsys.readouterr().err
    assert {path.name: path.read_bytes() for path in graphs.iterdir()} == before  # nor leaves a temporary


def test_the_exported_graph_samples_what_torch_samples_at_other_sizes(debug_release, graphs):
    from cinn.onnx import OnnxSampler

    model, sampler = Colorizer.from_pretrained(debug_release), OnnxSampler(graphs)
    generator = torch.Generator().manual_seed(0)
    side = model.config.lightness_size
    for height, width, samples in ((side, side, 2), (side * 2, side * 3, 5)):  # traced at side x side, 2 samples
        lightness = torch.rand(1, 1, height, width, generator=generator) * 2 - 1
        zs = sample_latents(model.latent_shapes(lightness), samples, 0.8, generator)
        with torch.no_grad():
            expected, expected_logdet = model.flow.inverse(zs, model.conditions(lightness))
            _, expected_bits = model.sample_with_likelihood(lightness, samples, zs=zs)
        ab, logdet = sampler(lightness, zs)
        assert ab.shape == expected.shape and expected.abs().max() > 0.01
        torch.testing.assert_close(ab, expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(logdet, expected_logdet, atol=1e-3, rtol=1e-5)
        feeds = {"lightness": lightness.numpy(), **{f"z{level}": z.numpy() for level, z in enumerate(zs)}}
        bits = sampler.session.run(["bits_per_dim"], feeds)[0]
        np.testing.assert_allclose(bits, expected_bits[0].numpy(), atol=1e-5)


@pytest.mark.parametrize("photo", ["astronaut", "coffee", "chelsea"])
def test_the_torch_free_colorizer_makes_torch_s_pictures_of_real_photos_from_the_same_latents(
    debug_release, graphs, photo
):
    from cinn.onnx_colorizer import RECOMBINE_FILE, OnnxColorizer

    model, onnx = Colorizer.from_pretrained(debug_release), OnnxColorizer(graphs)
    image = Image.fromarray(getattr(skimage.data, photo)())
    full, lightness, _, _, _ = prepare_photo(image, 24, model.input_multiple, torch.device("cpu"))
    zs = sample_latents(model.latent_shapes(lightness), 3, 1.0, torch.Generator().manual_seed(1))
    with torch.no_grad():
        ab, bits = model.sample_with_likelihood(lightness, 3, zs=zs)
    result = onnx.colorize_photo(image, 3, working_side=24, zs=[z.numpy() for z in zs])
    np.testing.assert_allclose(result.samples_ab, ab[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(result.bits_per_dim, bits[0].numpy(), atol=1e-5)

    # The full-size colours before the gamut fit: torch's guided upsampling, to float32 rounding (this
    # barely trained model's colours reach 100 Lab units; benchmarks/README.md has the shipped model's).
    full_ab = guided_upsample(ab[0], full) * 110
    for sample in range(3):
        _, _, lab = onnx.sessions[RECOMBINE_FILE].run(None, {"ab": ab[0, sample : sample + 1].numpy(),
                                                              "lightness": full.numpy()})  # fmt: skip
        np.testing.assert_allclose(lab[1:], full_ab[sample].numpy(), rtol=3e-5, atol=2e-3)  # Lab units
        np.testing.assert_allclose(lab[0], (full[0, 0].numpy() + 1) * 50, atol=1e-4)

    # The delivered bytes, gamut fit included: one level of rounding apart at most, but where a
    # colour's path from grey leaves and re-enters the gamut (cinn.gamut).
    expected = recombine(ab[0], full, None)
    for ours, theirs in zip(result.images, expected, strict=True):
        difference = np.abs(np.asarray(ours, np.int16) - np.asarray(theirs, np.int16)).max(axis=-1)
        assert ours.size == image.size and (difference > 1).mean() < 1e-4


def run_colorize(arguments: list[str]) -> subprocess.CompletedProcess:
    """colorize.main(arguments) in a fresh interpreter that then says whether torch was ever imported."""
    script = (
        "import sys\nfrom cinn.programs import colorize\ncode = colorize.main(sys.argv[1:])\n"
        "print('torch imported' if 'torch' in sys.modules else 'no torch')\nsys.exit(code)\n"
    )
    return subprocess.run([sys.executable, "-c", script, *arguments], capture_output=True, text=True, timeout=300)


def test_colorize_with_the_onnx_backend_never_imports_torch_and_repeats_its_seed(debug_release, graphs, tmp_path):
    rgb = (np.random.default_rng(0).random((40, 56, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(photo := tmp_path / "photo.png")
    common = [str(photo), "--model", str(debug_release), "--n", "2", "--seed", "3", "--backend", "onnx",
              "--onnx-dir", str(graphs), "--likelihood"]  # fmt: skip
    first = run_colorize([*common, "--out", str(tmp_path / "first")])
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip().splitlines()[-1] == "no torch" and "bits/dim of samples" in first.stdout
    assert run_colorize([*common, "--out", str(tmp_path / "again")]).returncode == 0
    for name in ("photo_color_01.png", "photo_color_02.png", "photo_grid.png"):
        pixels = np.asarray(Image.open(tmp_path / "first" / name))
        np.testing.assert_array_equal(pixels, np.asarray(Image.open(tmp_path / "again" / name)))
    first_sample, second_sample = (np.asarray(Image.open(tmp_path / "first" / f"photo_color_0{i}.png")) for i in (1, 2))
    assert first_sample.shape == (40, 56, 3) and not np.array_equal(first_sample, second_sample)


def test_the_onnx_backend_s_misuse_is_one_sentence(debug_release, graphs, tmp_path, capsys):
    Image.fromarray(np.full((20, 20, 3), 128, np.uint8)).save(photo := tmp_path / "photo.png")
    common = [str(photo), "--model", str(debug_release), "--out", str(tmp_path / "out"), "--backend", "onnx"]
    assert colorize.main(common) == 2
    assert "--backend onnx needs --onnx-dir" in capsys.readouterr().err
    assert colorize.main([*common, "--onnx-dir", str(tmp_path)]) == 2
    assert "holds no sampler.onnx: write the graphs with python pipelines/export.py --onnx" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        colorize.main([*common, "--onnx-dir", str(graphs), "--interpolate", "4"])
    assert "--interpolate needs --backend torch" in capsys.readouterr().err
