"""Colorize grayscale (or colour) photos: several different, plausible colorizations of each.

Each sample is written at the photo's full resolution (NAME_color_01.png, ...), with a grid of the
gray input and all samples (NAME_grid.png). A colour photo is first reduced to its lightness.

Examples:
    python pipelines/colorize.py photo.jpg --n 8
    python pipelines/colorize.py old_photos/ "scans/*.tif" --n 4 --temperature 0.6 --seed 1 --out colorized/
    python pipelines/colorize.py photo.jpg --likelihood --interpolate 6
"""

from __future__ import annotations

import argparse
import fnmatch
import glob
import io
import math
import os
import sys
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from cinn.programs.cli import TRACEBACK_VARIABLE, documented_parser, user_errors_exit
from PIL import Image
from tqdm import tqdm

from cinn import DEFAULT_MODEL
from cinn.errors import UsageError, UserError
from cinn.files import publish
from cinn.images import IMAGE_EXTENSIONS, find_images, load_rgb_and_alpha
from cinn.limits import MAX_WORKING_SIDE, PhotoLimits

# Nothing above imports torch: with --backend onnx the program runs without it (torch's import alone
# is most of a one-photo run, benchmarks/README.md); the torch backend imports it when chosen.

GRID_TILE_HEIGHT = 256
# zlib level of the PNGs: 1 encodes several times faster than Pillow's default 6 for files a few per
# cent larger (benchmarks/README.md); the pixels are the same at every level.
PNG_COMPRESS_LEVEL = 1
# An allocation failure in torch is a RuntimeError.
PHOTO_ERRORS = (UserError, OSError, MemoryError, RuntimeError)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = documented_parser(__doc__)
    parser.add_argument("inputs", nargs="+", help="image files, folders or glob patterns")
    parser.add_argument("--n", type=int, default=8, help="colorizations per photo (default 8)")
    parser.add_argument(
        "--temperature", type=finite_non_negative, default=None,
        help="sampling temperature: 0 gives one deterministic result, higher is more varied "
        "(default: the model's own, chosen on its validation photos)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=None, help="make the samples reproducible")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="model release directory (default: shipped)")
    parser.add_argument("--out", type=Path, default=Path("colorized"), help="output folder (default colorized/)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument(
        "--backend", choices=("torch", "onnx"), default="torch",
        help="what colorizes: torch, or onnxruntime on the graphs that pipelines/export.py --onnx wrote into "
        "--onnx-dir, without torch (starts in a fraction of the time; its seeds draw other samples; no "
        "--interpolate, and --likelihood prints the samples' bits/dim only) (default torch)",
    )  # fmt: skip
    parser.add_argument("--onnx-dir", type=Path, default=None,
                        help="graphs for --backend onnx (they hold the model they were exported from; --model and "
                        "--device are not read)")  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--likelihood", action="store_true", help="print each sample's bits/dim under the model")
    parser.add_argument(
        "--interpolate",
        type=int,
        default=0,
        metavar="K",
        help="also write a strip of K colorizations along a latent path (NAME_interpolation.png)",
    )
    parser.add_argument(
        "--working-side",
        type=int,
        default=None,
        help=f"short side of the lightness the model sees, up to {MAX_WORKING_SIDE} (default: its training size)",
    )
    add_limit_arguments(parser)
    args = parser.parse_args(argv)
    if args.interpolate < 0 or args.interpolate == 1:
        parser.error("--interpolate must be 0 or >= 2")
    if args.backend == "onnx" and args.interpolate:
        parser.error("--interpolate needs --backend torch (the exported graphs only sample)")
    try:
        args.limits = PhotoLimits(args.max_megapixels, args.max_aspect_ratio, args.max_samples)
        args.limits.check_samples(args.n)
    except UsageError as error:
        parser.error(str(error))
    return args


def add_limit_arguments(parser: argparse.ArgumentParser) -> None:
    """--max-megapixels, --max-aspect-ratio and --max-samples: what a run will serve (``PhotoLimits``)."""
    defaults = PhotoLimits()
    parser.add_argument(
        "--max-megapixels",
        type=float,
        default=defaults.max_megapixels,
        help=f"largest photo served, checked before decoding (default {defaults.max_megapixels:g})",
    )
    parser.add_argument(
        "--max-aspect-ratio",
        type=float,
        default=defaults.max_aspect_ratio,
        help=f"longest side over shortest side (default {defaults.max_aspect_ratio:g})",
    )
    parser.add_argument("--max-samples", type=int, default=defaults.max_samples,
                        help=f"largest --n (default {defaults.max_samples})")  # fmt: skip


def finite_non_negative(text: str) -> float:
    """argparse type: a finite number >= 0 (NaN and inf would silently give black images)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def expand_inputs(inputs: list[str]) -> tuple[list[Path], list[str]]:
    """The photos the command line names -> (paths, a sentence for each input that names none).

    A file is taken as given; a folder gives its photos (``cinn.images.find_images``: each real
    folder once, however many links lead to it); a glob pattern gives the photos it matches and
    never a folder (``"album/**"`` matches the folders too). A photo reached twice, by a link or by
    two inputs, is colorized once.
    """
    paths, problems, seen = [], [], set()
    extensions = ", ".join(IMAGE_EXTENSIONS)
    for item in inputs:
        if any(char in item for char in "*?[") and not os.path.exists(item):  # photo[1].jpg is a name
            found = glob_photos(item)
            problem = f"'{item}' matches no photo (extensions: {extensions})"
        elif os.path.isdir(item):
            found = find_images(item)
            problem = f"the folder '{item}' holds no photo (extensions: {extensions})"
        else:
            found, problem = [item], ""
        if not found:
            problems.append(problem)
        for path in found:
            if os.path.realpath(path) not in seen:
                seen.add(os.path.realpath(path))
                paths.append(Path(path))
    return paths, problems


def glob_photos(pattern: str) -> list[str]:
    """The files with an image extension that a glob pattern matches, each once, sorted.

    ``**`` is matched against the folder walk that ``--data`` uses (``cinn.images.find_images``):
    Python's own ``glob`` follows folder links without a cycle check, so ``album/**`` with a link
    ``self -> .`` would list every photo 40 times and two such links would never finish. Without
    ``**`` a pattern reaches a fixed depth and ``glob`` serves; a photo it matches under several
    paths (through links) is kept by the shortest, one without a link where there is one.
    """
    parts = Path(pattern).parts
    if "**" in parts:
        fixed = next(index for index, part in enumerate(parts) if any(char in part for char in "*?["))
        base = str(Path(*parts[:fixed])) if fixed else "."
        found = [path for path in find_images(base) if matches(parts[fixed:], Path(os.path.relpath(path, base)).parts)]
        return sorted(found if fixed else [os.path.relpath(path) for path in found])
    matches_found = [match for match in glob.glob(pattern) if os.path.isfile(match)]

    def preference(match: str) -> tuple[int, bool, str]:
        folder = os.path.dirname(match)
        return match.count(os.sep), os.path.realpath(folder) != os.path.abspath(folder), match

    shortest: dict[str, str] = {}
    for match in sorted(matches_found, key=preference):
        shortest.setdefault(os.path.realpath(match), match)
    return sorted(match for match in shortest.values() if match.lower().endswith(IMAGE_EXTENSIONS))


def matches(pattern: tuple[str, ...], parts: tuple[str, ...]) -> bool:
    """Whether path components match glob components: ``**`` is any number of folders, and a wildcard
    never matches a hidden name (as in ``glob``)."""
    if not pattern:
        return not parts
    if pattern[0] == "**":
        for start in range(len(parts) + 1):
            if matches(pattern[1:], parts[start:]):
                return True
            if start < len(parts) and parts[start].startswith("."):
                return False
        return False
    if not parts or (parts[0].startswith(".") and not pattern[0].startswith(".")):
        return False
    return fnmatch.fnmatchcase(parts[0], pattern[0]) and matches(pattern[1:], parts[1:])


def unique_names(paths: list[Path]) -> list[str]:
    """Output stems: the file stem, made unique (``photo``, ``photo_2``) when two inputs share it."""
    names, seen = [], set()
    for path in paths:
        name, count = path.stem, 1
        while name in seen:
            count += 1
            name = f"{path.stem}_{count}"
        seen.add(name)
        names.append(name)
    return names


def grid(images: list[Image.Image]) -> Image.Image:
    """One row of tiles of equal height."""
    tiles = [image.convert("RGB").resize((max(1, round(image.width * GRID_TILE_HEIGHT / image.height)),
                                          GRID_TILE_HEIGHT), Image.Resampling.LANCZOS) for image in images]  # fmt: skip
    sheet = Image.new("RGB", (sum(tile.width for tile in tiles) + 4 * (len(tiles) - 1), GRID_TILE_HEIGHT), "white")
    left = 0
    for tile in tiles:
        sheet.paste(tile, (left, 0))
        left += tile.width + 4
    return sheet


def png_bytes(picture: Image.Image) -> bytes:
    """The picture as a PNG file's bytes, at ``PNG_COMPRESS_LEVEL``."""
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def with_alpha(image: Image.Image, alpha: Image.Image | None) -> Image.Image:
    if alpha is not None:
        image.putalpha(alpha)
    return image


def colorize_one(model: Backend, path: Path, name: str, args: argparse.Namespace) -> None:
    """Colorizes one file and writes its files into ``args.out``. Raises ImageLoadError /
    FileExistsError (and the PHOTO_ERRORS of the model and the writing) for this input."""
    targets = [args.out / f"{name}_color_{index:02d}.png" for index in range(1, args.n + 1)]
    if model.sampling_temperature(args.temperature) == 0:
        targets = targets[:1]
    targets += [args.out / f"{name}_grid.png"] + ([args.out / f"{name}_interpolation.png"] if args.interpolate else [])
    existing = [target for target in targets if target.exists()]
    if existing and not args.overwrite:
        raise FileExistsError(f"'{existing[0]}' already exists (use --overwrite to replace it)")
    # The model sees ``rgb`` (already composited over white) and alpha is put back on the results:
    # handing it an RGBA image would composite semi-transparent pixels a second time.
    rgb, alpha = load_rgb_and_alpha(path, limits=args.limits)
    generator = model.generator(args.seed)
    result = model.colorize(rgb, args, generator)
    pictures = [with_alpha(image, alpha) for image in result.images] + [grid([rgb.convert("L"), *result.images])]
    if args.interpolate:
        pictures.append(grid(model.interpolate(rgb, args, generator)))
    # The PNGs are encoded on every core (zlib runs without the GIL), then all of a photo's files appear
    # together or not at all, never half-written or mixed with another run's.
    with ThreadPoolExecutor(os.cpu_count() or 1) as encoders:
        encoded = list(encoders.map(png_bytes, pictures))
    writers = {target: partial(Path.write_bytes, data=data) for target, data in zip(targets, encoded, strict=True)}
    publish(writers, args.overwrite)
    if args.likelihood:
        bits = ", ".join(f"{value:.3f}" for value in result.bits_per_dim)
        original = result.original_bits_per_dim
        original = f"; original colours {original:.3f}" if original is not None else ""
        tqdm.write(f"{path}: bits/dim of samples {bits}{original}")


class Backend:
    """What colorizes the photos, torch or onnxruntime; ``workers`` photos are colorized at once."""

    model: Any
    workers: int

    @property
    def input_multiple(self) -> int:
        return self.model.input_multiple

    def sampling_temperature(self, temperature: float | None) -> float:
        return self.model.sampling_temperature(temperature)

    @contextmanager
    def threads_per_photo(self):
        yield


class TorchBackend(Backend):
    """The release in torch (``Colorizer.colorize_photo``); torch is imported here, when chosen."""

    def __init__(self, args: argparse.Namespace, num_photos: int):
        import torch

        from cinn.colorizer import Colorizer
        from cinn.devices import resolve_device

        self.torch, self.device = torch, resolve_device(args.device)
        self.model = Colorizer.from_pretrained(args.model, device=self.device)
        self.workers = photo_workers(num_photos, torch.get_num_threads())

    def generator(self, seed: int | None):
        return self.torch.Generator(self.device).manual_seed(seed) if seed is not None else None

    def colorize(self, rgb: Image.Image, args: argparse.Namespace, generator):
        return self.model.colorize_photo(rgb, args.n, args.temperature, generator, args.working_side, args.limits,
                                         own_likelihood=args.likelihood)  # fmt: skip

    def interpolate(self, rgb: Image.Image, args: argparse.Namespace, generator) -> list[Image.Image]:
        return self.model.interpolate(rgb, args.interpolate, args.temperature, generator, args.working_side)

    @contextmanager
    def threads_per_photo(self):
        """torch's intra-op threads shared out between the photos colorized at once, and set back after."""
        before = self.torch.get_num_threads()
        self.torch.set_num_threads(max(1, before // self.workers))
        try:
            yield
        finally:
            self.torch.set_num_threads(before)


class OnnxBackend(Backend):
    """The release's exported graphs on onnxruntime (``cinn.onnx_colorizer``), with no torch at all; the
    sessions get their share of the cores when they are made."""

    def __init__(self, args: argparse.Namespace, num_photos: int):
        from cinn.onnx_colorizer import OnnxColorizer

        if args.onnx_dir is None:
            raise UsageError("--backend onnx needs --onnx-dir, a folder written by pipelines/export.py --onnx")
        cores = os.cpu_count() or 1
        self.workers = photo_workers(num_photos, cores)
        self.model = OnnxColorizer(args.onnx_dir, threads=max(1, cores // self.workers))

    def generator(self, seed: int | None):
        import numpy as np

        return np.random.default_rng(seed)

    def colorize(self, rgb: Image.Image, args: argparse.Namespace, generator):
        return self.model.colorize_photo(rgb, args.n, args.temperature, generator, args.working_side, args.limits)


def report_failure(path: Path, error: BaseException) -> None:
    """One line on stderr for a photo that failed; re-raised with CINN_TRACEBACK=1 to show where it came from."""
    if os.environ.get(TRACEBACK_VARIABLE, "") not in ("", "0"):
        raise error
    kind = "" if isinstance(error, (UserError, OSError)) else f"{type(error).__name__}: "
    tqdm.write(f"error: {path}: {kind}{str(error).strip().splitlines()[0] if str(error).strip() else ''}",
               file=sys.stderr)  # fmt: skip


@user_errors_exit
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    paths, problems = expand_inputs(args.inputs)
    if not paths:
        raise UsageError("; ".join(problems))
    model = (OnnxBackend if args.backend == "onnx" else TorchBackend)(args, len(paths))
    if args.working_side is not None and not model.input_multiple <= args.working_side <= MAX_WORKING_SIDE:
        raise UsageError(f"--working-side must be between {model.input_multiple} and {MAX_WORKING_SIDE}")
    args.out.mkdir(parents=True, exist_ok=True)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    failures = 0
    # Photos are colorized several at a time, each on its own thread with its share of the cores (torch
    # and onnxruntime release the GIL in their operations, Pillow while encoding): on two cores, two photos
    # with one torch thread each finished a folder of 20 in 12.5 s against 19.8 s for one photo at a time
    # on two threads with its files written on a third (benchmarks/README.md). At most ``model.workers``
    # photos are held at once.
    progress = tqdm(total=len(paths), unit="photo", disable=len(paths) < 2)
    with model.threads_per_photo(), ThreadPoolExecutor(model.workers) as pool:
        in_flight: deque[tuple[Path, Future]] = deque()
        for path, name in zip(paths, unique_names(paths), strict=True):
            if len(in_flight) == model.workers:
                failures += finish(in_flight.popleft(), progress)
            in_flight.append((path, pool.submit(colorize_one, model, path, name, args)))
        while in_flight:
            failures += finish(in_flight.popleft(), progress)
    progress.close()
    done = len(paths) - failures
    print(f"colorized {done} of {len(paths)} photo(s) into {args.out}/", file=sys.stderr)
    return 1 if failures or problems else 0


def photo_workers(num_photos: int, cores: int) -> int:
    """Photos colorized at once: one per core, at most 4 (each holds its samples at full size)."""
    return max(1, min(num_photos, cores, 4))


def finish(pending: tuple[Path, Future], progress: tqdm) -> int:
    """Waits for one photo to be colorized and written; 1 if it failed (and was reported), else 0."""
    path, future = pending
    try:
        future.result()
    except PHOTO_ERRORS as error:  # every failure is this photo's alone: say which, go on with the others
        report_failure(path, error)
        return 1
    finally:
        progress.update()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
