"""Train the colorization cINN with the MAP objective (Ardizzone et al. 2019, section 3.2).

Reads top to bottom: parse, build, resume, loop (step, log, validate, checkpoint), export.

Examples:
    python pipelines/train.py --config configs/default.yaml --data photos/kit/train --out runs/default
    python pipelines/train.py --out runs/default --resume             # continue after an interruption
    python pipelines/train.py --config configs/debug.yaml --data DIR --out runs/x --set train.steps=50
    torchrun --nproc_per_node 2 pipelines/train.py --config configs/debug.yaml --data DIR --out runs/ddp
    python pipelines/train.py --config imagenet --data 'shards/train-{000000..000127}.tar' --out runs/x  # tar shards
    # one machine of two (node_rank 0 and 1); a failed worker restarts the job from its last checkpoint:
    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 4 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \
        --rdzv-id imagenet --max-restarts 3 pipelines/train.py --config imagenet --data 'shards/...' --out /shared/run
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from cinn.programs.cli import add_recipe_arguments, add_run_arguments, documented_parser, load_recipe, user_errors_exit
from cinn.programs.run_dir import continue_after_restart, photo_datasets, prepare_run, sample_grid

from cinn.blocks import ActNorm
from cinn.colorizer import BASELINE_FILE, Colorizer
from cinn.config import to_dict
from cinn.flow_training import (
    Progress,
    build_model,
    build_optimizer,
    conditioning_frozen,
    next_batch,
    optimisation_step,
    validate,
    wrap,
)
from cinn.recipe import Recipe
from cinn.run_loop import RunLog, run_steps, save_checkpoint
from cinn.training import (
    ProcessGroup,
    init_distributed,
    load_checkpoint,
    set_rng_state,
    training_batches,
    validation_loader,
)

LAST, BEST = "checkpoints/last.pt", "checkpoints/best.pt"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = documented_parser(__doc__)
    add_recipe_arguments(parser, config_required=False)
    add_run_arguments(parser)
    return parser.parse_args(argv)


def save(path: Path, model, optimizer, scheduler, progress: Progress, recipe: Recipe) -> None:
    save_checkpoint(path, progress, to_dict(recipe), model=model, optimizer=optimizer, scheduler=scheduler)


def model_card(model: Colorizer, recipe: Recipe, progress: Progress, data: str, counts: tuple[int, int]) -> str:
    """The release's README.md: what the model is and how it was trained, every figure from the run."""
    config, flow = recipe.model, recipe.model.flow
    kwargs = ", ".join(f"{key}={value}" for key, value in config.conditioning_kwargs.items())
    settings = ", ".join(f"{key} {value}" for key, value in flow.coupling_settings.items())
    conditioning = sum(parameter.numel() for parameter in model.conditioning_parameters())
    flow_parameters = sum(parameter.numel() for parameter in model.flow.parameters())
    return (
        "# cINN colorization model\n\n"
        f"- conditioning net: `{config.conditioning_net}` ({kwargs}), {conditioning:,} parameters, on lightness "
        f"{config.lightness_size} px"
        + (" (with its pretrained head as the colour guide)" if model.guide else "")
        + "\n"
        f"- conditional Glow on ab {config.ab_size} px: couplings per level {list(flow.steps_per_level)}, "
        f"widths {list(flow.hidden_channels)}, {flow.coupling} couplings ({settings}), {flow.mixing} mixing; "
        f"{flow_parameters:,} "
        f"parameters ({conditioning + flow_parameters:,} in all)\n"
        f"- default sampling temperature: {config.temperature}\n"
        f"- trained on: `{data}` ({counts[0]} training photos, {counts[1]} validation photos)\n"
        f"- steps: {progress.step} at batch size {recipe.train.batch_size}, {progress.elapsed_seconds / 60:.0f} "
        "minutes of training loop\n"
        f"- validation NLL of normalised ab: {progress.last_val_bits_per_dim:.4f} bits/dim at the last step "
        f"(these weights), best {progress.best_val_bits_per_dim:.4f} (checkpoints/best.pt)\n"
        f"- skipped steps (non-finite): {progress.skipped_steps}\n"
    )


def check_ranks_in_sync(model: torch.nn.Module) -> None:
    """Every rank must end with the same weights; a difference is a bug worth stopping for."""
    flat = torch.cat([tensor.detach().float().flatten().cpu() for tensor in model.state_dict().values()])
    gathered = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, flat)
    if any(not torch.equal(gathered[0], other) for other in gathered[1:]):
        raise RuntimeError("ranks ended with different weights")
    if dist.get_rank() == 0:
        print(f"weights identical on all {len(gathered)} ranks")


class Reporter:
    """Rank 0's outputs after each step: the run's log, validation, sample grids, checkpoints."""

    def __init__(self, out: Path, recipe: Recipe, progress: Progress, val_loader, device: torch.device):
        self.out, self.recipe, self.val_loader, self.device = out, recipe, val_loader, device
        self.run_log = RunLog(out, recipe.train.steps, progress.step)

    def due(self, every: int, step: int) -> bool:
        return step % every == 0 or step == self.recipe.train.steps

    def after_step(self, model, optimizer, scheduler, progress: Progress, loss, grad_norm, images: int) -> None:
        train, step, run_log = self.recipe.train, progress.step, self.run_log
        run_log.stepped(images)
        if self.due(train.log_every, step):
            rate = run_log.images_per_second()
            bpd, total = loss.nll_bits_per_dim.item(), loss.total.item()
            run_log.bar.set_postfix(loss=f"{total:.3f}", bpd=f"{bpd:.3f}", img_s=f"{rate:.1f}")
            run_log.log(step, {
                "train/bits_per_dim": bpd, "train/l2": loss.l2.item(), "train/loss": total,
                "train/lr": scheduler.get_last_lr()[0], "train/grad_norm": grad_norm.item(),
                "train/skipped_steps": progress.skipped_steps, "train/skipped_photos": progress.skipped_photos,
                "train/images_per_second": rate,
            })  # fmt: skip
        if self.due(train.val_every, step):
            val_bpd = validate(model, self.val_loader, train.val_batches, self.device)
            run_log.log(step, {"val/bits_per_dim": val_bpd})
            progress.last_val_bits_per_dim = val_bpd
            if val_bpd < progress.best_val_bits_per_dim:
                progress.best_val_bits_per_dim = val_bpd
                save(self.out / BEST, model, optimizer, scheduler, progress, self.recipe)
        if self.due(train.image_every, step):
            run_log.writer.add_image("samples", sample_grid(model, self.val_loader, self.device), step)
        if self.due(train.checkpoint_every, step):
            save(self.out / LAST, model, optimizer, scheduler, progress, self.recipe)


def start_or_resume(args, recipe: Recipe, model: Colorizer, optimizer, scheduler, train_set, device) -> Progress:
    """The resumed loop state (weights, optimiser, schedule, RNG) or a fresh start (ActNorm initialised)."""
    if args.resume:
        checkpoint = load_checkpoint(args.out / LAST)
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        set_rng_state(checkpoint["rng"])
        progress = Progress(**checkpoint["progress"])
        print(f"resuming {args.out} at step {progress.step} ({LAST})", file=sys.stderr)
        return progress
    if recipe.train.init_from is not None:  # the release's weights, ActNorm's included
        print(f"starting from the weights of {recipe.train.init_from} (train.init_from)", file=sys.stderr)
        return Progress()
    if any(isinstance(module, ActNorm) for module in model.modules()):
        first = training_batches(train_set, recipe.train.batch_size, 0, recipe.train.seed + 1)
        lightness, ab = next_batch(first, Progress(), device, train_set)
        model.initialize(lightness, ab)
    return Progress()


def export_release(args, recipe: Recipe, model: Colorizer, progress: Progress, run) -> None:
    """``runs/NAME/release``: config, weights with their provenance, model card, regression baseline."""
    card = model_card(model, recipe, progress, run.data, (len(run.train), len(run.val)))
    provenance = {"data": run.data, "train_photos": len(run.train), "steps": progress.step,
                  "val_bits_per_dim": progress.last_val_bits_per_dim, "recipe": to_dict(recipe)}  # fmt: skip
    # Written whole beside the run, then moved into place: a release is never seen half-written, and
    # an earlier one is replaced only once the new one is complete.
    release, partial = args.out / "release", args.out / f".release.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        model.save_pretrained(partial, card=card, **provenance)
        # Ship the deterministic baseline beside the model: the pretraining's, or the fine-tuned release's.
        train = recipe.train
        if train.pretrained_conditioning or train.init_from:
            source = train.pretrained_conditioning or Path(train.init_from) / BASELINE_FILE
            baseline = Path(source).with_name(BASELINE_FILE)
            if baseline.is_file():
                shutil.copyfile(baseline, partial / BASELINE_FILE)
        if release.exists():
            shutil.rmtree(release)
        partial.rename(release)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    print(f"release written to {release}")


@dataclass
class Loop:
    """What the optimisation loop works on."""

    model: Colorizer
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    progress: Progress
    batches: Iterator
    train_set: torch.utils.data.Dataset


def train_steps(args, recipe: Recipe, loop: Loop, group: ProcessGroup, device, reporter: Reporter | None) -> int | None:
    """Steps until ``train.steps`` in the shared loop; 130 if a stop signal came first (saved)."""
    progress, frozen, forward = loop.progress, None, None

    def take_step() -> None:
        nonlocal frozen, forward
        if conditioning_frozen(recipe, progress.step) != frozen:
            frozen = conditioning_frozen(recipe, progress.step)
            forward = wrap(loop.model, frozen, group, device)
            forward = torch.compile(forward) if recipe.train.compile else forward
        started = time.perf_counter()
        lightness, ab = next_batch(loop.batches, progress, device, loop.train_set)
        loss, grad_norm = optimisation_step(forward, loop.model, loop.optimizer, lightness, ab, recipe, progress)
        loop.scheduler.step()
        progress.step += 1
        progress.elapsed_seconds += time.perf_counter() - started
        if reporter:
            images = lightness.shape[0] * group.world_size
            reporter.after_step(loop.model, loop.optimizer, loop.scheduler, progress, loss, grad_norm, images)

    def save_last() -> None:
        save(args.out / LAST, loop.model, loop.optimizer, loop.scheduler, progress, recipe)

    try:
        hint = f"python pipelines/train.py --out {args.out} --resume"
        return run_steps(recipe.train.steps, progress, take_step, save_last, args.out / LAST, hint, group, device)
    finally:
        # The DDP wrapper goes before the process group does (main's finally), on every path: a
        # two-process run that outlived its wrapper's group has been seen to hang on exit.
        forward = None


@user_errors_exit
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    continue_after_restart(args)
    recipe, run = prepare_run(args, load_recipe)
    group, device = init_distributed(args.device or recipe.train.device)
    train = recipe.train
    torch.manual_seed(train.seed)
    try:
        # Data: the split written in the run directory is the one used, also on resume.
        train_set, val_set = photo_datasets(run, recipe)

        model = build_model(recipe, device)
        optimizer, scheduler = build_optimizer(model, recipe)
        progress = start_or_resume(args, recipe, model, optimizer, scheduler, train_set, device)
        batches = training_batches(train_set, train.batch_size, recipe.data.num_workers, train.seed, progress.step,
                                   group)  # fmt: skip
        loop = Loop(model, optimizer, scheduler, progress, batches, train_set)

        val_loader = validation_loader(val_set, train.batch_size, 0)
        reporter = Reporter(args.out, recipe, progress, val_loader, device) if group.is_main else None
        try:
            stopped = train_steps(args, recipe, loop, group, device, reporter)
        finally:
            if reporter:
                reporter.run_log.close()
        if stopped is not None:
            return stopped
        if group.world_size > 1:
            check_ranks_in_sync(model)
        if group.is_main:
            export_release(args, recipe, model, progress, run)
        return 0
    finally:
        if group.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    raise SystemExit(main())
