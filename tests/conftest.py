"""Shared fixtures: tiny generated colour photos, never the network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def make_photos(folder: Path, count: int, size: tuple[int, int] = (40, 32), seed: int = 0) -> Path:
    """``count`` colourful PNGs (width, height = size): two coloured halves plus noise."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        image = rng.uniform(0, 60, size=(size[1], size[0], 3))
        image[: size[1] // 2] += rng.uniform(0, 195, size=3)
        image[size[1] // 2 :] += rng.uniform(0, 195, size=3)
        Image.fromarray(image.astype(np.uint8)).save(folder / f"photo_{index:02d}.png")
    return folder


@pytest.fixture(scope="session")
def photo_folder(tmp_path_factory) -> Path:
    return make_photos(tmp_path_factory.mktemp("photos"), 12)


@pytest.fixture(scope="session")
def debug_release(tmp_path_factory, photo_folder) -> Path:
    """A model release after two debug training steps: barely trained, but complete and seconds to build."""
    import cinn.programs.train as train_pipeline

    config = Path(__file__).resolve().parents[1] / "configs" / "debug.yaml"
    run = tmp_path_factory.mktemp("debug_run") / "run"
    argv = ["--config", str(config), "--data", str(photo_folder), "--out", str(run), "--set", "train.steps=2"]
    assert train_pipeline.main(argv) == 0
    return run / "release"
