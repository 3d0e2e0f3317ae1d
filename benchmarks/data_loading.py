"""Throughput of the training DataLoader over the photo kit, with and without reduced JPEG decoding.

Counts photos per second after the first batch (so worker start-up is excluded) for a training
``ColorizationDataset`` at two resolutions. The kit mixes 2560x1600 wallpapers, ~500 px OpenCV and
scikit-image photos, JPEG and PNG; ImageNet photos (~400x350 JPEG) decode faster than the average.

Example:
    python pipelines/make_photo_kit.py --out photos/kit
    python benchmarks/data_loading.py --kit photos/kit --batches 20
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from cinn.data import ColorizationDataset, DatasetConfig, collate_skipping
from cinn.images import list_images

SIZES = ((64, 32), (256, 64))  # (lightness_size, ab_size)


def photos_per_second(paths: list[str], config: DatasetConfig, args: argparse.Namespace) -> float:
    """Steady-state photos/s of a shuffled training DataLoader over ``args.batches`` batches."""
    repeats = -(-(args.batches + 1) * args.batch_size // len(paths))
    dataset = ColorizationDataset(paths * repeats, train=True, config=config)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=args.workers,
        collate_fn=collate_skipping,
        generator=torch.Generator().manual_seed(0),
    )
    batches = iter(loader)
    next(batches)
    start, count = time.perf_counter(), 0
    for _ in range(args.batches):
        batch = next(batches)
        count += len(batch["path"]) + batch["num_skipped"]
    return count / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="example: python benchmarks/data_loading.py --kit photos/kit --batches 20",
    )
    parser.add_argument("--kit", type=Path, default=Path("photos/kit"), help="folder of photos (default: photos/kit)")
    parser.add_argument("--batches", type=int, default=20, help="timed batches per setting (default: 20)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    paths = list_images(args.kit)
    print(f"{len(paths)} photos from {args.kit}, batch {args.batch_size}, {args.workers} workers, train mode")
    print(f"{'lightness':>9} {'ab':>4} {'reduced decoding':>17} {'photos/s':>9} {'ms/photo/worker':>16}")
    for lightness_size, ab_size in SIZES:
        for reduced in (False, True):
            config = DatasetConfig(lightness_size=lightness_size, ab_size=ab_size, reduced_decoding=reduced)
            rate = photos_per_second(paths, config, args)
            per_worker = 1000.0 * max(args.workers, 1) / rate
            reduced_text = "yes" if reduced else "no"
            print(f"{lightness_size:>9} {ab_size:>4} {reduced_text:>17} {rate:>9.1f} {per_worker:>16.1f}")


if __name__ == "__main__":
    main()
