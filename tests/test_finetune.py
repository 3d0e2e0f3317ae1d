"""``train.init_from``: a run that starts from every weight of a release and fine-tunes it."""

from __future__ import annotations

from pathlib import Path

import cinn.programs.pretrain_condnet as pretrain_pipeline
import cinn.programs.train as train_pipeline
import pytest
import torch
from safetensors.torch import load_file

from cinn.colorizer import BASELINE_FILE, Colorizer
from cinn.config import ConfigError, load_config
from cinn.flow_training import build_model
from cinn.recipe import Recipe

DEBUG = str(Path(__file__).resolve().parents[1] / "configs" / "debug.yaml")


def test_a_fine_tune_starts_from_every_weight_of_the_release(debug_release):
    recipe = load_config(Recipe, DEBUG, [f"train.init_from={debug_release}", "model.temperature=0.9"])
    model = build_model(recipe, torch.device("cpu"))
    released = Colorizer.from_pretrained(debug_release).state_dict()
    ours = model.state_dict()
    assert ours.keys() == released.keys()
    for name, tensor in released.items():
        assert torch.equal(ours[name], tensor), name
    assert model.config.temperature == 0.9  # the one model setting a fine-tune may change


def test_a_release_with_other_model_settings_is_refused_by_name(debug_release):
    recipe = load_config(Recipe, DEBUG, [f"train.init_from={debug_release}", "model.flow.hidden_channels=[8, 8, 16]"])
    with pytest.raises(ConfigError, match="train.init_from: the release .* has model.flow "):
        build_model(recipe, torch.device("cpu"))


def test_init_from_and_a_pretrained_conditioning_net_are_not_both_allowed(debug_release):
    overrides = [f"train.init_from={debug_release}", "train.pretrained_conditioning=backbone.safetensors"]
    with pytest.raises(ConfigError, match="set one of them"):
        load_config(Recipe, DEBUG, overrides)


def test_a_missing_release_is_one_error_and_a_non_zero_exit(tmp_path, photo_folder, capsys):
    argv = ["--config", DEBUG, "--data", str(photo_folder), "--out", str(tmp_path / "run"),
            "--set", f"train.init_from={tmp_path / 'no-such-release'}"]  # fmt: skip
    assert train_pipeline.main(argv) == 2
    assert "no-such-release" in capsys.readouterr().err


def test_fine_tuning_a_guided_release_trains_it_further_and_ships_its_baseline(tmp_path, photo_folder):
    head = ["--set", "pretrain.head_level=1", "--set", "pretrain.head_hidden_channels=8"]
    pretrain = tmp_path / "pretrain"
    assert pretrain_pipeline.main(["--config", DEBUG, "--data", str(photo_folder), "--out", str(pretrain), *head]) == 0
    guided = [*head, "--set", "model.guide={hidden_channels: 8, level: 1}"]
    first = tmp_path / "first"
    assert train_pipeline.main(["--config", DEBUG, "--data", str(photo_folder), "--out", str(first),
                                "--set", "train.steps=2", *guided,
                                "--set", f"train.pretrained_conditioning={pretrain / 'backbone.safetensors'}"]) == 0  # fmt: skip
    second = tmp_path / "second"
    assert train_pipeline.main(["--config", DEBUG, "--data", str(photo_folder), "--out", str(second),
                                "--set", "train.steps=2", *guided, "--set", "train.freeze_conditioning_steps=0",
                                "--set", f"train.init_from={first / 'release'}"]) == 0  # fmt: skip
    before = Colorizer.from_pretrained(first / "release").state_dict()
    after = Colorizer.from_pretrained(second / "release").state_dict()
    moved = [name for name in before if not torch.equal(before[name], after[name])]
    assert any(name.startswith("flow.") for name in moved)
    assert any(name.startswith("conditioning_net.") for name in moved)  # fine-tuned jointly from step 0
    shipped = load_file(second / "release" / BASELINE_FILE)
    for name, tensor in load_file(pretrain / BASELINE_FILE).items():
        assert torch.equal(shipped[name], tensor), name
