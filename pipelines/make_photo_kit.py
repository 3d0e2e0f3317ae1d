"""Build the photo kit: a few dozen real colour photographs from Debian packages and scikit-image.

The kit is small enough to train a smoke model on a CPU and to eyeball colorizations, and it needs
no dataset download: ``configs/photo_kit.txt`` names each photo by Debian package and path (or by
``skimage.data`` function) and its split. Files land flat in ``OUT/train`` and ``OUT/val``, named
``<source>__<name>.<ext>``; ``OUT/sources.tsv`` records where each came from.

Example:
    python pipelines/make_photo_kit.py --out photos/kit
    python pipelines/make_photo_kit.py --out photos/kit --debs /tmp/debs/x   # packages already extracted
    python pipelines/make_photo_kit.py --out photos/kit_small --max-side 1024   # faster to decode
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from tqdm import tqdm

DEFAULT_LIST = Path(__file__).resolve().parent.parent / "configs" / "photo_kit.txt"
SKIMAGE = "skimage"
SPLITS = ("train", "val")


class KitError(Exception):
    """A problem with the kit list, the packages or the output folder, in one sentence."""


@dataclass(frozen=True)
class KitEntry:
    """One photo of the kit: where it comes from and which split it belongs to."""

    source: str  # a Debian package name, or "skimage"
    path: str  # path inside the package, or the name of a skimage.data function
    split: str
    line_number: int

    @property
    def flat_name(self) -> str:
        """``plasma__Kite.jpg`` for a KDE wallpaper, ``opencv__fruits.jpg``, ``skimage__coffee.png``."""
        prefix = self.source.split("-")[0]
        if self.source == SKIMAGE:
            return f"{prefix}__{self.path}.png"
        parts = Path(self.path).parts
        # KDE wallpapers are <Name>/contents/images/<W>x<H>.jpg: the folder carries the name.
        stem = parts[parts.index("contents") - 1] if "contents" in parts[1:] else Path(self.path).stem
        return f"{prefix}__{stem}{Path(self.path).suffix.lower()}"


def read_kit_list(list_file: Path) -> list[KitEntry]:
    """Parse ``source<TAB>path<TAB>split`` lines; ``#`` lines and blank lines are ignored."""
    if not list_file.is_file():
        raise KitError(f"kit list '{list_file}' does not exist")
    entries = []
    for line_number, line in enumerate(list_file.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.rstrip("\n").split("\t")
        if len(fields) != 3 or fields[2] not in SPLITS:
            raise KitError(f"{list_file}:{line_number}: expected 'source<TAB>path<TAB>train|val', got {line!r}")
        entries.append(KitEntry(fields[0], fields[1], fields[2], line_number))
    names = collections.Counter(entry.flat_name for entry in entries)
    clashes = sorted(name for name, count in names.items() if count > 1)
    if clashes:
        raise KitError(f"{list_file}: several photos would be saved as {', '.join(clashes)}")
    if not entries:
        raise KitError(f"kit list '{list_file}' names no photos")
    return entries


def extract_packages(packages: list[str], work_dir: Path) -> Path:
    """``apt-get download`` the packages into ``work_dir`` and ``dpkg-deb -x`` them into one tree."""
    tree = work_dir / "extracted"
    tree.mkdir()
    try:
        subprocess.run(["apt-get", "download", *packages], cwd=work_dir, check=True, capture_output=True, text=True)
    except FileNotFoundError:
        raise KitError("apt-get is not available; extract the packages yourself and pass --debs") from None
    except subprocess.CalledProcessError as error:
        raise KitError(f"apt-get download {' '.join(packages)} failed: {error.stderr.strip()}") from None
    for deb in sorted(work_dir.glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True)
    return tree


def save_skimage_photo(name: str, destination: Path) -> None:
    """Save ``skimage.data.<name>()`` (a colour photo; the first image of a stereo pair) as PNG."""
    import skimage.data

    loader = getattr(skimage.data, name, None)
    if not callable(loader):
        raise KitError(f"skimage.data has no image called '{name}'")
    image = loader()
    image = image[0] if isinstance(image, tuple) else image
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise KitError(f"skimage.data.{name} is not an 8-bit colour photo (shape {image.shape}, {image.dtype})")
    Image.fromarray(image).save(destination)


def prepare_output(out: Path, force: bool) -> None:
    """Create ``out/train`` and ``out/val``; refuse to mix with an earlier kit unless ``force``."""
    existing = [out / split for split in SPLITS if (out / split).exists() and any((out / split).iterdir())]
    if existing and not force:
        raise KitError(f"'{existing[0]}' already holds photos; pass --force to replace the kit's train/ and val/")
    for split in SPLITS:
        shutil.rmtree(out / split, ignore_errors=True)
        (out / split).mkdir(parents=True)


def check_sources(entries: list[KitEntry], tree: Path | None) -> None:
    """Fail, naming the first, if a listed package file is not in the extracted tree."""
    missing = [entry for entry in entries if entry.source != SKIMAGE and not (tree / entry.path).is_file()]
    if missing:
        first = missing[0]
        raise KitError(
            f"{len(missing)} listed photo(s) missing, first: '{first.path}' of package {first.source} "
            f"(list line {first.line_number}), looked for '{tree / first.path}'"
        )


def copy_photos(entries: list[KitEntry], tree: Path | None, out: Path, max_side: int | None = None) -> None:
    """Copy every listed photo into ``out/<split>/<flat name>`` and record its origin."""
    for entry in tqdm(entries, desc="photos", unit="photo"):
        destination = out / entry.split / entry.flat_name
        if entry.source == SKIMAGE:
            save_skimage_photo(entry.path, destination)
        elif max_side is not None:
            save_downscaled(tree / entry.path, destination, max_side)
        else:
            shutil.copyfile(tree / entry.path, destination)
    rows = [f"{entry.split}/{entry.flat_name}\t{entry.source}\t{entry.path}\n" for entry in entries]
    (out / "sources.tsv").write_text("file\tsource\tpath\n" + "".join(rows), encoding="utf-8")


def save_downscaled(source: Path, destination: Path, max_side: int) -> None:
    """Save ``source`` upright with its longer side at most ``max_side`` (JPEG quality 95), or copy it.

    Multi-megapixel, often progressive, JPEGs cost 0.1-0.4 s each to decode; a CPU smoke run on
    64 px crops does not need them.
    """
    with Image.open(source) as image:
        if max(image.size) <= max_side:
            shutil.copyfile(source, destination)
            return
        image.draft(image.mode, (max_side, max_side))
        image = ImageOps.exif_transpose(image)
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        image.save(destination, quality=95)


def print_summary(entries: list[KitEntry], out: Path) -> None:
    """Photos per source and split, and the total."""
    counts = collections.Counter((entry.source, entry.split) for entry in entries)
    sources = sorted({entry.source for entry in entries})
    print(f"\nphoto kit in {out}\n{'source':<30} {'train':>6} {'val':>6}")
    for source in sources:
        print(f"{source:<30} {counts[source, 'train']:>6} {counts[source, 'val']:>6}")
    totals = collections.Counter(entry.split for entry in entries)
    print(f"{'total':<30} {totals['train']:>6} {totals['val']:>6}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="example: python pipelines/make_photo_kit.py --out photos/kit --debs /tmp/debs/x",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, required=True, help="kit folder; receives train/, val/, sources.tsv")
    parser.add_argument(
        "--debs",
        type=Path,
        help="folder where the packages are already extracted "
        "(dpkg-deb -x PACKAGE.deb DIR); default: apt-get download them into a temp dir",
    )
    parser.add_argument("--list", type=Path, default=DEFAULT_LIST, help=f"kit list (default: {DEFAULT_LIST})")
    parser.add_argument("--force", action="store_true", help="replace the train/ and val/ of an existing kit")
    parser.add_argument(
        "--max-side",
        type=int,
        help="downscale photos whose longer side exceeds this (e.g. 1024) rather than copy them as they are",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        entries = read_kit_list(args.list)
        packages = sorted({entry.source for entry in entries} - {SKIMAGE})
        if args.max_side is not None and args.max_side < 1:
            raise KitError(f"--max-side must be a positive number of pixels, got {args.max_side}")
        if args.debs is not None and not args.debs.is_dir():
            raise KitError(f"--debs folder '{args.debs}' does not exist")
        with tempfile.TemporaryDirectory(prefix="photo_kit_") as work_dir:
            tree = args.debs if args.debs is not None or not packages else extract_packages(packages, Path(work_dir))
            check_sources(entries, tree)
            prepare_output(args.out, args.force)
            copy_photos(entries, tree, args.out, args.max_side)
    except KitError as error:
        sys.exit(f"make_photo_kit: error: {error}.")
    print_summary(entries, args.out)


if __name__ == "__main__":
    main()
