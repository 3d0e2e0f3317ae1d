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
import sys
import time
from pathlib import Path

import torch
from cinn.conditioning_nets import PretrainingModel, accumulate_bin_counts
from cinn.programs.cli import add_recipe_arguments, add_run_arguments, documented_parser, load_recipe, user_errors_exit
from cinn.programs.run_dir import continue_after_restart, photo_datasets, prepare_run
from safetensors.torch import save_file
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from cinn.color import AB_SCALE
from cinn.colorizer import conditioning_net_for
from cinn.recipe import PretrainConfig
from cinn.training import (
    atomic_save,
    load_checkpoint,
    resolve_device,
    rng_state,
    set_rng_state,
    stop_signals,
    training_batches,
    validation_loader,
)

LAST = "checkpoints/last.pt"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = documented_parser(__doc__)
    add_recipe_arguments(parser, config_required=False)
    add_run_arguments(parser)
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
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


def export(model: PretrainingModel, out: Path, settings: PretrainConfig) -> None:
    metadata = {
        "head_hidden_channels": json.dumps(settings.head_hidden_channels),
        "baseline_temperature": json.dumps(settings.baseline_temperature),
    }
    save_file({k: v.contiguous() for k, v in model.backbone.state_dict().items()}, out / "backbone.safetensors")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out / "baseline.safetensors", metadata)


@user_errors_exit
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    continue_after_restart(args)
    recipe, run = prepare_run(args, load_recipe)
    settings, device = recipe.pretrain, resolve_device(args.device)
    torch.manual_seed(settings.seed)
    train_set, val_set = photo_datasets(run, recipe)
    val_loader = validation_loader(val_set, 32, 0)

    backbone, temperature = conditioning_net_for(recipe.model), settings.baseline_temperature
    model = PretrainingModel(backbone, settings.head_hidden_channels, prediction_temperature=temperature).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    step = 0
    if args.resume:
        checkpoint = load_checkpoint(args.out / LAST)
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        step = checkpoint["step"]
        set_rng_state(checkpoint["rng"])
    else:  # the rebalancing needs the colour statistics of the training photos
        counting = training_batches(train_set, settings.batch_size, recipe.data.num_workers, settings.seed + 1)
        counts = accumulate_bin_counts(model.head.quantizer, usable_ab(counting, train_set), settings.bin_count_batches)
        model.head.set_bin_counts(counts.to(device), mix=settings.rebalance_mix)
    batches = training_batches(train_set, settings.batch_size, recipe.data.num_workers, settings.seed, step)

    def save() -> None:
        atomic_save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "step": step,
                "rng": rng_state(),
            },
            args.out / LAST,
        )

    writer = SummaryWriter(args.out / "tensorboard")
    bar = tqdm(total=settings.steps, initial=step, dynamic_ncols=True)
    clock = time.perf_counter()
    with stop_signals() as stop:
        try:
            while step < settings.steps:
                if stop.requested:  # between steps: the saved weights and step count agree
                    save()
                    print(f"\nstopped at step {step}; saved. Continue with --resume --out {args.out}", file=sys.stderr)
                    return 130
                batch = next(batches)
                if not batch["path"]:
                    train_set.check_some_usable()
                    continue
                loss = model.loss(batch["lightness"].to(device), batch["ab"].to(device), settings.regression_weight)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                bar.update(1)
                if step % settings.log_every == 0:
                    rate = settings.log_every * settings.batch_size / (time.perf_counter() - clock)
                    clock = time.perf_counter()
                    bar.set_postfix(loss=f"{loss.item():.3f}", img_s=f"{rate:.0f}")
                    writer.add_scalar("train/loss", loss.item(), step)
                if step % settings.val_every == 0 or step == settings.steps:
                    metrics = validate(model, val_loader, device, settings)
                    for name, value in metrics.items():
                        writer.add_scalar(name, value, step)
                    tqdm.write(f"step {step}: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
                if step % settings.checkpoint_every == 0 or step == settings.steps:
                    save()
        except KeyboardInterrupt:  # a second Ctrl-C: the step may be half done, so nothing is saved
            print(f"\ninterrupted twice: stopped without saving; {args.out / LAST} is the last good checkpoint",
                  file=sys.stderr)  # fmt: skip
            return 130
        finally:
            bar.close()
            writer.close()

    export(model, args.out, settings)
    print(f"backbone written to {args.out / 'backbone.safetensors'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
