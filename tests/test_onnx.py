"""The ONNX export of the sampling path against torch, and colorize.py running it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cinn.programs import colorize, export
from PIL import Image

from cinn.colorizer import Colorizer
from cinn.loss import sample_latents

pytest.importorskip("onnxruntime")


def test_the_exported_graph_samples_what_torch_samples_at_other_sizes(debug_release, tmp_path):
    assert export.main(["--onnx", str(tmp_path / "graph"), "--model", str(debug_release)]) == 0
    from cinn.onnx import OnnxSampler

    model, sampler = Colorizer.from_pretrained(debug_release), OnnxSampler(tmp_path / "graph")
    generator = torch.Generator().manual_seed(0)
    side = model.config.lightness_size
    for height, width, samples in ((side, side, 2), (side * 2, side * 3, 5)):  # traced at side x side, 2 samples
        lightness = torch.rand(1, 1, height, width, generator=generator) * 2 - 1
        zs = sample_latents(model.latent_shapes(lightness), samples, 0.8, generator)
        with torch.no_grad():
            expected, expected_logdet = model.flow.inverse(zs, model.conditions(lightness))
        ab, logdet = sampler(lightness, zs)
        assert ab.shape == expected.shape and expected.abs().max() > 0.01
        torch.testing.assert_close(ab, expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(logdet, expected_logdet, atol=1e-3, rtol=1e-5)


def test_colorize_with_the_onnx_backend_writes_the_torch_backend_s_pictures(debug_release, tmp_path):
    export.main(["--onnx", str(tmp_path / "graph"), "--model", str(debug_release)])
    rgb = (np.random.default_rng(0).random((40, 56, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(photo := tmp_path / "photo.png")
    common = [str(photo), "--model", str(debug_release), "--n", "2", "--seed", "3"]
    assert colorize.main([*common, "--out", str(tmp_path / "torch")]) == 0
    assert colorize.main([*common, "--out", str(tmp_path / "onnx"), "--backend", "onnx", "--onnx-dir",
                          str(tmp_path / "graph")]) == 0  # fmt: skip
    for name in ("photo_color_01.png", "photo_color_02.png"):
        torch_pixels = np.asarray(Image.open(tmp_path / "torch" / name), dtype=np.int16)
        onnx_pixels = np.asarray(Image.open(tmp_path / "onnx" / name), dtype=np.int16)
        assert np.abs(torch_pixels - onnx_pixels).max() <= 1  # float rounding may move a byte by one
    assert colorize.main([*common, "--out", str(tmp_path / "none"), "--backend", "onnx"]) == 2
