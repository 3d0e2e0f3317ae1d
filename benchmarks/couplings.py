"""Every coupling type of ``cinn.glow.COUPLINGS`` in the same flow: training step and sampling, interleaved.

The flow is the default recipe's (steps, widths, mixing), with the condition channels its conditioning
net declares and random condition tensors (fixed, as from a frozen conditioning net); only the coupling
type changes, each with its default settings unless the recipe sets the ones of its own type. Reports
images/s of a training step (forward, MAP loss, backward, Adam step), samples/s of the inverse pass
(8 samples for one condition) and parameters, with each type's ratio to the affine coupling's.

Examples:
    python benchmarks/couplings.py --out benchmarks/results/couplings_cpu.json
    python benchmarks/couplings.py --quick
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch
from report import machine
from timing import interleaved

from cinn.colorizer import conditioning_net_for
from cinn.config import find_recipe, load_config
from cinn.glow import COUPLINGS, ConditionalGlow
from cinn.loss import map_loss, sample_latents
from cinn.recipe import Recipe

LEARNING_RATE, L2_WEIGHT = 1e-5, 1e-5  # small: the weights must stay sane over the timed steps


def flow_for(recipe: Recipe, coupling: str) -> tuple[ConditionalGlow, tuple[int, ...], int]:
    """The recipe's flow with ``coupling``; its condition channels per level and global channels."""
    model = recipe.model
    settings = model.flow.coupling_settings if coupling == model.flow.coupling else {}
    config = dataclasses.replace(model.flow, coupling=coupling, coupling_settings=settings)
    with torch.device("meta"):  # only the declared shapes are needed
        net = conditioning_net_for(model)
    torch.manual_seed(0)
    flow = ConditionalGlow(config, net.out_channels, net.global_channels)
    with torch.no_grad():  # away from the identity a fresh coupling starts as
        for parameter in flow.parameters():
            parameter.add_(3e-3 * torch.randn_like(parameter))
    return flow, tuple(net.out_channels), net.global_channels


def closures(recipe: Recipe, coupling: str, batch: int, samples: int):
    """(training step, sampling) closures of one coupling type, its flow's parameter count and settings."""
    flow, channels, global_channels = flow_for(recipe, coupling)
    size = recipe.model.ab_size
    generator = torch.Generator().manual_seed(1)
    conditions = [torch.randn(batch, c, size >> k, size >> k, generator=generator) for k, c in enumerate(channels)]
    if global_channels:
        conditions.append(torch.randn(batch, global_channels, generator=generator))
    ab = 0.3 * torch.randn(batch, 2, size, size, generator=generator)
    parameters = list(flow.parameters())
    optimizer = torch.optim.Adam(parameters, lr=LEARNING_RATE)
    one = [condition[:1] for condition in conditions]
    shapes = flow.latent_shapes(size, size)

    def training_step() -> None:
        zs, logdet = flow(ab, conditions)
        loss = map_loss(zs, logdet, parameters, L2_WEIGHT)
        optimizer.zero_grad(set_to_none=True)
        loss.total.backward()
        optimizer.step()

    @torch.no_grad()
    def sampling() -> None:
        flow.inverse(sample_latents(shapes, samples, 1.0, generator), one)

    return training_step, sampling, sum(parameter.numel() for parameter in parameters), flow.config.coupling_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="default", help="recipe whose flow is timed (default: default)")
    parser.add_argument("--batch", type=int, default=32, help="training batch (default: 32)")
    parser.add_argument("--samples", type=int, default=8, help="samples per sampling call (default: 8)")
    parser.add_argument("--repeats", type=int, default=9, help="interleaved rounds (default: 9; quick: 2)")
    parser.add_argument("--quick", action="store_true", help="two rounds at batch 4: checks the script only")
    parser.add_argument("--out", type=Path, help="JSON file for the results")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.batch = 2, 4
    recipe = load_config(Recipe, find_recipe(args.config))
    start = time.perf_counter()
    runs = {name: closures(recipe, name, args.batch, args.samples) for name in sorted(COUPLINGS)}
    device = torch.device("cpu")
    command = "python benchmarks/couplings.py " + " ".join(sys.argv[1:] if argv is None else argv)
    results = {"machine": machine(device), "command": command.strip()}
    results["settings"] = {"config": args.config, "batch": args.batch, "samples": args.samples, "repeats": args.repeats}
    results["settings"]["coupling_settings"] = {name: run[3] for name, run in runs.items()}
    training, _ = interleaved({name: run[0] for name, run in runs.items()}, args.repeats, 1, device)
    sampling, _ = interleaved({name: run[1] for name, run in runs.items()}, args.repeats, 1, device)
    rows = {}
    for name, (_, _, parameter_count, _) in runs.items():
        rows[name] = {
            "training images/s": args.batch / training[name],
            "sampling samples/s": args.samples / sampling[name],
            "flow parameters": parameter_count,
        }
        rows[name]["training ratio to affine"] = training["affine"] / training[name]
        rows[name]["sampling ratio to affine"] = sampling["affine"] / sampling[name]
        print(name, json.dumps({key: round(value, 3) for key, value in rows[name].items()}))
    results["couplings"], results["seconds"] = rows, time.perf_counter() - start
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
