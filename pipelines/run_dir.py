"""The run directory of a training pipeline: resolved recipe, published split, sample grids."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.utils import make_grid

try:  # POSIX; elsewhere runs go unlocked
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

from cinn.color import normalized_lab_to_rgb
from cinn.config import save_config
from cinn.data import ColorizationDataset, check_cache_fits, split_train_val, write_split
from cinn.errors import DataError, UsageError
from cinn.images import list_images
from cinn.recipe import Recipe
from cinn.shards import ShardedPhotos, ShardSet, is_shard_source, shard_split

CONFIG, RUN_INFO, TRAIN_LIST, VAL_LIST = "config.yaml", "run.json", "train.txt", "val.txt"


@dataclass(frozen=True)
class RunData:
    """The photos of a run: the data source named at its start and its train / validation split.

    For tar shards (``--data 'shards/train-{000000..000127}.tar'``), ``train`` and ``val`` are the photos'
    names in the shards (their paths relative to the folder the shards were made from), and
    ``train_shards`` / ``val_shards`` say where to stream them from.
    """

    data: str
    train: list[str]
    val: list[str]
    train_shards: ShardSet | None = None
    val_shards: ShardSet | None = None


def prepare_run(
    args: argparse.Namespace,
    load_recipe: Callable[[Path, list[str]], Recipe],
    checkpoint: str = "checkpoints/last.pt",
) -> tuple[Recipe, RunData]:
    """Resolves the recipe and the data split of a new or resumed run in ``args.out``.

    A new run refuses a directory that already holds a checkpoint (it would be overwritten);
    ``--resume`` reads the run's own ``config.yaml`` (``--set`` still applies) and split files.
    Only rank 0 writes; every rank computes the same split.
    """
    out: Path = args.out
    is_main = int(os.environ.get("RANK", "0")) == 0
    if is_main and out.is_dir():  # a missing run to --resume is the clear error below
        lock_run(out)
    if args.resume:
        if args.config is not None:
            raise UsageError("--resume continues with the run's own config.yaml; change values with --set")
        if not (out / CONFIG).is_file():
            raise FileNotFoundError(f"'{out}' holds no run to resume (no {CONFIG})")
        recipe = load_recipe(out / CONFIG, args.overrides)
        info = json.loads((out / RUN_INFO).read_text(encoding="utf-8"))
        if is_main:
            save_config(recipe, out / CONFIG)
        if is_shard_source(info["data"]):  # the split of shards follows from their names, as at the start
            return recipe, split_data(info["data"], info["val_data"], recipe.data.val_fraction)
        return recipe, RunData(info["data"], list_images(out / TRAIN_LIST), list_images(out / VAL_LIST))
    if args.config is None or args.data is None:
        raise UsageError("a new run needs --config and --data (or --resume to continue one)")
    if (out / checkpoint).exists():
        raise FileExistsError(f"'{out}' already holds a training run; pass --resume or choose another --out")
    recipe = load_recipe(args.config, args.overrides)
    run = split_data(str(args.data), args.val_data, recipe.data.val_fraction)
    if not run.train or not run.val:
        raise DataError(
            f"'{args.data}' gives {len(run.train)} training and {len(run.val)} validation photos; need both"
        )
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        lock_run(out)
        save_config(recipe, out / CONFIG)
        # Shard runs publish the photos' names, which are already relative to the dataset's top folder.
        write_split(out, run.train, run.val, root="." if run.train_shards else None)
        info = {"data": str(args.data), "val_data": args.val_data, "train": len(run.train), "val": len(run.val),
                "torchelastic_run_id": os.environ.get("TORCHELASTIC_RUN_ID")}  # fmt: skip
        (out / RUN_INFO).write_text(json.dumps(info, indent=2), encoding="utf-8")
    return recipe, run


def split_data(data: str, val_data: str | None, val_fraction: float) -> RunData:
    """Training and validation photos of ``--data`` and ``--val-data`` (folders, lists or tar shards)."""
    if is_shard_source(data):
        train_shards, train, val_shards, val = shard_split(data, val_data, val_fraction)
        if val_shards is None:
            val = list_images(val_data)
        return RunData(data, train, val, train_shards, val_shards)
    if is_shard_source(val_data):
        raise UsageError("validation shards (--val-data) need training shards (--data) too")
    paths = list_images(data)
    if val_data:
        val = list_images(val_data)
        held_out = {os.path.realpath(path) for path in val}  # --val-data may lie inside --data
        train = [path for path in paths if os.path.realpath(path) not in held_out]
    else:
        train, val = split_train_val(paths, data, val_fraction)
    return RunData(data, train, val)


def photo_datasets(run: RunData, recipe: Recipe) -> tuple[ColorizationDataset | ShardedPhotos, ...]:
    """The training and validation datasets of a run: read from the folder, or streamed from shards."""
    config = recipe.data.dataset_config(recipe.model)
    if run.train_shards is not None:
        train_set = ShardedPhotos(run.train_shards, train=True, config=config)
    else:
        check_cache_fits(len(run.train), config, recipe.data.num_workers)
        train_set = ColorizationDataset(run.train, train=True, config=config)
    if run.val_shards is not None:
        val_set = ShardedPhotos(run.val_shards, train=False, config=config)
    else:
        val_set = ColorizationDataset(run.val, train=False, config=config)
    return train_set, val_set


def continue_after_restart(args: argparse.Namespace, checkpoint: str = "checkpoints/last.pt") -> None:
    """Turn a worker that ``torchrun --max-restarts`` restarted after a failure into ``--resume``.

    torchrun restarts every worker with its original command line, which starts a new run; if the
    run already has a checkpoint, the job continues from it instead (its own config, split and step).
    On several machines the run directory must be on a file system they share.
    """
    if args.resume or not (args.out / checkpoint).is_file() or not (args.out / RUN_INFO).is_file():
        return
    # torchrun restarts the workers of a healthy machine too when another machine's restart joins the
    # rendezvous, without counting it: the job's id, recorded when the run started, says it is the same job.
    job = os.environ.get("TORCHELASTIC_RUN_ID")
    started_by = json.loads((args.out / RUN_INFO).read_text(encoding="utf-8")).get("torchelastic_run_id")
    if int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0 or (job is not None and job == started_by):
        args.resume, args.config, args.data, args.val_data = True, None, None, None


_LOCKS: dict[Path, object] = {}  # open lock files, held until the process ends


def lock_run(out: Path) -> None:
    """Hold an exclusive lock on ``out/.lock`` for the rest of this process: a second training program
    pointed at the same run directory stops at once instead of fighting over its checkpoints."""
    out = out.resolve()
    if out in _LOCKS or fcntl is None:
        return
    handle = open(out / ".lock", "a")  # noqa: SIM115 (kept open on purpose: the lock lives as long as it)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise UsageError(f"another program is training in '{out}' (it holds {out / '.lock'})") from None
    _LOCKS[out] = handle


@torch.no_grad()
def sample_grid(model, loader, device: torch.device, num_images: int = 4, num_samples: int = 2) -> torch.Tensor:
    """(3, H, W) grid: per row one validation photo as gray, ground truth, and samples at T=0.7, 1.0."""
    batch = next(iter(loader))
    lightness = batch["lightness"][:num_images].to(device)
    ab_truth = batch["ab"][:num_images].to(device)
    was_training = model.training
    model.eval()
    generator = torch.Generator(device=device).manual_seed(0)
    columns = [torch.zeros_like(ab_truth), ab_truth]
    for temperature in (0.7, 1.0):
        samples = model.sample(lightness, num_samples, temperature, generator)
        columns += [samples[:, index] for index in range(num_samples)]
    model.train(was_training)
    size = lightness.shape[2:]
    tiles = [normalized_lab_to_rgb(lightness, F.interpolate(ab, size=size, mode="bilinear")) for ab in columns]
    return make_grid(torch.stack(tiles, dim=1).flatten(0, 1), nrow=len(columns), padding=2)
