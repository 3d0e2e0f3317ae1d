"""Pretraining the conditioning net: a 2-step run writes a checkpoint that loads, resumes and exports."""

from __future__ import annotations

import json
from pathlib import Path

import cinn.programs.pretrain_condnet as pretrain_pipeline
import cinn.programs.train as train_pipeline
import pytest
import torch
from safetensors.torch import load_file

from cinn.colorizer import Colorizer, load_regression_baseline
from cinn.config import ConfigError, load_config
from cinn.recipe import Recipe

DEBUG = str(Path(__file__).resolve().parents[1] / "configs" / "debug.yaml")


def test_two_steps_write_a_checkpoint_that_resumes_and_feeds_the_flow(tmp_path, photo_folder, capsys):
    run = tmp_path / "pretrain"
    assert pretrain_pipeline.main(["--config", DEBUG, "--data", str(photo_folder), "--out", str(run)]) == 0
    checkpoint = torch.load(run / "checkpoints/last.pt", weights_only=True)  # plain data, like train.py's
    assert checkpoint["progress"]["step"] == 2 and checkpoint["recipe"]["pretrain"]["steps"] == 2
    logged = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    best = torch.load(run / "checkpoints/best.pt", weights_only=True)
    assert best["progress"]["best_val_loss"] == min(entry["val/loss"] for entry in logged if "val/loss" in entry)
    backbone = load_file(run / "backbone.safetensors")
    baseline = load_file(run / "baseline.safetensors")
    assert baseline["head.bin_counts"].sum() > 0  # the rebalancing statistics were gathered
    assert "val/ab_rmse" in capsys.readouterr().out

    # Resume to 4 steps: the weights move on from the saved ones.
    assert pretrain_pipeline.main(["--out", str(run), "--resume", "--set", "pretrain.steps=4"]) == 0
    assert torch.load(run / "checkpoints/last.pt", weights_only=True)["progress"]["step"] == 4
    logged = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in logged if "val/loss" in entry] == [2, 4]  # one log across the resume
    resumed = load_file(run / "backbone.safetensors")
    assert any(not torch.equal(backbone[name], resumed[name]) for name in backbone)

    # A flow run starts from that backbone, frozen.
    flow_run = tmp_path / "flow"
    code = train_pipeline.main([
        "--config", DEBUG, "--data", str(photo_folder), "--out", str(flow_run), "--set", "train.steps=1",
        "--set", f"train.pretrained_conditioning={run / 'backbone.safetensors'}",
        "--set", "train.freeze_conditioning_steps=-1",
    ])  # fmt: skip
    assert code == 0
    model = Colorizer.from_pretrained(flow_run / "release")
    for name, tensor in model.conditioning_net.state_dict().items():
        assert torch.equal(tensor, resumed[name]), name
    assert (flow_run / "release/baseline.safetensors").is_file()


def test_a_new_run_never_overwrites_an_existing_one(tmp_path, photo_folder, capsys):
    run = tmp_path / "pretrain"
    assert pretrain_pipeline.main(["--config", DEBUG, "--data", str(photo_folder), "--out", str(run)]) == 0
    before = (run / "checkpoints/last.pt").read_bytes()
    assert pretrain_pipeline.main(["--config", DEBUG, "--data", str(photo_folder), "--out", str(run)]) == 2
    assert "already holds a training run" in capsys.readouterr().err
    assert (run / "checkpoints/last.pt").read_bytes() == before
    missing = tmp_path / "nothing"
    assert pretrain_pipeline.main(["--out", str(missing), "--resume"]) == 2


def test_a_coarser_head_and_a_cosine_schedule_reach_the_baseline_and_survive_a_resume(tmp_path, photo_folder):
    run = tmp_path / "pretrain"
    settings = ["--set", "pretrain.head_level=1", "--set", "pretrain.schedule=cosine", "--set", "pretrain.steps=4"]
    assert pretrain_pipeline.main(["--config", DEBUG, "--data", str(photo_folder), "--out", str(run), *settings]) == 0
    rates = [entry["train/lr"] for entry in map(json.loads, (run / "log.jsonl").read_text().splitlines())
             if "train/lr" in entry]  # fmt: skip
    assert len(rates) == 4 and rates == sorted(rates, reverse=True) and rates[-1] < rates[0]  # decays to the end

    # The release's baseline rebuilds the head at its level from the metadata (it predicts at 4x4 for ab 8x8).
    release = tmp_path / "release"
    release.mkdir()
    (release / "baseline.safetensors").write_bytes((run / "baseline.safetensors").read_bytes())
    config = load_config(Recipe, DEBUG).model
    baseline = load_regression_baseline(release, config)
    assert baseline.head.output_level == 1
    lightness = torch.rand(2, 1, 16, 16) * 2 - 1
    assert baseline(lightness).shape[-2:] == (4, 4)
    assert baseline.predict_ab(lightness, out_size=(8, 8)).shape == (2, 2, 8, 8)

    # A resume goes on along the same schedule rather than restarting it.
    assert pretrain_pipeline.main(["--out", str(run), "--resume", "--set", "pretrain.steps=6"]) == 0
    checkpoint = torch.load(run / "checkpoints/last.pt", weights_only=True)
    assert checkpoint["scheduler"]["last_epoch"] == 6


def test_a_head_level_the_flow_does_not_have_is_a_config_error():
    with pytest.raises(ConfigError, match="pretrain.head_level must name one of the flow's 3 levels"):
        load_config(Recipe, DEBUG, ["pretrain.head_level=3"])


def test_export_weights_best_writes_the_lowest_validation_loss_s_weights(tmp_path, photo_folder, monkeypatch):
    losses = iter([1.0, 0.5, 2.0, 3.0])  # steps 1 to 4: the best is step 2, not the last

    def scripted_validation(model, loader, device, settings):
        return {"val/loss": next(losses), "val/ab_rmse": 1.0, "val/gray_ab_rmse": 1.0}

    monkeypatch.setattr(pretrain_pipeline, "validate", scripted_validation)
    run = tmp_path / "pretrain"
    settings = ["--set", "pretrain.steps=4", "--set", "pretrain.val_every=1", "--set", "pretrain.export_weights=best"]
    assert pretrain_pipeline.main(["--config", DEBUG, "--data", str(photo_folder), "--out", str(run), *settings]) == 0
    best = torch.load(run / "checkpoints/best.pt", weights_only=True)
    last = torch.load(run / "checkpoints/last.pt", weights_only=True)
    assert (best["progress"]["step"], last["progress"]["step"]) == (2, 4)
    backbone = load_file(run / "backbone.safetensors")
    baseline = load_file(run / "baseline.safetensors")
    for name, tensor in baseline.items():
        assert torch.equal(tensor, best["model"][name]), name
    for name, tensor in backbone.items():
        assert torch.equal(tensor, best["model"][f"backbone.{name}"]), name
    assert any(not torch.equal(backbone[name], last["model"][f"backbone.{name}"]) for name in backbone)


def test_an_unknown_export_weights_is_a_config_error():
    with pytest.raises(ConfigError, match="export_weights must be 'last' or 'best', got 'first'"):
        load_config(Recipe, DEBUG, ["pretrain.export_weights=first"])
