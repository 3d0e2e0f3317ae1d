"""The report of ``pipelines/evaluate.py``: per-image results in, five files out.

``ReportCollector`` takes one ``ImageResult`` per photo as the evaluation goes (keeping only the
numbers, the contact-sheet tiles of the first photos and, if asked, their Inception features);
``write_report`` then writes metrics.json, report.md, contact_sheet.png, temperature_plot.png and
files.txt.
"""

from __future__ import annotations

import functools
import json
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision.transforms.functional as TF
from matplotlib.figure import Figure
from PIL import Image, ImageDraw

from cinn.fid import InceptionFeatures
from cinn.files import publish
from cinn.metrics import frechet_distance, summarize

REPORT_FILES = ("metrics.json", "report.md", "contact_sheet.png", "temperature_plot.png", "files.txt")
TILE_HEIGHT, CAPTION_HEIGHT, LABEL_WIDTH, GAP = 128, 16, 150, 4
MAX_SHEET_SAMPLES = 8

# metric -> (table header, definition); errors and diversity in Lab units of ab.
METRICS = {
    "best_of_n_rmse_per_image": ("best-of-n (image)", "min over samples of the image's ab RMSE"),
    "best_of_n_rmse_per_pixel": ("best-of-n (pixel)", "RMSE of the closest sample per pixel and channel"),
    "best_of_1_rmse": ("best-of-1", "ab RMSE of the first sample"),
    "mean_sample_rmse": ("mean sample", "ab RMSE of one sample, averaged over the samples"),
    "cast_error": ("cast error", "distance of a sample's mean ab from the photo's (one tint over the picture)"),
    "local_error": ("local error", "ab RMSE once sample and photo have their mean ab removed"),
    "chroma": ("chroma", "mean chroma sqrt(a^2 + b^2) of a sample"),
    "lightness_change": ("L change", "mean |L of the delivered image - L of the photo| (full resolution only)"),
    "mean_of_samples_rmse": ("mean of samples", "ab RMSE of the per-pixel mean of the samples"),
    "sample_variance": ("variance", "variance of ab over samples (Lab units squared), a + b, mean over pixels"),
    "pairwise_rmse": ("pairwise RMSE", "mean ab RMSE between two different samples"),
    "colourfulness": ("colourfulness", "Hasler & Suesstrunk colourfulness, mean over samples"),
    "histogram_distance": ("histogram distance", "1 - intersection of the 22x22 ab histograms (10-unit bins)"),
}


@dataclass
class ImageResult:
    """Everything the evaluation learnt about one photo.

    Attributes:
        path: the photo file.
        nll_bits_per_dim: exact NLL of its true ab under the model.
        truth_colourfulness: colourfulness of the photo itself.
        truth_chroma: mean chroma of the photo's own ab (Lab units).
        category: what the photo shows ("people", "animals", ...), if the data names it.
        scores: row ("model@0.7", "gray", "regression") -> metric -> value.
        pictures: "truth", "gray", "regression" or a model row -> PIL images (samples) of one size.
    """

    path: str
    nll_bits_per_dim: float
    truth_colourfulness: float
    truth_chroma: float
    scores: dict[str, dict[str, float]]
    pictures: dict[str, list[Image.Image]]
    category: str | None = None


def check_report_directory(out: Path, overwrite: bool) -> None:
    """Refuses to replace an existing report unless asked to."""
    existing = [name for name in REPORT_FILES if (out / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"'{out}' already holds a report ({existing[0]}); pass --overwrite to replace it.")


def row_name(temperature: float) -> str:
    """The report's row for the model sampled at ``temperature``, e.g. ``model@0.7``."""
    return f"model@{temperature:g}"


class ReportCollector:
    """Accumulates per-photo results: numbers, contact-sheet tiles and Inception features.

    Args:
        sheet_images: how many photos (the first ones) go on the contact sheet.
        inception: feature extractor for FID, or None to skip FID.
    """

    def __init__(self, sheet_images: int, inception: InceptionFeatures | None = None):
        self.sheet_images = sheet_images
        self.inception = inception
        self.records: list[dict] = []
        self.sheet: list[tuple[str, dict[str, list[Image.Image]]]] = []
        self.features: dict[str, list[torch.Tensor]] = defaultdict(list)

    def add(self, result: ImageResult) -> None:
        self.records.append({
            "path": result.path,
            "nll_bits_per_dim": result.nll_bits_per_dim,
            "truth_colourfulness": result.truth_colourfulness,
            "truth_chroma": result.truth_chroma,
            "category": result.category,
            "scores": result.scores,
        })  # fmt: skip
        if len(self.sheet) < self.sheet_images:
            tiles = {
                key: [tile(image) for image in images[:MAX_SHEET_SAMPLES]] for key, images in result.pictures.items()
            }
            self.sheet.append((Path(result.path).name, tiles))
        if self.inception is not None:  # FID compares the first sample of every photo with the photo
            keys = list(result.pictures)
            rgb = torch.stack([TF.pil_to_tensor(result.pictures[key][0].convert("RGB")) for key in keys])
            for key, feature in zip(keys, self.inception(rgb.float() / 255.0).cpu(), strict=True):
                self.features[key].append(feature)

    def fid(self) -> dict:
        """Row -> FID of its first samples against the true photos, or ``{"skipped": reason}``."""
        if self.inception is None:
            return {"skipped": "no --inception-weights given"}
        if len(self.records) < 2:
            return {"skipped": "FID needs at least 2 photos"}
        reference = torch.stack(self.features["truth"]).double().numpy()
        return {
            key: frechet_distance(torch.stack(features).double().numpy(), reference)
            for key, features in self.features.items()
            if key != "truth"
        }


def tile(image: Image.Image) -> Image.Image:
    """An RGB image scaled to the contact sheet's tile height."""
    width = max(1, round(image.width * TILE_HEIGHT / image.height))
    return image.convert("RGB").resize((width, TILE_HEIGHT), Image.Resampling.BICUBIC)


def aggregate(records: list[dict], seed: int) -> dict:
    """Means and 95% bootstrap intervals over photos of every row's metrics, the NLL and the truth's colourfulness."""
    rows = {
        row: {metric: summarize([record["scores"][row][metric] for record in records], seed) for metric in values}
        for row, values in records[0]["scores"].items()
    }
    return {
        "rows": rows,
        "nll_bits_per_dim": summarize([record["nll_bits_per_dim"] for record in records], seed),
        "truth_colourfulness": summarize([record["truth_colourfulness"] for record in records], seed),
        "truth_chroma": summarize([record["truth_chroma"] for record in records], seed),
    }


# Per-category table: header -> (metric, metric of the reference it is divided by); "truth" is the photos' own.
CATEGORY_RATIOS = {
    "best-of-n / gray": ("best_of_n_rmse_per_image", "best_of_1_rmse"),
    "best-of-1 / gray": ("best_of_1_rmse", "best_of_1_rmse"),
    "mean sample / gray": ("mean_sample_rmse", "best_of_1_rmse"),
    "cast / gray cast": ("cast_error", "cast_error"),
    "local / gray local": ("local_error", "local_error"),
    "chroma / true": ("chroma", "truth"),
}


def by_category(records: list[dict], row: str) -> dict[str, dict[str, float]]:
    """Category (and "all") -> photo count, gray RMSE and the ``CATEGORY_RATIOS`` of ``row``.

    Each ratio is a ratio of means over the category's photos, e.g. mean best-of-n error over mean
    all-gray error, so that photos weigh by their error rather than by their ratio.
    """
    groups: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        if record["category"] is not None:
            groups[record["category"]].append(record)
    if not groups:
        return {}
    groups = {**dict(sorted(groups.items())), "all": records}

    def mean(group: list[dict], source: str, metric: str) -> float:
        values = [record["truth_chroma"] if source == "truth" else record["scores"][source][metric] for record in group]
        return sum(values) / len(values)

    table = {}
    for category, group in groups.items():
        entry = {"photos": len(group), "gray_rmse": mean(group, "gray", "best_of_1_rmse")}
        for header, (metric, reference) in CATEGORY_RATIOS.items():
            denominator = mean(group, "truth" if reference == "truth" else "gray", reference)
            entry[header] = mean(group, row, metric) / denominator if denominator > 0 else float("nan")
        table[category] = entry
    return table


def category_markdown(records: list[dict], rows: list[str]) -> list[str]:
    """report.md's per-category tables, one per model row; nothing when no photo has a category."""
    lines = []
    for row in rows:
        table = by_category(records, row)
        if not table:
            return []
        headers = ["category", "photos", "gray RMSE", *CATEGORY_RATIOS]
        lines += [f"### {row}, by category (ratios of means over the category's photos)", "",
                  "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]  # fmt: skip
        for category, entry in table.items():
            ratios = (f"{entry[header]:.2f}" for header in CATEGORY_RATIOS)
            lines.append(f"| {category} | {entry['photos']} | {entry['gray_rmse']:.2f} | " + " | ".join(ratios) + " |")
        lines.append("")
    return lines


def format_stats(stats: dict[str, float]) -> str:
    return f"{stats['mean']:.2f} [{stats['low']:.2f}, {stats['high']:.2f}]"


def markdown_report(settings: dict, aggregates: dict, fid: dict, categories: list[str] = ()) -> str:
    """report.md: settings, one table row per model temperature and baseline, definitions."""
    has_fid = "skipped" not in fid
    measured = next(iter(aggregates["rows"].values()))
    shown = {metric: METRICS[metric] for metric in METRICS if metric in measured}
    headers = ["", *(header for header, _ in shown.values()), "NLL (bits/dim)"] + (["FID"] if has_fid else [])
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row, values in aggregates["rows"].items():
        nll = format_stats(aggregates["nll_bits_per_dim"]) if row.startswith("model@") else "—"
        cells = [row, *(format_stats(values[metric]) for metric in shown), nll]
        lines.append("| " + " | ".join(cells + ([f"{fid[row]:.2f}"] if has_fid else [])) + " |")
    truth_values = {"chroma": "truth_chroma", "colourfulness": "truth_colourfulness"}
    truth = (
        ["ground truth"]
        + [format_stats(aggregates[truth_values[metric]]) if metric in truth_values else "—" for metric in shown]
        + ["—"]
    )
    lines.append("| " + " | ".join(truth + (["—"] if has_fid else [])) + " |")
    definitions = [f"- **{header}**: {definition}." for header, definition in shown.values()]
    fid_note = (
        "first sample per photo against the photos (Inception pool3)" if has_fid else f"skipped, {fid['skipped']}"
    )
    return "\n".join([
        "# Colorization evaluation", "",
        f"Model `{settings['model']}` on `{settings['data']}`: {settings['num_images']} photo(s) evaluated, "
        f"{len(settings['skipped'])} skipped (unreadable or without colour); {settings['num_samples']} samples per "
        f"photo and temperature; resolution: {settings['resolution']}; seed {settings['seed']}.", "",
        "Each cell: mean over photos [95% percentile-bootstrap interval, 2000 resamples]. Errors and diversity are in "
        "Lab units of ab; the baselines are one deterministic prediction (n = 1, no diversity). NLL: exact "
        "negative log-likelihood of the true ab (normalised units) under the model.", "",
        *lines, "",
        *categories,
        *definitions,
        f"- **regression baseline**: {settings['regression_baseline']}.",
        f"- **FID**: {fid_note}.", "",
    ])  # fmt: skip


def contact_sheet(sheet: list[tuple[str, dict[str, list[Image.Image]]]], model_rows: list[str]) -> Image.Image:
    """One line per photo and temperature: gray, truth, regression (if any), then the samples."""
    lines = []
    for name, tiles in sheet:
        fixed = [(key, tiles[key][0]) for key in ("gray", "truth", "regression") if key in tiles]
        for row in model_rows:
            samples = [(f"sample {index + 1}", image) for index, image in enumerate(tiles[row])]
            short = name if len(name) <= 24 else name[:21] + "..."  # the label column is ~24 characters wide
            lines.append((f"{short}\n{row}", fixed + samples))
    width = LABEL_WIDTH + max(sum(image.width + GAP for _, image in line) for _, line in lines)
    height = len(lines) * (TILE_HEIGHT + CAPTION_HEIGHT + GAP)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for number, (label, line) in enumerate(lines):
        top = number * (TILE_HEIGHT + CAPTION_HEIGHT + GAP)
        draw.multiline_text((4, top + TILE_HEIGHT // 2 - 10), label, fill="black")
        left = LABEL_WIDTH
        for caption, image in line:
            canvas.paste(image, (left, top))
            draw.text((left + 2, top + TILE_HEIGHT + 2), caption, fill="black")
            left += image.width + GAP
    return canvas


def temperature_plot(aggregates: dict, temperatures: list[float], path: Path) -> None:
    """Error (with baselines as horizontal lines) and diversity against temperature."""
    rows, temperatures = aggregates["rows"], sorted(temperatures)
    figure = Figure(figsize=(11, 4.2), dpi=110)
    error_axes, diversity_axes = figure.subplots(1, 2)
    dodge = 0.01 * (max(temperatures) - min(temperatures) or 1.0)  # keeps overlapping error bars apart
    for axes, names in ((error_axes, list(METRICS)[:4]), (diversity_axes, ["pairwise_rmse"])):
        for number, metric in enumerate(names):
            stats = [rows[row_name(temperature)][metric] for temperature in temperatures]
            means = [item["mean"] for item in stats]
            spread = [[item["mean"] - item["low"] for item in stats], [item["high"] - item["mean"] for item in stats]]
            positions = [temperature + (number - (len(names) - 1) / 2) * dodge for temperature in temperatures]
            axes.errorbar(positions, means, yerr=spread, marker="o", capsize=3, label=METRICS[metric][0])
    std = [rows[row_name(temperature)]["sample_variance"]["mean"] ** 0.5 for temperature in temperatures]
    diversity_axes.plot(temperatures, std, marker="s", linestyle="--", label="sqrt(variance)")
    for baseline, style in (("gray", ":"), ("regression", "--")):
        if baseline in rows:
            error_axes.axhline(rows[baseline]["best_of_1_rmse"]["mean"], color="black", linestyle=style,
                               label=f"{baseline} baseline")  # fmt: skip
    error_axes.set(xlabel="temperature", ylabel="ab RMSE (Lab units)", title="Error against the true colours")
    diversity_axes.set(xlabel="temperature", ylabel="Lab units", title="Diversity of the samples")
    for axes in (error_axes, diversity_axes):
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)


def write_report(out: Path, settings: dict, collector: ReportCollector, overwrite: bool = False) -> None:
    """Writes the report files into ``out`` (which must exist), all together (``cinn.files.publish``): a
    report never mixes two runs, and a symlink in ``out`` is replaced, never written through."""
    settings = {**settings, "num_images": len(collector.records)}
    aggregates = aggregate(collector.records, settings["seed"])
    fid = collector.fid()
    model_rows = [row_name(temperature) for temperature in settings["temperatures"]]
    categories = {row: by_category(collector.records, row) for row in model_rows}
    document = {
        "settings": settings,
        "aggregates": aggregates,
        "by_category": {row: table for row, table in categories.items() if table},
        "fid": fid,
        "per_image": collector.records,
    }
    markdown = markdown_report(settings, aggregates, fid, category_markdown(collector.records, model_rows))
    lines = [os.path.relpath(os.path.abspath(record["path"]), os.path.abspath(out)) for record in collector.records]
    header = f"# {len(lines)} photos evaluated, paths relative to this folder (read with cinn.images.list_images)\n"
    skipped = "".join(f"# skipped: {path}\n" for path in settings["skipped"])
    texts = {
        "metrics.json": json.dumps(document, indent=1) + "\n",
        "report.md": markdown,
        "files.txt": header + "".join(line + "\n" for line in lines) + skipped,
    }
    files = {
        out / name: functools.partial(Path.write_text, data=text, encoding="utf-8") for name, text in texts.items()
    }
    files[out / "temperature_plot.png"] = functools.partial(temperature_plot, aggregates, settings["temperatures"])
    if collector.sheet:
        files[out / "contact_sheet.png"] = contact_sheet(collector.sheet, model_rows).save
    publish(files, overwrite)
    if not collector.sheet:  # --sheet-images 0: no sheet, and none left over from an overwritten report
        (out / "contact_sheet.png").unlink(missing_ok=True)
