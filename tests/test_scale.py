"""What a GPU run at scale relies on, checked on the CPU: the photo cache refused where it cannot fit,
the bf16 autocast and torch.compile training paths."""

from __future__ import annotations

from pathlib import Path

import cinn.programs.train as train_pipeline
import pytest
import torch
from safetensors.torch import load_file

import cinn.data
from cinn.config import find_recipe, load_config
from cinn.data import check_cache_fits
from cinn.errors import DataError
from cinn.recipe import Recipe

DEBUG = str(Path(__file__).resolve().parents[1] / "configs" / "debug.yaml")


def test_the_photo_cache_is_refused_for_a_dataset_that_cannot_fit(tmp_path, photo_folder, monkeypatch, capsys):
    imagenet = load_config(Recipe, find_recipe("imagenet"), ["data.cache_images=true"])
    config = imagenet.data.dataset_config(imagenet.model)
    with pytest.raises(DataError, match="would keep 1,281,167 decoded photos in each of 8 worker processes"):
        check_cache_fits(1_281_167, config, imagenet.data.num_workers)

    monkeypatch.setattr(cinn.data, "available_memory", lambda: 50_000)  # a machine with 50 kB to spare
    argv = ["--config", DEBUG, "--data", str(photo_folder), "--out", str(tmp_path / "run"), "--set", "train.steps=1"]
    assert train_pipeline.main([*argv, "--set", "data.cache_images=true"]) == 2
    assert "set data.cache_images=false" in capsys.readouterr().err
    assert train_pipeline.main(argv) == 0  # without the cache the same photos train


def test_bf16_autocast_and_torch_compile_train_on_the_cpu(tmp_path, photo_folder):
    common = ["--config", DEBUG, "--data", str(photo_folder), "--set", "train.steps=2", "--set", "train.val_every=100"]
    assert train_pipeline.main([*common, "--out", str(tmp_path / "fp32")]) == 0
    fast = [*common, "--out", str(tmp_path / "bf16"), "--set", "train.bf16=true", "--set", "train.compile=true"]
    assert train_pipeline.main(fast) == 0
    fp32 = load_file(tmp_path / "fp32/release/model.safetensors")
    bf16 = load_file(tmp_path / "bf16/release/model.safetensors")
    assert all(torch.isfinite(tensor.float()).all() for tensor in bf16.values())
    # Same photos, same seed: only the arithmetic's precision differs, so the weights must differ a little.
    differences = [(fp32[name].float() - bf16[name].float()).abs().max().item() for name in fp32]
    assert 0 < max(differences) < 0.05
