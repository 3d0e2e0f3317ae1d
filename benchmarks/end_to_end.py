"""End-to-end figures of the project's programs: colorize a photo, train a recipe, load its data."""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from PIL import Image

from cinn import DEFAULT_MODEL
from cinn.colorizer import Colorizer
from cinn.config import load_config
from cinn.images import list_images, load_rgb
from cinn.recipe import Recipe

ROOT = Path(__file__).resolve().parent.parent
KIT = ROOT / "photos" / "kit"


def median_seconds(run, repeats: int) -> float:
    """Median wall-clock seconds of ``run()`` over ``repeats`` calls, after one warm-up call."""
    run()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def test_photo(side: int) -> tuple[Image.Image, str]:
    """A square colour photo: the kit's first validation photo, else a generated gradient."""
    photos = list_images(KIT / "val") if (KIT / "val").is_dir() else []
    if photos:
        image = load_rgb(photos[0])
        crop = min(image.size)
        image = image.crop((0, 0, crop, crop)).resize((side, side), Image.Resampling.BICUBIC)
        return image, Path(photos[0]).resolve().relative_to(ROOT).as_posix()
    ramp = torch.linspace(0, 255, side).to(torch.uint8)
    rows, columns = ramp[:, None].expand(side, side), ramp[None, :].expand(side, side)
    rgb = torch.stack([columns, rows, columns.flip(1)], dim=-1)
    return Image.fromarray(rgb.numpy()), "generated gradient (no photo kit)"


def colorize_row(recipe: Recipe, side: int, num_samples: int, repeats: int, device: torch.device) -> dict:
    """Seconds for ``Colorizer.colorize`` of one ``side`` x ``side`` photo, ``num_samples`` samples."""
    if (DEFAULT_MODEL / "model.safetensors").is_file():
        model, note = Colorizer.from_pretrained(DEFAULT_MODEL, device), "the shipped default model"
    else:
        model = Colorizer(recipe.model).to(device).eval()
        note = "freshly initialised default recipe (cinn/pretrained/default does not exist yet)"
    image, source = test_photo(side)
    generator = torch.Generator(device).manual_seed(0)
    seconds = median_seconds(lambda: model.colorize(image, num_samples, generator=generator), repeats)
    return {
        "measure": f"colorize a {side}x{side} photo, {num_samples} samples",
        "value": seconds,
        "unit": "s",
        "note": f"{note}; photo: {source}",
    }


def training_rows(recipe: Recipe, batch: int, repeats: int, device: torch.device) -> list[dict]:
    """Images/s of pipelines/train.py's optimisation step on random batches, per training phase."""
    from cinn.flow_training import Progress, build_optimizer, optimisation_step, wrap
    from cinn.training import ProcessGroup

    torch.manual_seed(0)
    model = Colorizer(recipe.model).to(device)
    optimizer, _ = build_optimizer(model, recipe)
    lightness_side, ab_side = recipe.model.lightness_size, recipe.model.ab_size
    lightness = torch.rand(batch, 1, lightness_side, lightness_side, device=device) * 2 - 1
    ab = 0.3 * torch.randn(batch, 2, ab_side, ab_side, device=device)
    rows = []
    for frozen, phase in ((True, "conditioning net frozen"), (False, "joint")):
        forward = wrap(model, frozen, ProcessGroup(), device)

        def step(forward=forward):
            optimisation_step(forward, model, optimizer, lightness, ab, recipe, Progress())
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        seconds = median_seconds(step, repeats)
        rows.append(
            {
                "measure": f"training, {phase}",
                "value": batch / seconds,
                "unit": "images/s",
                "note": f"batch {batch}, lightness {lightness_side}, ab {ab_side}, random data",
            }
        )
    return rows


def data_loading_row(recipe: Recipe, batches: int, batch: int) -> dict | None:
    """Photos/s of the recipe's training DataLoader over the photo kit (None without a kit)."""
    from data_loading import photos_per_second

    if not (KIT / "train").is_dir():
        return None
    paths = list_images(KIT / "train")
    workers = recipe.data.num_workers
    args = argparse.Namespace(batches=batches, batch_size=batch, workers=workers)
    rate = photos_per_second(paths, recipe.data.dataset_config(recipe.model), args)
    return {
        "measure": "data loading",
        "value": rate,
        "unit": "photos/s",
        "note": f"photos/kit/train, batch {batch}, {workers} workers, {batches} batches",
    }


def end_to_end_rows(config: Path, quick: bool, repeats: int, device: torch.device) -> list[dict]:
    """All end-to-end figures for the recipe ``config``, printed as they come."""
    recipe = load_config(Recipe, config)
    if quick:
        rows = [colorize_row(recipe, 128, 2, 1, device), *training_rows(recipe, 2, 1, device)]
        loading = data_loading_row(recipe, 2, 4)
    else:
        rows = [colorize_row(recipe, 512, 8, repeats, device)]
        rows += training_rows(recipe, recipe.train.batch_size, repeats, device)
        loading = data_loading_row(recipe, 10, recipe.train.batch_size)
    rows += [loading] if loading else []
    for row in rows:
        print(f"{row['measure']:<44} {row['value']:>9.2f} {row['unit']:<9} {row['note']}", flush=True)
    return rows


if __name__ == "__main__":
    # python benchmarks/end_to_end.py --photos DIR: the colorize command's stages against a baseline commit.
    from colorize_stages import main

    main()
