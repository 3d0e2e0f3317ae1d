"""Training pipeline: config errors, release export, exact resume, torchrun, non-finite steps."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import cinn.programs.train as train_pipeline
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

import cinn.flow_training as flow_training
from cinn.colorizer import Colorizer
from cinn.config import ConfigError, load_config
from cinn.images import list_images
from cinn.recipe import Recipe

ROOT = Path(__file__).resolve().parents[1]
DEBUG = str(ROOT / "configs" / "debug.yaml")


def run_train(*args: str) -> int:
    return train_pipeline.main(["--config", DEBUG, *args])


def read_log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_config_errors_name_the_key(tmp_path, capsys, photo_folder):
    with pytest.raises(ConfigError, match="train.lrr"):
        load_config(Recipe, DEBUG, ["train.lrr=1e-3"])
    with pytest.raises(ConfigError, match="'model.flow.hidden_channels\\[0\\]' must be of type int"):
        load_config(Recipe, DEBUG, ["model.flow.hidden_channels=[a, 8, 8]"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  stepz: 3\n")
    with pytest.raises(ConfigError, match="unknown config key 'train.stepz'"):
        load_config(Recipe, bad)
    code = train_pipeline.main(["--config", str(bad), "--data", str(photo_folder), "--out", str(tmp_path / "r")])
    assert code == 2
    assert "unknown config key 'train.stepz'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.grad_clip=-1", "'train.grad_clip' must be > 0, got -1"),
        ("train.lr=-1", "'train.lr' must be > 0"),
        ("train.lr=.nan", "'train.lr' must be a finite number"),
        ("train.lr=.inf", "'train.lr' must be a finite number"),
        ("model.flow.coupling_settings.clamp=0", "'model.flow.coupling_settings.clamp' must be > 0"),
        ("model.flow.coupling_settings.clamp=.nan", "'model.flow.coupling_settings.clamp' must be a finite number"),
        ("model.flow.coupling=nosuch", "coupling must be one of ['affine', 'spline'], got 'nosuch'"),
        ("train.steps=0", "'train.steps' must be > 0"),
        ("train.log_every=0", "'train.log_every' must be > 0"),
        ("train.checkpoint_every=0", "'train.checkpoint_every' must be > 0"),
        ("model.ab_size=0", "'model.ab_size' must be > 0"),
        ("model.flow.hidden_channels=[0, 8, 8]", "'model.flow.hidden_channels[0]' must be > 0"),
        ("data.crop_scale=[0, 1]", "'data.crop_scale[0]' must be > 0"),
        ("model.temperature=-1", "'model.temperature' must be >= 0"),
        ("pretrain.rebalance_mix=2", "'pretrain.rebalance_mix' must be >= 0 and <= 1"),
        ("model.conditioning_kwargs.widht=8", "conditioning_kwargs.widht is not a setting of the 'small' net"),
    ],
)
def test_values_that_cannot_be_right_are_refused_at_load_time(tmp_path, photo_folder, capsys, override, message):
    run = tmp_path / "run"
    assert run_train("--data", str(photo_folder), "--out", str(run), "--set", override) == 2
    assert message in capsys.readouterr().err
    assert not run.exists()  # refused before anything was written


def test_debug_run_writes_a_release_that_samples(tmp_path, photo_folder):
    run = tmp_path / "run"
    assert run_train("--data", str(photo_folder), "--out", str(run), "--set", "train.steps=2") == 0
    for name in ("config.yaml", "train.txt", "val.txt", "log.jsonl", "checkpoints/last.pt"):
        assert (run / name).is_file(), name
    validation = [entry["val/bits_per_dim"] for entry in read_log(run) if "val/bits_per_dim" in entry]
    assert validation and all(math.isfinite(value) for value in validation)
    model = Colorizer.from_pretrained(run / "release")
    # The card's figures are the run's own: parameter counts counted here, and the provenance in the weights.
    card = (run / "release/README.md").read_text()
    flow_parameters = sum(parameter.numel() for parameter in model.flow.parameters())
    assert f"{flow_parameters:,} parameters" in card and "default sampling temperature: 0.7" in card
    with safe_open(str(run / "release/model.safetensors"), "pt") as weights:
        provenance = weights.metadata()
    assert json.loads(provenance["steps"]) == 2 and json.loads(provenance["train_photos"]) == len(
        (run / "train.txt").read_text().splitlines()[1:]
    )
    ab = model.sample(torch.zeros(3, 1, 16, 16), num_samples=5, temperature=0.7)
    assert ab.shape == (3, 5, 2, 8, 8) and torch.isfinite(ab).all()
    assert (ab[:, 0] - ab[:, 1]).abs().max() > 0  # samples differ
    # A second new run into the same directory would overwrite it: refused.
    assert run_train("--data", str(photo_folder), "--out", str(run)) == 2


def test_a_release_is_never_left_half_written(tmp_path, photo_folder, monkeypatch):
    """Writing the weights fails after the config was written: no release directory appears, and
    no temporary is left behind."""
    import cinn.colorizer

    def failing_save_file(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(cinn.colorizer, "save_file", failing_save_file)
    run = tmp_path / "run"
    with pytest.raises(OSError, match="No space left"):
        run_train("--data", str(photo_folder), "--out", str(run), "--set", "train.steps=1")
    assert (run / "checkpoints/last.pt").is_file()
    assert not (run / "release").exists()
    assert not [path.name for path in run.iterdir() if "release" in path.name]


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_mid_step_saves_a_checkpoint_that_resumes_exactly(tmp_path, photo_folder, monkeypatch,
                                                                          signal_number):  # fmt: skip
    """The signal arrives right after step 3's Adam update, before its step counter moves: the run
    finishes the step, saves, and the resumed run ends with the uninterrupted run's weights."""
    common = ["--data", str(photo_folder), "--set", "train.steps=5", "--set", "train.val_every=100",
              "--set", "train.checkpoint_every=100"]  # fmt: skip
    assert run_train(*common, "--out", str(tmp_path / "straight")) == 0

    real_step, calls = train_pipeline.optimisation_step, []

    def signal_after_the_third_update(*args, **kwargs):
        result = real_step(*args, **kwargs)
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal_number)  # as Ctrl-C or a cluster's pre-emption would
        return result

    monkeypatch.setattr(train_pipeline, "optimisation_step", signal_after_the_third_update)
    assert run_train(*common, "--out", str(tmp_path / "resumed")) == 130
    monkeypatch.setattr(train_pipeline, "optimisation_step", real_step)
    checkpoint = torch.load(tmp_path / "resumed/checkpoints/last.pt", weights_only=True)
    assert checkpoint["progress"]["step"] == 3
    assert train_pipeline.main(["--out", str(tmp_path / "resumed"), "--resume"]) == 0

    straight = load_file(tmp_path / "straight/release/model.safetensors")
    resumed = load_file(tmp_path / "resumed/release/model.safetensors")
    assert straight.keys() == resumed.keys()
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name


def test_non_finite_step_is_skipped_and_counted(tmp_path, photo_folder, monkeypatch):
    real_loss, calls = flow_training.map_loss, []

    def nan_on_second_call(*args, **kwargs):
        loss = real_loss(*args, **kwargs)
        calls.append(1)
        if len(calls) == 2:
            loss.total = loss.total * float("nan")
        return loss

    monkeypatch.setattr(flow_training, "map_loss", nan_on_second_call)
    run = tmp_path / "nan"
    assert run_train("--data", str(photo_folder), "--out", str(run)) == 0
    log = [entry for entry in read_log(run) if "train/skipped_steps" in entry]
    assert [entry["train/skipped_steps"] for entry in log] == [0, 1, 1, 1]
    weights = load_file(run / "release/model.safetensors")
    assert all(torch.isfinite(tensor.float()).all() for tensor in weights.values())


def test_many_non_finite_steps_stop_the_run(tmp_path, photo_folder, monkeypatch, capsys):
    real_loss = flow_training.map_loss

    def always_nan(*args, **kwargs):
        loss = real_loss(*args, **kwargs)
        loss.total = loss.total * float("nan")
        return loss

    monkeypatch.setattr(flow_training, "map_loss", always_nan)
    code = run_train("--data", str(photo_folder), "--out", str(tmp_path / "x"), "--set", "train.max_bad_steps=3")
    assert code == 2
    assert "3 non-finite steps in a row" in capsys.readouterr().err


def test_torchrun_two_processes_keep_identical_weights(tmp_path, photo_folder):
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(ROOT / "pipelines" / "train.py"), "--config", DEBUG, "--data", str(photo_folder),
        "--out", str(tmp_path / "ddp"),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "weights identical on all 2 ranks" in result.stdout
    assert (tmp_path / "ddp/release/model.safetensors").is_file()


class PlantedCode:
    """Unpickling this runs ``Path.touch`` on a marker file: what a tampered checkpoint could do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_resume_never_runs_code_planted_in_a_checkpoint(tmp_path, photo_folder, capsys):
    run = tmp_path / "run"
    common = ["--data", str(photo_folder), "--out", str(run)]
    assert run_train(*common, "--set", "train.steps=2") == 0
    checkpoint = torch.load(run / "checkpoints/last.pt", weights_only=True)  # the project's own: plain data
    marker = tmp_path / "code-ran"
    checkpoint["progress"]["note"] = PlantedCode(marker)
    torch.save(checkpoint, run / "checkpoints/last.pt")
    assert train_pipeline.main(["--out", str(run), "--resume"]) == 2
    assert not marker.exists()
    assert "is not a readable checkpoint" in capsys.readouterr().err
    (run / "checkpoints/last.pt").write_bytes(b"")  # a 0-byte checkpoint: one line, not a traceback
    assert train_pipeline.main(["--out", str(run), "--resume"]) == 2
    assert "is not a readable checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("program", ["train", "pretrain_condnet"])
def test_no_usable_photo_is_an_error_not_an_endless_loop(tmp_path, program, photo_folder):
    grey = tmp_path / "grey"
    grey.mkdir()
    for index in range(3):
        Image.new("RGB", (40, 32), (index * 60, index * 60, index * 60)).save(grey / f"grey_{index}.png")
    (grey / "broken.jpg").write_bytes(b"not a jpeg")
    command = [sys.executable, str(ROOT / "pipelines" / f"{program}.py"), "--config", DEBUG, "--data", str(grey),
               "--val-data", str(photo_folder), "--out", str(tmp_path / "run")]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "none of the 4 training photos is usable" in result.stderr


def test_a_run_directory_serves_one_training_program_at_a_time(tmp_path, photo_folder, capsys):
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, sys, time\n"
        f"handle = open({str(run / '.lock')!r}, 'a'); fcntl.flock(handle, fcntl.LOCK_EX)\n"
        "print('locked', flush=True); time.sleep(60)\n"
    )], stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert run_train("--data", str(photo_folder), "--out", str(run), "--set", "train.steps=1") == 2
        assert f"another program is training in '{run.resolve()}'" in capsys.readouterr().err
        assert not (run / "checkpoints").exists()
    finally:
        holder.kill()
        holder.wait()


def test_validation_photos_inside_the_data_folder_are_not_trained_on(tmp_path, photo_folder):
    data = tmp_path / "kit"
    shutil.copytree(photo_folder, data / "train")
    shutil.copytree(photo_folder, data / "val", ignore=lambda folder, names: sorted(names)[4:])
    run = tmp_path / "run"
    assert run_train("--data", str(data), "--val-data", str(data / "val"), "--out", str(run),
                     "--set", "train.steps=1") == 0  # fmt: skip
    train = set(list_images(run / "train.txt"))
    val = set(list_images(run / "val.txt"))
    assert len(val) == 4 and not train & val and len(train) == len(list_images(photo_folder))


def test_a_missing_run_or_an_unknown_device_is_one_sentence(tmp_path, photo_folder, capsys):
    assert train_pipeline.main(["--out", str(tmp_path / "none"), "--resume"]) == 2
    assert "holds no run to resume" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()
    args = ["--config", DEBUG, "--data", str(photo_folder), "--out", str(tmp_path / "run"), "--device", "tpu"]
    assert train_pipeline.main(args) != 0
    assert "unknown device 'tpu'" in capsys.readouterr().err
