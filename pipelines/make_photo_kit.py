"""Build the photo kit: some two hundred real colour photographs from Debian packages and scikit-image.

The kit is small enough to train a demo model on a CPU and to eyeball colorizations, and it needs
no dataset download: ``configs/photo_kit.txt`` names each photo by Debian package and path (or by
``skimage.data`` function) and its split. A photo stored inside a Qt resource archive (GCompris
ships its pictures that way) is named ``ARCHIVE.rcc!PATH/IN/ARCHIVE``. Files land flat in
``OUT/train`` and ``OUT/val``, named ``<source>__<name>.<ext>``; ``OUT/sources.tsv`` records where
each came from.

Example:
    python pipelines/make_photo_kit.py --out photos/kit
    python pipelines/make_photo_kit.py --out photos/kit --debs /tmp/debs/x   # packages already extracted
    python pipelines/make_photo_kit.py --out photos/kit_small --max-side 1024   # faster to decode
"""

from __future__ import annotations

import argparse
import collections
import functools
import io
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from tqdm import tqdm

DEFAULT_LIST = Path(__file__).resolve().parent.parent / "configs" / "photo_kit.txt"
SKIMAGE = "skimage"
SPLITS = ("train", "val")
ARCHIVE_SEPARATOR = "!"  # ``usr/share/gcompris-qt/rcc/erase.rcc!gcompris/.../gorilla.webp``


class KitError(Exception):
    """A problem with the kit list, the packages or the output folder, in one sentence."""


@dataclass(frozen=True)
class KitEntry:
    """One photo of the kit: where it comes from and which split it belongs to."""

    source: str  # a Debian package name, or "skimage"
    path: str  # path inside the package (``ARCHIVE.rcc!MEMBER`` inside a Qt resource archive), or a skimage.data name
    split: str
    line_number: int

    @property
    def archive_and_member(self) -> tuple[str, str | None]:
        """The package file holding the photo, and the photo's path inside it when that file is an archive."""
        archive, _, member = self.path.partition(ARCHIVE_SEPARATOR)
        return archive, member or None

    @property
    def flat_name(self) -> str:
        """``plasma__Kite.jpg`` for a KDE wallpaper, ``opencv__fruits.jpg``, ``skimage__coffee.png``,
        ``gcompris__erase-gorilla.webp`` for a picture in GCompris's ``erase.rcc``."""
        prefix = self.source.split("-")[0]
        if self.source == SKIMAGE:
            return f"{prefix}__{self.path}.png"
        archive, member = self.archive_and_member
        if member is not None:
            return f"{prefix}__{Path(archive).stem}-{Path(member).stem}{Path(member).suffix.lower()}"
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


@functools.cache
def qt_resources(archive: Path) -> dict[str, bytes]:
    """Every file in a compiled Qt resource archive (``.rcc``), by its path inside the archive.

    The format (Qt's ``rcc --binary``, versions 1-3): a header ``qres``, version, and offsets of
    the tree, the data and the names; the tree is a flat array of nodes (name offset, flags, then
    children for a directory or a data offset for a file); a file's data is a big-endian length and
    the bytes, zlib-compressed behind a 4-byte size when flag 1 is set.
    """
    data = archive.read_bytes()
    if len(data) < 20 or data[:4] != b"qres":
        raise KitError(f"'{archive}' is not a Qt resource archive")
    try:
        return parse_qt_resources(data, archive)
    except (struct.error, zlib.error, UnicodeDecodeError) as error:
        raise KitError(f"'{archive}' is a damaged Qt resource archive ({error})") from None


def parse_qt_resources(data: bytes, archive: Path) -> dict[str, bytes]:
    """The files of the archive ``data`` (read from ``archive``); see ``qt_resources``."""
    version, tree, payload, names = struct.unpack_from(">IIII", data, 4)
    node_size = 22 if version >= 2 else 14

    def name_at(offset: int) -> str:
        (length,) = struct.unpack_from(">H", data, names + offset)
        start = names + offset + 6  # length, then a 4-byte hash, then UTF-16 code units
        return data[start : start + 2 * length].decode("utf-16-be")

    files: dict[str, bytes] = {}
    pending = [(0, "")]  # (node index, path of its parent)
    while pending:
        index, parent = pending.pop()
        node = tree + index * node_size
        name_offset, flags = struct.unpack_from(">IH", data, node)
        path = f"{parent}/{name_at(name_offset)}".lstrip("/") if index else ""
        if flags & 2:  # directory
            count, first = struct.unpack_from(">II", data, node + 6)
            pending.extend((child, path) for child in range(first, first + count))
            continue
        (offset,) = struct.unpack_from(">I", data, node + 10)
        (size,) = struct.unpack_from(">I", data, payload + offset)
        blob = data[payload + offset + 4 : payload + offset + 4 + size]
        if flags & 4:
            raise KitError(f"'{archive}': '{path}' is zstd-compressed, which this reader does not support")
        files[path] = zlib.decompress(blob[4:]) if flags & 1 else blob
    return files


def read_source(entry: KitEntry, tree: Path) -> bytes | Path:
    """The photo's file in the extracted tree, or its bytes when it lives inside an archive."""
    archive, member = entry.archive_and_member
    return tree / archive if member is None else qt_resources(tree / archive)[member]


def is_present(entry: KitEntry, tree: Path | None) -> bool:
    if entry.source == SKIMAGE:
        return True
    archive, member = entry.archive_and_member
    if not (tree / archive).is_file():
        return False
    return member is None or member in qt_resources(tree / archive)


def check_sources(entries: list[KitEntry], tree: Path | None) -> None:
    """Fail, naming the first, if a listed package file is not in the extracted tree."""
    missing = [entry for entry in entries if not is_present(entry, tree)]
    if missing:
        first = missing[0]
        raise KitError(
            f"{len(missing)} listed photo(s) missing, first: '{first.path}' of package {first.source} "
            f"(list line {first.line_number}), looked for '{tree / first.archive_and_member[0]}'"
        )


def copy_photos(entries: list[KitEntry], tree: Path | None, out: Path, max_side: int | None = None) -> None:
    """Copy every listed photo into ``out/<split>/<flat name>`` and record its origin."""
    for entry in tqdm(entries, desc="photos", unit="photo"):
        destination = out / entry.split / entry.flat_name
        if entry.source == SKIMAGE:
            save_skimage_photo(entry.path, destination)
            continue
        source = read_source(entry, tree)
        if max_side is not None:
            save_downscaled(source, destination, max_side)
        else:
            copy_source(source, destination)
    rows = [f"{entry.split}/{entry.flat_name}\t{entry.source}\t{entry.path}\n" for entry in entries]
    (out / "sources.tsv").write_text("file\tsource\tpath\n" + "".join(rows), encoding="utf-8")


def copy_source(source: Path | bytes, destination: Path) -> None:
    """Write a photo unchanged: a file of the extracted tree, or bytes read out of an archive."""
    if isinstance(source, bytes):
        destination.write_bytes(source)
    else:
        shutil.copyfile(source, destination)


def save_downscaled(source: Path | bytes, destination: Path, max_side: int) -> None:
    """Save ``source`` upright with its longer side at most ``max_side`` (JPEG quality 95), or copy it.

    Multi-megapixel, often progressive, JPEGs cost 0.1-0.4 s each to decode; a CPU smoke run on
    64 px crops does not need them. WebP is saved lossless.
    """
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
        if max(image.size) <= max_side:
            copy_source(source, destination)
            return
        image.draft(image.mode, (max_side, max_side))
        image = ImageOps.exif_transpose(image)
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        image.save(destination, **({"lossless": True} if destination.suffix == ".webp" else {"quality": 95}))


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
