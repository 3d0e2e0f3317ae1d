"""Pretrain a conditioning network as a plain deterministic colorizer, as the cINN paper does.

The net gets a head that classifies each pixel's ab into quantised bins with class rebalancing
(Zhang et al. 2016), which keeps the features from collapsing to the brown average colour that an
L2 regression gives. Writes ``backbone.safetensors`` (point ``train.pretrained_conditioning`` at
it) and ``baseline.safetensors`` (backbone + head: the deterministic regression baseline).

Examples:
    python pipelines/pretrain_condnet.py --config configs/default.yaml --data photos/kit/train --out runs/pretrain
    python pipelines/pretrain_condnet.py --out runs/pretrain --resume
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from cinn.conditioning_nets import PretrainingModel, accumulate_bin_counts
from cinn.programs.cli import add_recipe_arguments, add_run_arguments, documented_parser, load_recipe, user_errors_exit
from cinn.programs.run_dir import continue_after_restart, photo_datasets, prepare_run
from safetensors.torch import save_file
from tqdm import tqdm

from cinn.color import AB_SCALE
from cinn.colorizer import conditioning_net_for
from cinn.config import to_dict
from cinn.recipe import PretrainConfig, Recipe
from cinn.run_loop import RunLog, run_steps, save_checkpoint
from cinn.training import (
    load_checkpoint,
    resolve_device,
    set_rng_state,
    training_batches,
    validation_loader,
    warmup_cosine,
)

LAST, BEST = "checkpoints/last.pt", "checkpoints/best.pt"


@dataclass
class Progress:
    """What a checkpoint restores besides the weights."""

    step: int = 0
    best_val_loss: float = math.inf
    elapsed_seconds: float = 0.0  # wall-clock time of the optimisation loop, summed over resumes


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = documented_parser(__doc__)
    add_recipe_arguments(parser, config_required=False)
    add_run_arguments(parser)
    return parser.parse_args(argv)


@torch.no_grad()
def validate(model: PretrainingModel, loader, device: torch.device, settings: PretrainConfig) -> dict[str, float]:
    """Validation loss and ab RMSE in Lab units of the prediction and of the all-gray baseline."""
    model.eval()
    loss_sum, squared, gray_squared, pixels, batches = 0.0, 0.0, 0.0, 0, 0
    for batch in loader:
        if not batch["path"]:
            continue
        lightness, ab = batch["lightness"].to(device), batch["ab"].to(device)
        loss_sum, batches = loss_sum + model.loss(lightness, ab, settings.regression_weight).item(), batches + 1
        predicted = model.predict_ab(lightness, out_size=tuple(ab.shape[2:]))
        squared += ((predicted - ab) * AB_SCALE).pow(2).sum().item()
        gray_squared += (ab * AB_SCALE).pow(2).sum().item()
        pixels += ab.shape[0] * ab.shape[2] * ab.shape[3]
    model.train()
    return {
        "val/loss": loss_sum / max(batches, 1),
        "val/ab_rmse": (squared / max(pixels, 1)) ** 0.5,
        "val/gray_ab_rmse": (gray_squared / max(pixels, 1)) ** 0.5,
    }


def usable_ab(loader, dataset):
    """The ab of every batch with a usable photo; ``NoUsablePhotos`` once every photo was rejected."""
    for batch in loader:
        if batch["path"]:
            yield batch["ab"]
        else:
            dataset.check_some_usable()


def start_or_resume(args, recipe: Recipe, model: PretrainingModel, optimizer, scheduler, train_set, device) -> Progress:
    """The resumed state (weights, optimiser, schedule, RNG), or a fresh start with the rebalancing statistics."""
    settings = recipe.pretrain
    if args.resume:
        checkpoint = load_checkpoint(args.out / LAST)
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        if "scheduler" in checkpoint:  # checkpoints written before the schedule had none (constant)
            scheduler.load_state_dict(checkpoint["scheduler"])
        set_rng_state(checkpoint["rng"])
        # Checkpoints written before the shared loop held only the step.
        return Progress(**checkpoint.get("progress", {"step": checkpoint.get("step", 0)}))
    counting = training_batches(train_set, settings.batch_size, recipe.data.num_workers, settings.seed + 1)
    counts = accumulate_bin_counts(model.head.quantizer, usable_ab(counting, train_set), settings.bin_count_batches)
    model.head.set_bin_counts(counts.to(device), mix=settings.rebalance_mix)
    return Progress()


def pretraining_step(
    model, optimizer, scheduler, batch, train_set, progress: Progress, run_log: RunLog, settings, device
) -> bool:
    """One Adam step on ``batch`` (False, and no step, for a batch without a usable photo)."""
    if not batch["path"]:
        train_set.check_some_usable()
        return False
    started = time.perf_counter()
    loss = model.loss(batch["lightness"].to(device), batch["ab"].to(device), settings.regression_weight)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    scheduler.step()
    progress.step += 1
    progress.elapsed_seconds += time.perf_counter() - started
    run_log.stepped(len(batch["path"]))
    if progress.step % settings.log_every == 0:
        rate = run_log.images_per_second()
        run_log.bar.set_postfix(loss=f"{loss.item():.3f}", img_s=f"{rate:.0f}")
        metrics = {"train/loss": loss.item(), "train/lr": scheduler.get_last_lr()[0], "train/images_per_second": rate}
        run_log.log(progress.step, metrics)
    return True


def report(model, val_loader, progress: Progress, run_log: RunLog, settings, device, save, out: Path) -> None:
    """Validation and checkpoints when due (``save(path)`` writes one; best.pt by validation loss)."""
    step, final = progress.step, progress.step == settings.steps
    if step % settings.val_every == 0 or final:
        metrics = validate(model, val_loader, device, settings)
        run_log.log(step, metrics)
        tqdm.write(f"step {step}: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
        if metrics["val/loss"] < progress.best_val_loss:
            progress.best_val_loss = metrics["val/loss"]
            save(out / BEST)
    if step % settings.checkpoint_every == 0 or final:
        save(out / LAST)


def export(model: PretrainingModel, out: Path, settings: PretrainConfig) -> None:
    metadata = {
        "head_hidden_channels": json.dumps(settings.head_hidden_channels),
        "baseline_temperature": json.dumps(settings.baseline_temperature),
        "head_level": json.dumps(settings.head_level),
    }
    save_file({k: v.contiguous() for k, v in model.backbone.state_dict().items()}, out / "backbone.safetensors")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out / "baseline.safetensors", metadata)


@user_errors_exit
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    continue_after_restart(args)
    recipe, run = prepare_run(args, load_recipe)
    settings, device = recipe.pretrain, resolve_device(args.device or recipe.train.device)
    torch.manual_seed(settings.seed)
    train_set, val_set = photo_datasets(run, recipe)
    val_loader = validation_loader(val_set, settings.batch_size, 0)

    backbone, temperature = conditioning_net_for(recipe.model), settings.baseline_temperature
    model = PretrainingModel(
        backbone, settings.head_hidden_channels, prediction_temperature=temperature, output_level=settings.head_level
    ).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    cosine = settings.schedule == "cosine"
    schedule = warmup_cosine(settings.warmup_steps, settings.steps, settings.min_lr_ratio, cosine)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    progress = start_or_resume(args, recipe, model, optimizer, scheduler, train_set, device)
    batches = training_batches(train_set, settings.batch_size, recipe.data.num_workers, settings.seed, progress.step)
    run_log = RunLog(args.out, settings.steps, progress.step)

    def save(path: Path) -> None:
        save_checkpoint(path, progress, to_dict(recipe), model=model, optimizer=optimizer, scheduler=scheduler)

    def take_step() -> None:
        if pretraining_step(model, optimizer, scheduler, next(batches), train_set, progress, run_log, settings, device):
            report(model, val_loader, progress, run_log, settings, device, save, args.out)

    try:
        hint = f"python pipelines/pretrain_condnet.py --out {args.out} --resume"
        stopped = run_steps(settings.steps, progress, take_step, lambda: save(args.out / LAST), args.out / LAST, hint)
    finally:
        run_log.close()
    if stopped is not None:
        return stopped
    if settings.export_weights == "best" and (args.out / BEST).is_file():
        best = load_checkpoint(args.out / BEST)
        model.load_state_dict(best["model"])
        print(f"exporting the weights of step {best['progress']['step']}, the lowest validation loss ({BEST})")
    export(model, args.out, settings)
    print(f"backbone written to {args.out / 'backbone.safetensors'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
