"""Evaluate a colorization release: error, diversity and colour of its samples against true colours.

For every photo and temperature, N samples are drawn and compared with the photo's own ab, beside
two baselines on the same photos: all-gray (ab = 0) and the regression head of the pretrained
conditioning net (the release's baseline.safetensors, when it ships one). Errors are RMSE of ab in
Lab units. By default everything is computed at the model's ab working resolution on the
centre-cropped square (the validation crop of training: fast); --full-resolution instead scores the
full-size colorizations of Colorizer.colorize_photo against the whole photo (slow). The report
directory gets metrics.json, report.md, contact_sheet.png, temperature_plot.png and files.txt.

Examples:
    python pipelines/evaluate.py --data photos/kit/val --out reports/default
    python pipelines/evaluate.py --model runs/x/release --data runs/x/val.txt --n 8 --temperatures 0.5,0.7,1.0 \\
        --limit 100 --seed 1 --out reports/x
    python pipelines/evaluate.py --data photos/kit/val --full-resolution --out reports/full
    python pipelines/evaluate.py --data photos/kit/val --inception-weights inception_v3.pth --out reports/fid
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from cinn.conditioning_nets import PretrainingModel
from cinn.programs.cli import documented_parser, user_errors_exit
from cinn.programs.evaluation_report import ImageResult, ReportCollector, check_report_directory, row_name, write_report
from tqdm import tqdm

import cinn
from cinn import metrics
from cinn.color import denormalize_ab, denormalize_lightness, normalized_lab_to_rgb, rgb_to_lab
from cinn.colorizer import BASELINE_FILE, Colorizer, load_regression_baseline
from cinn.data import ColorizationDataset, DatasetConfig
from cinn.errors import DataError
from cinn.fid import InceptionFeatures
from cinn.images import ImageLoadError, list_images, load_rgb
from cinn.inference import prepare_photo, recombine, to_pil
from cinn.training import resolve_device, validation_loader

CATEGORIES_FILE = "categories.tsv"  # written by make_photo_kit.py beside each split's photos


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = documented_parser(__doc__)
    parser.add_argument("--model", type=Path, default=cinn.DEFAULT_MODEL, help="release directory (default: shipped)")
    parser.add_argument("--data", required=True, help="photo folder or list file (one path a line)")
    parser.add_argument("--out", type=Path, required=True, help="report directory")
    parser.add_argument("--n", type=int, default=8, help="samples per photo and temperature (default 8)")
    parser.add_argument(
        "--temperatures", default=None, help="comma-separated (default: 0.5, the model's own temperature and 1.0)"
    )
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N listed photos")
    parser.add_argument("--seed", type=int, default=0, help="seeds sampling and the bootstrap (default 0)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    parser.add_argument("--batch-size", type=int, default=16, help="photos per batch at working resolution")
    parser.add_argument("--full-resolution", action="store_true", help="score full-size colorizations (slow)")
    parser.add_argument("--sheet-images", type=int, default=4, help="photos on the contact sheet (default 4)")
    parser.add_argument("--inception-weights", type=Path, help="local torchvision inception_v3 state dict: adds FID")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing report in --out")
    parser.add_argument(
        "--categories",
        type=Path,
        help=f"file of 'photo file name<TAB>category' lines for a per-category table "
        f"(default: {CATEGORIES_FILE} inside --data, if there is one)",
    )
    args = parser.parse_args(argv)
    if args.temperatures is not None:
        try:
            args.temperatures = [float(value) for value in args.temperatures.split(",") if value.strip()]
        except ValueError:
            parser.error(f"--temperatures must be comma-separated numbers, got {args.temperatures!r}")
        finite = all(math.isfinite(value) and value >= 0 for value in args.temperatures)
        if not args.temperatures or not finite or len(set(args.temperatures)) < len(args.temperatures):
            parser.error("--temperatures needs distinct finite values >= 0")
    if args.n < 1 or args.batch_size < 1 or args.sheet_images < 0 or (args.limit is not None and args.limit < 1):
        parser.error("--n, --batch-size and --limit must be >= 1 and --sheet-images >= 0")
    return args


def read_categories(data: str, categories: Path | None) -> dict[str, str]:
    """Photo file name -> category, from ``categories`` or the data folder's own ``categories.tsv``."""
    if categories is None:
        categories = Path(data) / CATEGORIES_FILE
        if not categories.is_file():
            return {}
    if not categories.is_file():
        raise FileNotFoundError(f"--categories file '{categories}' does not exist")
    table = {}
    for number, line in enumerate(categories.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != 2 or not all(field.strip() for field in fields):
            raise DataError(f"{categories}:{number}: expected 'file name<TAB>category', got {line!r}")
        table[fields[0]] = fields[1]
    return table


def score(samples: torch.Tensor, truth: torch.Tensor, lightness: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every per-image metric of ``cinn.metrics`` for a batch, in Lab units.

    Args:
        samples: (B, N, 2, H, W) ab; a deterministic baseline is one sample (N = 1).
        truth: (B, 2, H, W) ab.
        lightness: (B, 1, H, W) L in [0, 100] at the same size.

    Returns:
        metric name -> (B,).
    """
    colourfulness = [metrics.lab_colourfulness(lightness, sample) for sample in samples.unbind(dim=1)]
    histograms = [
        metrics.histogram_intersection_distance(metrics.ab_histogram(own), metrics.ab_histogram(true))
        for own, true in zip(samples, truth, strict=True)
    ]
    return {
        "best_of_n_rmse_per_image": metrics.best_of_n_rmse_per_image(samples, truth),
        "best_of_n_rmse_per_pixel": metrics.best_of_n_rmse_per_pixel(samples, truth),
        "best_of_1_rmse": metrics.best_of_one_rmse(samples, truth),
        "mean_sample_rmse": metrics.mean_sample_rmse(samples, truth),
        "cast_error": metrics.cast_error(samples, truth),
        "local_error": metrics.local_error(samples, truth),
        "chroma": metrics.mean_chroma(samples).mean(dim=-1),
        "mean_of_samples_rmse": metrics.mean_of_samples_rmse(samples, truth),
        "sample_variance": metrics.sample_variance(samples),
        "pairwise_rmse": metrics.mean_pairwise_rmse(samples),
        "colourfulness": torch.stack(colourfulness, dim=1).mean(dim=1),
        "histogram_distance": torch.stack(histograms).to(samples.dtype),
    }


def display_images(lightness: torch.Tensor, ab: torch.Tensor) -> list[list]:
    """Normalised lightness (B, 1, Hl, Wl) + ab (B, N, 2, h, w) -> B lists of N PIL images at Hl x Wl."""
    batch, count = ab.shape[:2]
    upsampled = F.interpolate(ab.flatten(0, 1), size=lightness.shape[-2:], mode="bilinear", align_corners=False)
    rgb = normalized_lab_to_rgb(lightness.repeat_interleave(count, dim=0), upsampled).cpu()
    return [[to_pil(image, None) for image in rgb[index * count : (index + 1) * count]] for index in range(batch)]


@torch.no_grad()
def evaluate_crops(
    model: Colorizer, baseline: PretrainingModel | None, batch: dict, args: argparse.Namespace, generators: list
) -> list[ImageResult]:
    """Scores a batch of centre crops at the model's working resolution (the default mode)."""
    device = next(model.parameters()).device
    lightness, ab = batch["lightness"].to(device), batch["ab"].to(device)
    predictions = {
        row_name(temperature): model.sample(lightness, args.n, temperature, generator)
        for temperature, generator in zip(args.temperatures, generators, strict=True)
    }
    predictions["gray"] = torch.zeros_like(ab)[:, None]
    if baseline is not None:
        predictions["regression"] = baseline.predict_ab(lightness, out_size=tuple(ab.shape[-2:]))[:, None]
    # L at the ab resolution, for the colour statistics of (L, ab) images.
    small_lightness = denormalize_lightness(F.interpolate(lightness, size=ab.shape[-2:], mode="area"))
    truth = denormalize_ab(ab)
    scores = {row: score(denormalize_ab(values), truth, small_lightness) for row, values in predictions.items()}
    nll = model.nll(lightness, ab).cpu()
    truth_colourfulness = metrics.lab_colourfulness(small_lightness, truth).cpu()
    truth_chroma = metrics.mean_chroma(truth).cpu()
    pictures = {"truth": display_images(lightness, ab[:, None])}
    pictures.update({row: display_images(lightness, values) for row, values in predictions.items()})
    return [
        ImageResult(
            path=path,
            nll_bits_per_dim=nll[index].item(),
            truth_colourfulness=truth_colourfulness[index].item(),
            truth_chroma=truth_chroma[index].item(),
            scores={
                row: {name: value[index].item() for name, value in row_scores.items()}
                for row, row_scores in scores.items()
            },
            pictures={key: images[index] for key, images in pictures.items()},
        )
        for index, path in enumerate(batch["path"])
    ]


def lab_of(images: list) -> torch.Tensor:
    """PIL RGB images of one size -> Lab (N, 3, H, W)."""
    return rgb_to_lab(torch.stack([TF.pil_to_tensor(image.convert("RGB")).float() / 255.0 for image in images]))


@torch.no_grad()
def evaluate_photo(
    model: Colorizer, baseline: PretrainingModel | None, path: str, args: argparse.Namespace, generators: list
) -> ImageResult | None:
    """Scores the full-size colorizations of one photo (``--full-resolution``); None if it has no colour.

    Every row, baselines included, is scored on the delivered 8-bit images (the photo's own L
    with upsampled ab, brought into the sRGB gamut by ``recombine``) against the photo's own ab.
    """
    device = next(model.parameters()).device
    image = load_rgb(path)
    full_lightness, lightness, _, has_colour, _ = prepare_photo(
        image, model.config.lightness_size, model.input_multiple, device
    )
    if not has_colour:
        warnings.warn(f"Skipping photo '{path}': it has no colour to compare with.", UserWarning, stacklevel=2)
        return None
    ab_shape = (1, 2, *(side // model.config.lightness_per_ab for side in lightness.shape[2:]))
    outputs, nll = {}, float("nan")
    for temperature, generator in zip(args.temperatures, generators, strict=True):
        result = model.colorize_photo(image, args.n, temperature, generator)
        outputs[row_name(temperature)], nll = result.images, result.original_bits_per_dim
    outputs["gray"] = recombine(torch.zeros(ab_shape, device=device), full_lightness, None)
    if baseline is not None:
        outputs["regression"] = recombine(baseline.predict_ab(lightness), full_lightness, None)
    truth_lab = lab_of([image])
    scores = {}
    for row, images in outputs.items():
        lab = lab_of(images)
        scores[row] = score(lab[None, :, 1:], truth_lab[:, 1:], truth_lab[:, :1])
        # The delivered images must keep the photo's own lightness (up to 8-bit rounding).
        scores[row]["lightness_change"] = (lab[:, :1] - truth_lab[:, :1]).abs().mean()[None]
    return ImageResult(
        path=path,
        nll_bits_per_dim=nll,
        truth_colourfulness=metrics.lab_colourfulness(truth_lab[:, :1], truth_lab[:, 1:]).item(),
        truth_chroma=metrics.mean_chroma(truth_lab[:, 1:]).item(),
        scores={row: {name: value.item() for name, value in row_scores.items()} for row, row_scores in scores.items()},
        pictures={"truth": [image], **outputs},
    )


def run_evaluation(
    model: Colorizer,
    baseline: PretrainingModel | None,
    paths: list[str],
    args: argparse.Namespace,
    collector: ReportCollector,
    categories: dict[str, str],
) -> None:
    """Feeds every photo's result to ``collector``, with its category, with a progress bar."""
    device = next(model.parameters()).device
    generators = []
    for index in range(len(args.temperatures)):  # one independent stream per temperature
        seed = int(np.random.SeedSequence([args.seed, index]).generate_state(1)[0])
        generators.append(torch.Generator(device).manual_seed(seed))
    with tqdm(total=len(paths), unit="photo", desc="evaluating") as progress:
        if args.full_resolution:
            for path in paths:
                try:
                    result = evaluate_photo(model, baseline, path, args, generators)
                except ImageLoadError as error:
                    warnings.warn(f"Skipping photo '{path}': {error.reason}.", UserWarning, stacklevel=2)
                    result = None
                if result is not None:
                    result.category = categories.get(Path(path).name)
                    collector.add(result)
                progress.update(1)
            return
        config = DatasetConfig(model.config.lightness_size, model.config.ab_size)
        loader = validation_loader(ColorizationDataset(paths, train=False, config=config), args.batch_size, 0)
        for batch in loader:
            for result in evaluate_crops(model, baseline, batch, args, generators) if batch["path"] else []:
                result.category = categories.get(Path(result.path).name)
                collector.add(result)
            progress.update(len(batch["path"]) + batch["num_skipped"])


@user_errors_exit
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_report_directory(args.out, args.overwrite)
    device = resolve_device(args.device)
    model = Colorizer.from_pretrained(args.model, device=device)
    if args.temperatures is None:
        args.temperatures = sorted({0.5, model.config.temperature, 1.0})
    baseline = load_regression_baseline(args.model, model.config, device)
    paths = list_images(args.data)[: args.limit]
    categories = read_categories(args.data, args.categories)
    inception = InceptionFeatures(args.inception_weights).to(device) if args.inception_weights else None
    if inception is None:
        print("FID skipped: no --inception-weights given (nothing is downloaded).", file=sys.stderr)
    collector = ReportCollector(args.sheet_images, inception)
    run_evaluation(model, baseline, paths, args, collector, categories)
    if not collector.records:
        raise DataError(f"None of the {len(paths)} photo(s) in '{args.data}' could be evaluated "
                         "(unreadable or without colour).")  # fmt: skip
    evaluated = {os.path.normpath(record["path"]) for record in collector.records}
    settings = {
        "model": str(args.model),
        "data": str(args.data),
        "num_samples": args.n,
        "temperatures": args.temperatures,
        "limit": args.limit,
        "seed": args.seed,
        "device": str(device),
        "resolution": "full" if args.full_resolution else
        f"centre crop, ab {model.config.ab_size}x{model.config.ab_size} (lightness {model.config.lightness_size})",
        "regression_baseline": f"{BASELINE_FILE}, the pretrained conditioning net and colorization head"
        if baseline is not None else f"absent: the release has no {BASELINE_FILE}",
        "skipped": [path for path in paths if os.path.normpath(path) not in evaluated],
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    write_report(args.out, settings, collector, args.overwrite)
    print(f"evaluated {len(evaluated)} of {len(paths)} photo(s); report in {args.out}/", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
