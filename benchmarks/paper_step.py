"""The paper-shape training step on the CPU: FLOPs per image, measured rate, memory by batch size.

The ImageNet recipe's model (L 256, ab 64, VGG conditioning net, 4+6+6+6 couplings) trains jointly
(the heavier phase: the conditioning net's gradients too) on random data. Printed: FLOPs of a
training step per image (``torch.utils.flop_counter``: convolutions and matrix products, forward
and backward), the CPU's seconds per step and FLOP/s, and the memory of a step at batch 1, 2 and 4,
each in a fresh process (the resident-set high-water mark above the model and Adam's state), fitted
as fixed + per-image and extrapolated to the recipe's batch per GPU. These are the inputs of the
README's GPU estimates.

Example:
    python benchmarks/paper_step.py              # ~3 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from cinn.colorizer import Colorizer
from cinn.config import find_recipe, load_config
from cinn.flow_training import Progress, build_optimizer, optimisation_step
from cinn.recipe import Recipe

OVERRIDES = ["train.pretrained_conditioning=null", "train.freeze_conditioning_steps=0"]


def build(batch: int):
    recipe = load_config(Recipe, find_recipe("imagenet"), OVERRIDES)
    torch.manual_seed(0)
    model = Colorizer(recipe.model)
    model.train()
    optimizer, _ = build_optimizer(model, recipe)
    lightness = torch.rand(batch, 1, recipe.model.lightness_size, recipe.model.lightness_size) * 2 - 1
    ab = torch.randn(batch, 2, recipe.model.ab_size, recipe.model.ab_size) * 0.3

    def step() -> None:
        optimisation_step(model, model, optimizer, lightness, ab, recipe, Progress())

    return model, step


def resident(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def probe_memory(batch: int) -> None:
    """In a fresh process: MB above the model, its gradients' first allocation and Adam's state."""
    _, step = build(batch)
    step()  # Adam's state exists from here on
    baseline = resident("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident set
    step()
    step()
    print(json.dumps({"batch": batch, "step_mb": (resident("VmHWM") - baseline) / 2**20, "base_mb": baseline / 2**20}))


def memory(batch: int) -> dict:
    environment = os.environ | {"MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
    command = [sys.executable, __file__, "--probe", str(batch)]
    result = subprocess.run(command, capture_output=True, text=True, env=environment, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=4, help="batch of the timed steps (default: 4)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--per-gpu", type=int, default=12, help="batch per GPU to extrapolate to (default: 12)")
    parser.add_argument("--probe", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        return probe_memory(args.probe)
    model, step = build(args.batch)
    parameters = sum(parameter.numel() for parameter in model.parameters())
    with FlopCounterMode(display=False) as counter:
        step()
    flops_per_image = counter.get_total_flops() / args.batch
    times = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    seconds = statistics.median(times)
    print(f"parameters: {parameters:,} ({parameters * 4 / 2**20:.0f} MB fp32; weights + Adam m, v: "
          f"{3 * parameters * 4 / 2**20:.0f} MB)")  # fmt: skip
    print(f"training step FLOPs per image (joint): {flops_per_image / 1e9:.1f} GFLOP")
    rate = flops_per_image * args.batch / seconds / 1e9
    print(f"CPU ({torch.get_num_threads()} threads): {seconds:.2f} s per step of {args.batch}, "
          f"{args.batch / seconds:.2f} images/s, {rate:.1f} GFLOP/s")  # fmt: skip
    rows = [memory(batch) for batch in (1, 2, 4)]
    for row in rows:
        print(f"memory of a step at batch {row['batch']}: {row['step_mb']:.0f} MB above {row['base_mb']:.0f} MB")
    per_image = (rows[2]["step_mb"] - rows[0]["step_mb"]) / 3
    fixed = rows[0]["step_mb"] - per_image
    print(f"fit: {fixed:.0f} MB + {per_image:.0f} MB per image; batch {args.per_gpu}: "
          f"{fixed + per_image * args.per_gpu:.0f} MB above the model and Adam's state")  # fmt: skip


if __name__ == "__main__":
    main()
