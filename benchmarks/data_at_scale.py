"""Data at ImageNet scale: listing, split, DataLoader throughput per worker, memory over a pass, decoders.

``--build N`` first writes an ImageNet-shaped folder of N generated JPEGs (1000 class folders
``n00000000``..``n00000999``, mostly 500 px on the long side, JPEG quality 95), cut from
the photo kit by random crops and resizes, so that decoding costs what it costs for real photos.
Then it measures, and prints:

- listing (``list_images``) and splitting (``split_train_val``, ``write_split``): seconds and
  memory (Python's allocation peak, ``tracemalloc``), measured on the folder and scaled linearly to
  ImageNet's 1,281,167 photos (both are linear in the number of files);
- decoders, one process, one thread: Pillow (``cinn.images.load_rgb``), Pillow with reduced-size
  JPEG decoding (``draft``), ``torchvision.io.decode_jpeg`` (CPU; its CUDA decode where present);
- the training DataLoader (``ColorizationDataset`` at the ImageNet recipe's lightness 256, ab 64):
  photos/s of one worker with full and with reduced decoding, and two workers;
- memory of each of two workers over a full pass over the folder (proportional set size: shared
  pages counted by share), which must stay flat;
- with ``--gpu-images-per-second R``: how many workers feed one GPU that trains R images/s.

Examples:
    python benchmarks/data_at_scale.py --build 50000 --kit photos/kit/train --data /scratch/imagenet-like
    python benchmarks/data_at_scale.py --data /scratch/imagenet-like --gpu-images-per-second 150
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import random
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

import torch
import torchvision
from PIL import Image
from torch.utils.data import DataLoader

from cinn.config import find_recipe, load_config
from cinn.data import ColorizationDataset, collate_skipping, split_train_val, write_split
from cinn.images import list_images, load_rgb
from cinn.recipe import Recipe

IMAGENET_TRAIN = 1_281_167
CLASSES = 1000
_SOURCES: list[Image.Image] = []  # the kit's photos, decoded once, shared with the build's processes by fork


def build(kit: Path, out: Path, count: int, processes: int) -> None:
    """``count`` JPEGs in 1000 class folders, each a random crop of a kit photo, resized as ImageNet's are."""
    started = time.perf_counter()
    for path in list_images(kit):
        image = load_rgb(path)
        image.thumbnail((1280, 1280), Image.Resampling.BICUBIC)
        _SOURCES.append(image)
    for index in range(CLASSES):
        (out / f"n{index:08d}").mkdir(parents=True, exist_ok=True)
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        sizes = pool.map(_make_photo, [(out, index) for index in range(count)], chunksize=256)
    print(f"built {count} JPEGs from {len(_SOURCES)} kit photos in {time.perf_counter() - started:.0f} s: "
          f"mean {statistics.mean(sizes) / 1e3:.0f} kB, {sum(sizes) / 1e9:.1f} GB")  # fmt: skip


def _make_photo(job: tuple[Path, int]) -> int:
    out, index = job
    rng = random.Random(index)
    source = _SOURCES[rng.randrange(len(_SOURCES))]
    area = rng.uniform(0.25, 1.0) * source.width * source.height
    aspect = rng.choice((4 / 3, 4 / 3, 4 / 3, 3 / 2, 1.0, 3 / 4))
    width = min(source.width, round(math.sqrt(area * aspect)))
    height = min(source.height, round(width / aspect))
    left, top = rng.randrange(source.width - width + 1), rng.randrange(source.height - height + 1)
    long_side = 500 if rng.random() < 0.8 else rng.randrange(250, 500)
    scale = long_side / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    photo = source.resize(size, Image.Resampling.BICUBIC, box=(left, top, left + width, top + height))
    path = out / f"n{index % CLASSES:08d}" / f"n{index % CLASSES:08d}_{index}.JPEG"
    photo.save(path, quality=95)
    return path.stat().st_size


def measure_listing(data: Path) -> list[str]:
    tracemalloc.start()
    started = time.perf_counter()
    paths = list_images(data)
    listing_s = time.perf_counter() - started
    listing_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.reset_peak()
    started = time.perf_counter()
    train, val = split_train_val(paths, data, 0.01)
    split_s = time.perf_counter() - started
    split_peak = tracemalloc.get_traced_memory()[1]
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        write_split(folder, train, val, root=data)
        write_s = time.perf_counter() - started
        written = sum(file.stat().st_size for file in Path(folder).iterdir())
    tracemalloc.stop()
    dataset_bytes = ColorizationDataset(paths)._paths.nbytes
    scale = IMAGENET_TRAIN / len(paths)
    print(f"\n{len(paths)} photos ({len(train)} train, {len(val)} val at val_fraction 0.01); ImageNet = x{scale:.1f}")
    print(f"{'':24} {'measured':>22} {'ImageNet (scaled)':>22}")
    for name, seconds, peak in (
        ("list_images", listing_s, listing_peak),
        ("split_train_val", split_s, split_peak),
    ):
        print(
            f"{name:24} {seconds:8.2f} s {peak / 2**20:8.0f} MB {seconds * scale:8.1f} s {peak * scale / 2**20:8.0f} MB"
        )
    files = f"{written / 2**20:8.1f} MB {write_s * scale:8.1f} s {written * scale / 2**20:8.1f} MB (the files)"
    print(f"{'write_split':24} {write_s:8.2f} s {files}")
    print(f"{'dataset path array':24} {dataset_bytes / 2**20:19.1f} MB {dataset_bytes * scale / 2**20:19.0f} MB")
    return paths


def measure_decoders(paths: list[str], count: int, decode_side: int) -> None:
    torch.set_num_threads(1)
    sample = random.Random(0).sample(paths, min(count, len(paths)))
    decoders = {
        "Pillow (load_rgb)": lambda path: load_rgb(path),
        f"Pillow, reduced decoding to >= {decode_side} px": lambda path: load_rgb(path, min_side=decode_side),
        "Pillow, reduced decoding to >= 128 px": lambda path: load_rgb(path, min_side=128),
        "torchvision.io.decode_jpeg (CPU)": lambda path: torchvision.io.decode_jpeg(torchvision.io.read_file(path)),
    }
    if torch.cuda.is_available():
        decoders["torchvision.io.decode_jpeg (CUDA)"] = lambda path: torchvision.io.decode_jpeg(
            torchvision.io.read_file(path), device="cuda"
        )
    print(f"\ndecoding {len(sample)} photos, one process, one thread (file cache warm):")
    for name, decode in decoders.items():
        for path in sample[:10]:
            decode(path)
        started = time.perf_counter()
        for path in sample:
            decode(path)
        if name.endswith("(CUDA)"):
            torch.cuda.synchronize()
        print(f"  {name:44} {len(sample) / (time.perf_counter() - started):7.0f} photos/s")
    if not torch.cuda.is_available():
        print("  torchvision.io.decode_jpeg (CUDA): not measured, no GPU here")


def loader_rate(dataset: ColorizationDataset, workers: int, batches: int, batch_size: int = 32) -> float:
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                        collate_fn=collate_skipping, generator=torch.Generator().manual_seed(0))  # fmt: skip
    iterator = iter(loader)
    next(iterator)  # worker start-up excluded
    started, count = time.perf_counter(), 0
    for _ in range(batches):
        batch = next(iterator)
        count += len(batch["path"]) + batch["num_skipped"]
    return count / (time.perf_counter() - started)


def proportional_set_size(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/{pid}/smaps_rollup has no Pss")


def measure_pass(dataset: ColorizationDataset, workers: int, batch_size: int = 32) -> None:
    """Memory of each worker over one pass over the whole dataset."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                        collate_fn=collate_skipping, generator=torch.Generator().manual_seed(0))  # fmt: skip
    iterator = iter(loader)
    next(iterator)
    pids = [worker.pid for worker in iterator._workers]
    samples = [[proportional_set_size(pid) for pid in pids]]
    started, total = time.perf_counter(), math.ceil(len(dataset) / batch_size) - 1
    for index in range(total):
        next(iterator)
        if (index + 1) % max(1, total // 10) == 0:
            samples.append([proportional_set_size(pid) for pid in pids])
    rate = (total * batch_size) / (time.perf_counter() - started)
    print(f"\none pass over {len(dataset)} photos, {workers} workers, {rate:.0f} photos/s; worker memory (PSS, MB):")
    for worker in range(workers):
        series = [sample[worker] / 2**20 for sample in samples]
        print(f"  worker {worker}: start {series[0]:.0f}, max {max(series):.0f}, end {series[-1]:.0f} "
              f"({', '.join(f'{value:.0f}' for value in series)})")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)  # fmt: skip
    parser.add_argument("--data", type=Path, required=True, help="the ImageNet-shaped folder (built with --build)")
    parser.add_argument("--build", type=int, metavar="N", help="first write N generated JPEGs into --data")
    parser.add_argument("--kit", type=Path, default=Path("photos/kit/train"), help="photos to cut them from")
    parser.add_argument("--processes", type=int, default=2, help="processes of the build (default: 2)")
    parser.add_argument("--batches", type=int, default=15, help="timed batches of 32 per loader setting")
    parser.add_argument("--decode-photos", type=int, default=400, help="photos per decoder (default: 400)")
    parser.add_argument("--pass-photos", type=int, help="photos of the memory pass (default: all of --data)")
    parser.add_argument("--gpu-images-per-second", type=float, help="one GPU's training rate, for workers per GPU")
    args = parser.parse_args(argv)
    if args.build:
        build(args.kit, args.data, args.build, args.processes)
    paths = measure_listing(args.data)

    recipe = load_config(Recipe, find_recipe("imagenet"))
    config = recipe.data.dataset_config(recipe.model)
    dataset = ColorizationDataset(paths, train=True, config=config)
    measure_decoders(paths, args.decode_photos, dataset.pairs.decode_side())

    print(f"\ntraining DataLoader, lightness {config.lightness_size}, ab {config.ab_size}, batch 32:")
    rates = {}
    for reduced in (False, True):
        setting = ColorizationDataset(paths, train=True, config=config.__class__(**{**config.__dict__,
                                      "reduced_decoding": reduced}))  # fmt: skip
        rates[reduced] = loader_rate(setting, 1, args.batches)
        print(f"  1 worker, reduced decoding {'on ' if reduced else 'off'}: {rates[reduced]:6.1f} photos/s per worker")
    two = loader_rate(dataset, 2, args.batches)
    print(f"  2 workers (2 cores), reduced decoding on: {two:6.1f} photos/s, {two / 2:.1f} per worker")
    if args.gpu_images_per_second:
        per_worker = max(rates.values())
        needed = math.ceil(args.gpu_images_per_second / per_worker)
        print(f"\none GPU at {args.gpu_images_per_second:g} images/s needs {needed} workers (cores) "
              f"at {per_worker:.0f} photos/s each")  # fmt: skip
    subset = paths if args.pass_photos is None else random.Random(1).sample(paths, min(args.pass_photos, len(paths)))
    measure_pass(ColorizationDataset(subset, train=True, config=config), 2)


if __name__ == "__main__":
    main()
