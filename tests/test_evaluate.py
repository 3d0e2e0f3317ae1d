"""``pipelines/evaluate.py`` end to end on tiny photos with a debug model trained for two steps."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cinn.programs.evaluate as evaluate
import cinn.programs.train as train_pipeline
import pytest
import torch
import torchvision
import torchvision.transforms.functional as TF
from cinn.conditioning_nets import PretrainingModel
from cinn.programs.evaluation_report import REPORT_FILES
from PIL import Image
from safetensors.torch import save_file

from cinn.color import AB_SCALE, rgb_to_lab
from cinn.colorizer import BASELINE_FILE, Colorizer, conditioning_net_for
from cinn.data import ColorizationDataset, DatasetConfig
from cinn.fid import InceptionFeatures
from cinn.images import list_images

ROOT = Path(__file__).resolve().parents[1]
METRIC_NAMES = {
    "best_of_n_rmse_per_image", "best_of_n_rmse_per_pixel", "best_of_1_rmse", "mean_of_samples_rmse",
    "sample_variance", "pairwise_rmse", "colourfulness", "histogram_distance", "mean_sample_rmse", "cast_error",
    "local_error", "chroma",
}  # fmt: skip


@pytest.fixture(scope="module")
def release(tmp_path_factory, photo_folder) -> Path:
    """A debug release with a (randomly initialised) regression baseline beside it."""
    run = tmp_path_factory.mktemp("evaluate") / "run"
    arguments = ["--config", str(ROOT / "configs/debug.yaml"), "--data", str(photo_folder), "--out", str(run)]
    assert train_pipeline.main([*arguments, "--set", "train.steps=2"]) == 0
    model = Colorizer.from_pretrained(run / "release")
    baseline = PretrainingModel(conditioning_net_for(model.config), hidden_channels=8)
    tensors = {name: tensor.contiguous() for name, tensor in baseline.state_dict().items()}
    save_file(tensors, run / "release" / BASELINE_FILE, {"head_hidden_channels": json.dumps(8)})
    return run / "release"


def save_random_inception(path: Path) -> Path:
    """A random Inception v3 whose batch-norm statistics are fitted to noise images, so its features
    neither vanish nor explode and differ between images."""
    torch.manual_seed(0)
    network = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # running statistics = the plain average over the batches seen
            module.reset_running_stats()
    with torch.no_grad():
        network.train()(torch.rand(4, 3, 299, 299))
    torch.save(network.state_dict(), path)
    return path


def test_report_files_and_numbers(tmp_path, release, photo_folder, capsys):
    out = tmp_path / "report"
    common = ["--model", str(release), "--data", str(photo_folder), "--out", str(out), "--seed", "3"]
    assert evaluate.main([*common, "--n", "3", "--temperatures", "0.5,1.0", "--limit", "10"]) == 0
    assert "FID skipped" in capsys.readouterr().err
    for name in REPORT_FILES:
        assert (out / name).is_file(), name

    report = json.loads((out / "metrics.json").read_text())
    assert report["settings"]["temperatures"] == [0.5, 1.0] and report["settings"]["num_images"] == 10
    assert report["fid"] == {"skipped": "no --inception-weights given"}
    rows = report["aggregates"]["rows"]
    assert list(rows) == ["model@0.5", "model@1", "gray", "regression"]
    for stats in rows.values():
        assert set(stats) == METRIC_NAMES
        for value in stats.values():
            assert value["low"] <= value["mean"] <= value["high"]
    assert rows["model@1"]["pairwise_rmse"]["mean"] > rows["model@0.5"]["pairwise_rmse"]["mean"] > 0
    for record in report["per_image"]:  # the closest of n samples is never farther than any one of them
        for row in ("model@0.5", "model@1"):
            scores = record["scores"][row]
            assert scores["best_of_n_rmse_per_pixel"] <= scores["best_of_n_rmse_per_image"]
            assert scores["best_of_n_rmse_per_image"] <= min(scores["best_of_1_rmse"], scores["mean_sample_rmse"])
            assert scores["best_of_n_rmse_per_image"] < scores["mean_sample_rmse"]  # 3 different samples
    for baseline in ("gray", "regression"):  # one deterministic prediction: no diversity
        assert rows[baseline]["sample_variance"]["mean"] == 0
        assert rows[baseline]["best_of_n_rmse_per_pixel"] == rows[baseline]["best_of_1_rmse"]

    # The gray row is the RMS chroma of the centre crops, computed here from the dataset directly.
    paths = list_images(out / "files.txt")
    assert paths == list_images(photo_folder)[:10]
    dataset = ColorizationDataset(paths, train=False, config=DatasetConfig(lightness_size=16, ab_size=8))
    for record, item in zip(report["per_image"], dataset, strict=True):
        chroma = (item["ab"] * AB_SCALE).pow(2).sum(dim=0).mean().sqrt().item()
        assert record["scores"]["gray"]["best_of_1_rmse"] == pytest.approx(chroma, rel=1e-5)
        assert record["nll_bits_per_dim"] > 0

    table = (out / "report.md").read_text()
    for row in ("| model@0.5 |", "| model@1 |", "| gray |", "| regression |", "| ground truth |"):
        assert row in table
    assert "L change" not in table  # measured on delivered full-size images only
    with Image.open(out / "contact_sheet.png") as sheet:  # 4 photos x 2 temperatures, 128 px tiles
        assert sheet.height >= 8 * 128 and sheet.width >= 6 * 128
    with Image.open(out / "temperature_plot.png") as plot:
        assert plot.width > 600

    assert evaluate.main(common) == 2  # an existing report is not overwritten
    assert "--overwrite" in capsys.readouterr().err


def test_full_resolution_with_fid_and_no_baseline(tmp_path, release, photo_folder, capsys):
    bare = tmp_path / "bare"
    shutil.copytree(release, bare, ignore=shutil.ignore_patterns(BASELINE_FILE))
    weights = save_random_inception(tmp_path / "inception.pt")
    out = tmp_path / "full"
    arguments = ["--model", str(bare), "--data", str(photo_folder), "--out", str(out), "--full-resolution"]
    assert evaluate.main([*arguments, "--n", "2", "--temperatures", "0.7", "--limit", "3",
                          "--inception-weights", str(weights)]) == 0  # fmt: skip
    report = json.loads((out / "metrics.json").read_text())
    assert report["settings"]["resolution"] == "full"
    assert list(report["aggregates"]["rows"]) == ["model@0.7", "gray"]
    assert "absent" in report["settings"]["regression_baseline"]
    assert "absent: the release has no baseline.safetensors" in (out / "report.md").read_text()
    assert set(report["fid"]) == {"model@0.7", "gray"}
    assert all(0 < value < float("inf") for value in report["fid"].values())
    with Image.open(photo_folder / "photo_00.png") as photo, Image.open(out / "contact_sheet.png") as sheet:
        assert photo.size == (40, 32) and sheet.height >= 3 * 128  # tiles of full-size colorizations
    # The gray row at full resolution: the whole photo's RMS chroma (up to the 8-bit rounding of the gray output).
    with Image.open(photo_folder / "photo_00.png") as photo:
        lab = rgb_to_lab(TF.pil_to_tensor(photo.convert("RGB")).float()[None] / 255)
    gray = report["per_image"][0]["scores"]["gray"]
    assert gray["best_of_1_rmse"] == pytest.approx(lab[:, 1:].pow(2).sum(dim=1).mean().sqrt().item(), abs=1.0)
    assert gray["colourfulness"] < 1.0
    for row in ("model@0.7", "gray"):  # every delivered image keeps the photo's L, up to 8-bit rounding
        assert 0 <= report["per_image"][0]["scores"][row]["lightness_change"] < 1.0
    assert " L change |" in (out / "report.md").read_text()


def test_user_errors_are_one_line(tmp_path, photo_folder, capsys, monkeypatch):
    monkeypatch.setattr(evaluate.cinn, "DEFAULT_MODEL", tmp_path / "no-model")
    assert evaluate.main(["--data", str(photo_folder), "--out", str(tmp_path / "r")]) == 2
    assert f"error: model release '{tmp_path / 'no-model'}' does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaluate.main(["--data", str(photo_folder), "--out", str(tmp_path / "r"), "--temperatures", "0.5,x"])
    bad = tmp_path / "bad.pt"
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="not a torchvision inception_v3 state dict"):
        InceptionFeatures(bad)
    with pytest.raises(FileNotFoundError, match="do not exist"):
        InceptionFeatures(tmp_path / "missing.pt")


def test_per_category_table(tmp_path, release, photo_folder):
    data = tmp_path / "photos"
    shutil.copytree(photo_folder, data)
    names = sorted(path.name for path in data.iterdir())
    lines = [f"{name}\t{'animals' if index % 3 else 'people'}" for index, name in enumerate(names[:6])]
    (data / evaluate.CATEGORIES_FILE).write_text("# file<TAB>category\n" + "\n".join(lines) + "\n")
    out = tmp_path / "report"
    arguments = ["--model", str(release), "--data", str(data), "--out", str(out), "--limit", "6", "--n", "2"]
    assert evaluate.main([*arguments, "--temperatures", "0.7"]) == 0
    report = json.loads((out / "metrics.json").read_text())
    table = report["by_category"]["model@0.7"]
    assert list(table) == ["animals", "people", "all"]
    assert (table["animals"]["photos"], table["people"]["photos"], table["all"]["photos"]) == (4, 2, 6)
    people = [record for record in report["per_image"] if record["category"] == "people"]
    assert sorted(Path(record["path"]).name for record in people) == [names[0], names[3]]
    model = sum(record["scores"]["model@0.7"]["best_of_n_rmse_per_image"] for record in people)
    gray = sum(record["scores"]["gray"]["best_of_1_rmse"] for record in people)
    assert table["people"]["best-of-n / gray"] == pytest.approx(model / gray)
    chroma = sum(record["scores"]["model@0.7"]["chroma"] for record in people)
    truth = sum(record["truth_chroma"] for record in people)
    assert table["people"]["chroma / true"] == pytest.approx(chroma / truth)
    assert "| people | 2 |" in (out / "report.md").read_text()

    (data / evaluate.CATEGORIES_FILE).write_text("photo_00.png animals\n")
    assert evaluate.main([*arguments, "--overwrite"]) == 2  # a malformed line is a one-line error


def test_an_overwritten_report_replaces_symlinks_and_never_writes_through_them(tmp_path, release, photo_folder):
    out, outside = tmp_path / "report", tmp_path / "outside.md"
    arguments = ["--model", str(release), "--data", str(photo_folder), "--out", str(out), "--limit", "2", "--n", "1"]
    assert evaluate.main(arguments) == 0
    outside.write_text("the user's own file\n")
    (out / "report.md").unlink()
    (out / "report.md").symlink_to(outside)
    assert evaluate.main([*arguments, "--overwrite"]) == 0
    assert outside.read_text() == "the user's own file\n"
    assert not (out / "report.md").is_symlink() and "| model@" in (out / "report.md").read_text()
    assert sorted(path.name for path in out.iterdir() if path.name.startswith(".")) == [], "temporaries left behind"
