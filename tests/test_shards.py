"""Tar shards: written by make_shards.py, streamed by training with the folder reader's split and items."""

from __future__ import annotations

import os
import signal
import tarfile
from pathlib import Path

import cinn.programs.make_shards as make_shards
import cinn.programs.train as train_pipeline
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from cinn.data import ColorizationDataset, DatasetConfig, collate_skipping, split_train_val
from cinn.errors import DataError
from cinn.images import list_images
from cinn.shards import Selection, ShardedPhotos, expand_shards, select, shard_names, shard_split

DEBUG = str(Path(__file__).resolve().parents[1] / "configs" / "debug.yaml")
CONFIG = DatasetConfig(lightness_size=16, ab_size=8, min_colourfulness=1.0)


def make_class_folders(root: Path, count: int) -> Path:
    """``count`` colourful photos in three class folders, JPEG (reduced decoding applies) and PNG, one name
    with several dots."""
    rng = np.random.default_rng(1)
    for index in range(count):
        folder = root / f"n0{index % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.uniform(0, 60, size=(96, 128, 3)) + rng.uniform(0, 195, size=3)
        name = f"photo_{index:02d}.v2.png" if index == 0 else f"photo_{index:02d}.{'png' if index % 4 else 'jpg'}"
        Image.fromarray(pixels.astype(np.uint8)).save(folder / name)
    return root


@pytest.fixture(scope="module")
def photos_and_shards(tmp_path_factory) -> tuple[Path, str]:
    """16 photos in a folder tree, and the same photos in 8 shards of 2."""
    base = tmp_path_factory.mktemp("shards")
    photos = make_class_folders(base / "photos", 16)
    out = base / "shards" / "all"
    assert make_shards.main(["--data", str(photos), "--out", str(out), "--photos-per-shard", "2"]) == 0
    return photos, f"{out}-{{000000..000007}}.tar"


def items_by_name(items) -> dict[str, dict]:
    return {item["path"]: item for item in items if item is not None}


def test_shards_hold_the_folder_photos_byte_for_byte(photos_and_shards):
    photos, pattern = photos_and_shards
    shards = expand_shards(pattern)
    assert len(shards) == 8
    stored = {}
    for shard in shards:
        with tarfile.open(shard) as archive:
            stored.update({member.name: archive.extractfile(member).read() for member in archive})
    expected = {Path(os.path.relpath(path, photos)).as_posix(): Path(path).read_bytes() for path in list_images(photos)}
    assert stored == expected and "n00/photo_00.v2.png" in stored


def test_split_and_validation_items_equal_the_folder_readers(photos_and_shards):
    photos, pattern = photos_and_shards
    train_set, train, val_set, val = shard_split(pattern, None, 0.3)
    folder_train, folder_val = split_train_val(list_images(photos), photos, 0.3)
    relative = [Path(os.path.relpath(path, photos)).as_posix() for path in folder_val]
    assert val == sorted(relative) and len(val) > 0
    assert train == sorted(Path(os.path.relpath(path, photos)).as_posix() for path in folder_train)
    assert len(ShardedPhotos(train_set, config=CONFIG)) == len(train)

    streamed = items_by_name(ShardedPhotos(val_set, train=False, config=CONFIG))
    folder = ColorizationDataset(folder_val, train=False, config=CONFIG)
    assert sorted(streamed) == val
    for index, name in enumerate(relative):
        expected = folder[index]
        assert torch.equal(streamed[name]["lightness"], expected["lightness"]), name
        assert torch.equal(streamed[name]["ab"], expected["ab"]), name


def test_each_rank_and_worker_reads_its_own_shards(photos_and_shards):
    """2 ranks x 2 workers over 8 shards of 2 photos: in every epoch each photo is read exactly once."""
    _, pattern = photos_and_shards
    index = {shard: shard_names(shard) for shard in expand_shards(pattern)}
    shard_set, names = select(index, Selection())
    stream = ShardedPhotos(shard_set, config=CONFIG)
    for epoch in range(3):
        dealt = [stream.ordered(7, 0, 1, rank, 2).shards_of(epoch, worker, 2) for rank in (0, 1) for worker in (0, 1)]
        assert sorted(shard for shards in dealt for shard in shards) == list(range(8)), dealt
    assert stream.shards_of(0, 0, 1) != stream.ordered(7, 0, 1).shards_of(1, 0, 1)  # epochs reshuffle

    seen = []
    for rank in (0, 1):
        loader = DataLoader(stream.ordered(7, 0, 1, rank, 2), batch_size=1, num_workers=2, collate_fn=collate_skipping)
        batches = iter(loader)
        seen.append([next(batches)["path"][0] for _ in range(8)])  # an epoch: 2 workers x 2 shards x 2 photos
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == names


def test_a_resumed_stream_continues_with_the_same_photos_and_crops(photos_and_shards):
    _, pattern = photos_and_shards
    shard_set, _ = select({shard: shard_names(shard) for shard in expand_shards(pattern)}, Selection())
    stream = ShardedPhotos(shard_set, config=CONFIG)

    def batches(start: int, count: int) -> list[dict]:
        loader = DataLoader(stream.ordered(3, start, 3), batch_size=3, num_workers=2, collate_fn=collate_skipping)
        iterator = iter(loader)
        return [next(iterator) for _ in range(count)]

    straight = batches(0, 9)  # 54 photos: past the end of each worker's first epoch (8 photos)
    resumed = batches(5, 4)
    for expected, got in zip(straight[5:], resumed, strict=True):
        assert expected["path"] == got["path"]
        assert torch.equal(expected["lightness"], got["lightness"]) and torch.equal(expected["ab"], got["ab"])


def test_training_on_shards_publishes_the_folder_split_and_resumes_exactly(tmp_path, photos_and_shards, monkeypatch):
    photos, pattern = photos_and_shards
    common = ["--set", "train.steps=4", "--set", "train.val_every=100", "--set", "train.checkpoint_every=100"]
    assert (
        train_pipeline.main(["--config", DEBUG, "--data", str(photos), "--out", str(tmp_path / "folder"), *common]) == 0
    )
    assert (
        train_pipeline.main(["--config", DEBUG, "--data", pattern, "--out", str(tmp_path / "straight"), *common]) == 0
    )
    for name in ("train.txt", "val.txt"):
        folder = sorted(os.path.relpath(path, photos) for path in list_images(tmp_path / "folder" / name))
        assert (tmp_path / "straight" / name).read_text().splitlines()[1:] == folder, name

    real_step, calls = train_pipeline.optimisation_step, []

    def stop_after_the_second_update(*args, **kwargs):
        result = real_step(*args, **kwargs)
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return result

    monkeypatch.setattr(train_pipeline, "optimisation_step", stop_after_the_second_update)
    assert (
        train_pipeline.main(["--config", DEBUG, "--data", pattern, "--out", str(tmp_path / "resumed"), *common]) == 130
    )
    monkeypatch.setattr(train_pipeline, "optimisation_step", real_step)
    assert train_pipeline.main(["--out", str(tmp_path / "resumed"), "--resume"]) == 0
    straight = load_file(tmp_path / "straight/release/model.safetensors")
    resumed = load_file(tmp_path / "resumed/release/model.safetensors")
    assert all(torch.equal(straight[name], resumed[name]) for name in straight)


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("{shards}/all-{{000000..000007.tar", "has unbalanced braces"),
        ("{shards}/all-{{000000..000009}}.tar", "all-000008.tar' (and 1 more of its 10), which does not exist"),
        ("{shards}/not-a-tar.tar", "not-a-tar.tar' is not a readable tar shard"),
    ],
)
def test_a_bad_shard_pattern_is_one_sentence(tmp_path, photos_and_shards, capsys, pattern, message):
    shards = Path(expand_shards(photos_and_shards[1])[0]).parent
    (shards / "not-a-tar.tar").write_text("plain text")
    argv = ["--config", DEBUG, "--data", pattern.format(shards=shards), "--out", str(tmp_path / "run")]
    assert train_pipeline.main(argv) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1


def test_too_few_shards_for_the_readers_is_an_error(photos_and_shards):
    shard_set, _ = select({shard: shard_names(shard) for shard in expand_shards(photos_and_shards[1])}, Selection())
    with pytest.raises(DataError, match="8 shards cannot feed 12 readers"):
        ShardedPhotos(shard_set, config=CONFIG).ordered(0, 0, 4, rank=0, world_size=3).check_readers(4)
