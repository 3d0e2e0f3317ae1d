"""Write a photo folder or list as tar shards, for streaming training on several machines.

Each shard is a plain tar file (WebDataset's format) holding about --photos-per-shard photos, copied
byte for byte, named by their paths relative to the folder (for a list: to --root, by default the
list's folder), in an order shuffled by --seed so that every shard mixes the classes. Training reads
the shards with the same split and the same items as the folder: give it the brace pattern this
program prints. Write at least (processes x DataLoader workers) shards; for ImageNet, ~10 000 photos
(~1 GB) per shard gives 128 shards.

Examples:
    python pipelines/make_shards.py --data /data/imagenet/train --out shards/train --photos-per-shard 10000
    python pipelines/make_shards.py --data /data/imagenet/val --out shards/val --photos-per-shard 10000
    torchrun --nproc_per_node 4 pipelines/train.py --config imagenet --out runs/imagenet \\
        --data 'shards/train-{000000..000127}.tar' --val-data 'shards/val-{000000..000004}.tar'
"""

from __future__ import annotations

import argparse
import os
import random
from pathlib import Path

from cinn.programs.cli import documented_parser, user_errors_exit
from tqdm import tqdm

from cinn.errors import DataError
from cinn.files import publish
from cinn.images import list_images
from cinn.shards import require_webdataset


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = documented_parser(__doc__)
    parser.add_argument("--data", required=True, help="photo folder (any tree) or a list file")
    parser.add_argument("--root", type=Path, help="for a list file: the folder its photos' names start from")
    parser.add_argument("--out", required=True, help="shard name prefix: OUT-000000.tar, OUT-000001.tar, ...")
    parser.add_argument("--photos-per-shard", type=int, default=10_000, help="photos per shard (default: 10000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the photo order (default: 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace shards of the same names")
    args = parser.parse_args(argv)
    if args.photos_per_shard < 1:
        parser.error(f"--photos-per-shard must be at least 1, got {args.photos_per_shard}")
    return args


def relative_names(paths: list[str], root: Path) -> list[str]:
    """Each photo's POSIX path relative to ``root``, the name it gets in a shard."""
    names = []
    for path in paths:
        name = Path(os.path.relpath(path, root)).as_posix()
        if name.startswith("../"):
            raise DataError(f"photo '{path}' lies outside '{root}': pass the folder its name starts from as --root")
        names.append(name)
    return names


def write_shard(path: Path, photos: list[tuple[str, str]]) -> None:
    """A tar file of ``(name, file)`` photos, in order; mtime 0, so the same photos give the same bytes."""
    writer = require_webdataset().TarWriter
    with open(path, "wb") as stream, writer(stream, encoder=False, compress=False, mtime=0) as tar:
        for name, file in photos:
            stem, extension = name.rsplit(".", 1)  # the writer names a member KEY.EXTENSION
            tar.write({"__key__": stem, extension: Path(file).read_bytes()})


@user_errors_exit
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    paths = list_images(args.data)
    root = Path(args.data) if Path(args.data).is_dir() else (args.root or Path(args.data).parent)
    photos = list(zip(relative_names(paths, root), paths, strict=True))
    random.Random(args.seed).shuffle(photos)
    groups = [photos[start : start + args.photos_per_shard] for start in range(0, len(photos), args.photos_per_shard)]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    targets = [Path(f"{args.out}-{index:06d}.tar") for index in range(len(groups))]
    for target, group in tqdm(list(zip(targets, groups, strict=True)), desc="shards", unit="shard"):
        publish({target: lambda temporary, group=group: write_shard(temporary, group)}, overwrite=args.overwrite)
    pattern = f"{args.out}-{{000000..{len(groups) - 1:06d}}}.tar" if len(groups) > 1 else str(targets[0])
    print(f"{len(photos)} photos in {len(groups)} shards; train with --data '{pattern}'")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
