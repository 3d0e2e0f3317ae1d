"""One step of the cINN's MAP training (Ardizzone et al. 2019, section 3.2) and what it needs:
the model and optimiser built from a recipe, the phase in which the conditioning net is frozen, the
batch that skips unusable photos, the validation NLL. ``pipelines/train.py`` runs it in the shared loop
(``cinn.run_loop``); the benchmarks time it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch.nn.parallel import DistributedDataParallel

from cinn.colorizer import BASELINE_FILE, Colorizer
from cinn.config import ConfigError, to_dict
from cinn.errors import UserError
from cinn.loss import map_loss
from cinn.recipe import ModelConfig, Recipe
from cinn.training import ProcessGroup, warmup_cosine


class TrainingDiverged(UserError, RuntimeError):
    """Too many non-finite steps in a row: the settings (learning rate, clipping) need a change."""


@dataclass
class Progress:
    """Everything about the loop that a checkpoint must restore besides the weights."""

    step: int = 0
    best_val_bits_per_dim: float = math.inf
    last_val_bits_per_dim: float = math.inf
    skipped_steps: int = 0
    consecutive_bad_steps: int = 0
    skipped_photos: int = 0
    elapsed_seconds: float = 0.0  # wall-clock time of the optimisation loop, summed over resumes


def build_model(recipe: Recipe, device: torch.device) -> Colorizer:
    """The model of the recipe: the weights of the release ``train.init_from``, or fresh ones with the
    pretrained conditioning net (and its head, as the guide) if named."""
    if recipe.train.init_from is not None:
        return released_model(recipe.train.init_from, recipe.model).to(device)
    model = Colorizer(recipe.model)
    path = recipe.train.pretrained_conditioning
    if path is not None:
        if not Path(path).is_file():
            raise FileNotFoundError(f"train.pretrained_conditioning: '{path}' does not exist")
        model.conditioning_net.load_state_dict(load_file(path))
    if model.guide is not None:
        model.guide.load_state_dict(pretrained_head(path))
    return model.to(device)


def released_model(directory: str, config: ModelConfig) -> Colorizer:
    """The release at ``directory`` as a model of ``config`` to train further: every weight is the
    release's, and every model setting but the sampling temperature must be the recipe's."""
    released = Colorizer.from_pretrained(directory)
    for field in dataclasses.fields(config):
        ours, theirs = getattr(config, field.name), getattr(released.config, field.name)
        if field.name != "temperature" and ours != theirs:
            raise ConfigError(
                f"train.init_from: the release '{directory}' has model.{field.name} {to_dict(theirs)}, "
                f"the recipe {to_dict(ours)}: a fine-tuned model keeps the release's settings"
            )
    released.config = config  # the same model, with the recipe's sampling temperature
    return released


def pretrained_head(backbone_path: str) -> dict[str, torch.Tensor]:
    """The colorization head pretrained with the backbone at ``backbone_path``: the ``head.`` tensors of
    the ``baseline.safetensors`` that ``pretrain_condnet.py`` writes beside it."""
    baseline = Path(backbone_path).with_name(BASELINE_FILE)
    if not baseline.is_file():
        raise FileNotFoundError(f"model.guide: '{baseline}' (the pretrained head, beside the backbone) does not exist")
    tensors = load_file(baseline)
    return {name.removeprefix("head."): tensor for name, tensor in tensors.items() if name.startswith("head.")}


def build_optimizer(model: Colorizer, recipe: Recipe):
    train = recipe.train
    groups = [{"params": list(model.flow.parameters()), "lr": train.lr}]
    groups.append({"params": model.conditioning_parameters(), "lr": train.conditioning_lr})
    optimizer = torch.optim.Adam(groups, eps=train.adam_eps)
    schedule = warmup_cosine(train.warmup_steps, train.steps, train.min_lr_ratio, train.schedule == "cosine")
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def conditioning_frozen(recipe: Recipe, step: int) -> bool:
    freeze = recipe.train.freeze_conditioning_steps
    return freeze < 0 or step < freeze


def wrap(model: Colorizer, frozen: bool, group: ProcessGroup, device: torch.device) -> torch.nn.Module:
    """Sets what trains in this phase; DDP (re)built so it only syncs what trains."""
    for module in model.conditioning_modules():
        module.requires_grad_(not frozen)
        module.train(not frozen)
    model.flow.train()
    if group.world_size == 1:
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def next_batch(batches, progress: Progress, device: torch.device, dataset):
    """The next batch with at least one usable photo; skipped photos are counted. ``NoUsablePhotos``
    once every photo of ``dataset`` has been rejected."""
    while True:
        batch = next(batches)
        progress.skipped_photos += batch["num_skipped"]
        if batch["path"]:
            return batch["lightness"].to(device), batch["ab"].to(device)
        dataset.check_some_usable()


@torch.no_grad()
def validate(model: Colorizer, loader, max_batches: int, device: torch.device) -> float:
    """Mean bits/dim of the validation ab (no noise, centre crops)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for index, batch in enumerate(loader):
        if index >= max_batches:
            break
        if batch["path"]:
            bits = model.nll(batch["lightness"].to(device), batch["ab"].to(device))
            total, count = total + bits.sum().item(), count + bits.numel()
    model.train(was_training)
    return total / max(count, 1)


def optimisation_step(forward, model: Colorizer, optimizer, lightness, ab, recipe: Recipe, progress: Progress):
    """Forward, MAP loss, backward, clip and (if everything is finite) the Adam step."""
    train = recipe.train
    with torch.autocast(lightness.device.type, dtype=torch.bfloat16, enabled=train.bf16):
        zs, logdet = forward(lightness, ab)
    trainable = [p for p in model.parameters() if p.requires_grad]
    loss = map_loss([z.float() for z in zs], logdet.float(), trainable, train.l2_weight)
    optimizer.zero_grad(set_to_none=True)
    loss.total.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(trainable, train.grad_clip)
    if torch.isfinite(loss.total) and torch.isfinite(grad_norm):
        optimizer.step()
        progress.consecutive_bad_steps = 0
        return loss, grad_norm
    progress.skipped_steps += 1  # a non-finite step is counted and skipped, never applied
    progress.consecutive_bad_steps += 1
    if progress.consecutive_bad_steps >= train.max_bad_steps:
        raise TrainingDiverged(
            f"{progress.consecutive_bad_steps} non-finite steps in a row at step {progress.step}; stopped, "
            "the last good checkpoint is intact (try a lower train.lr or train.grad_clip)"
        )
    return loss, grad_norm
