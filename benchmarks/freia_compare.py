"""Our ConditionalGlow against the same cINN built from FrEIA 0.2; and the project's programs, timed.

One run measures ours and FrEIA's interleaved (ours, FrEIA, ours, FrEIA, ...), several repeats, and
reports medians and the ratio ours / FrEIA:

- flow training step (forward, MAP loss, backward, Adam step) in images/s at the default recipe's
  shape and at the paper's (ab 64x64, 4+6+6+6 couplings, the 'vgg' net's condition channels), with
  the condition features fixed (random tensors, as from a frozen conditioning net) and trained
  (gradients flow into them, as in joint fine-tuning);
- sampling: the inverse pass of 8 samples for one condition, in samples/s;
- peak memory of a training step, each in a fresh subprocess (CPU: resident-set high-water mark,
  VmHWM; CUDA: max_memory_allocated);
- scaling of the training step's time and memory with the ab resolution and the batch size;
- end to end: Colorizer.colorize of a 512x512 photo (8 samples), training images/s of the default
  recipe (pipelines/train.py's optimisation step), data loading photos/s.

Both flows get the same condition tensors and, after ``freia_glow.copy_weights``, compute the same
function; the run checks it (``equivalence`` in the results).

Examples:
    python benchmarks/freia_compare.py --out benchmarks/results/cpu.json --readme benchmarks/README.md
    python benchmarks/freia_compare.py --quick
    python benchmarks/freia_compare.py --device cuda --out benchmarks/results/cuda.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from end_to_end import end_to_end_rows
from freia_glow import build_freia_glow, copy_weights, freia_conditions, max_difference, trainable_parameters
from report import machine, markdown, update_readme
from timing import interleaved, synchronize

from cinn.glow import ConditionalGlow, GlowConfig
from cinn.loss import map_loss, sample_latents

if TYPE_CHECKING:
    from cinn.conditioning_nets import ConditioningNet

ROOT = Path(__file__).resolve().parent.parent
LEARNING_RATE, L2_WEIGHT = 1e-5, 1e-5  # small: the weights must stay sane over the timed steps


@dataclass(frozen=True)
class FlowCase:
    """One flow shape and batch, with condition tensors of the shapes a conditioning net declares."""

    label: str
    ab_size: int
    batch: int
    steps_per_level: tuple[int, ...]
    hidden_channels: tuple[int, ...]
    condition_channels: tuple[int, ...]
    global_channels: int
    clamp: float = 1.5
    trained_conditions: bool = False

    def but(self, **changes) -> FlowCase:
        return dataclasses.replace(self, **changes)


def recipe_case(config: Path, batch: int) -> FlowCase:
    """The flow of a recipe, with its conditioning net's declared channels."""
    from cinn.colorizer import conditioning_net_for
    from cinn.config import load_config
    from cinn.recipe import Recipe

    model = load_config(Recipe, config).model
    with torch.device("meta"):  # only its declared shapes are needed
        net = conditioning_net_for(model)
    return flow_case(config.stem, model.ab_size, batch, model.flow, net)


def paper_case(batch: int) -> FlowCase:
    """Ardizzone et al. 2019: ab 64x64, GlowConfig's defaults (4+6+6+6), the 'vgg' net's channels."""
    from cinn.conditioning_nets import VggConditioningNet

    with torch.device("meta"):  # only its declared shapes are needed
        net = VggConditioningNet()
    return flow_case("paper", 64, batch, GlowConfig(), net)


def flow_case(label: str, ab_size: int, batch: int, flow: GlowConfig, net: ConditioningNet) -> FlowCase:
    """A flow's shape with the condition channels a conditioning net declares."""
    return FlowCase(
        label,
        ab_size,
        batch,
        flow.steps_per_level,
        flow.hidden_channels,
        net.out_channels,
        net.global_channels,
        flow.coupling_config.clamp,
    )


class Pair:
    """Our flow and FrEIA's for one case, with the same weights and the same inputs."""

    def __init__(self, case: FlowCase, device: torch.device, build_freia: bool = True, build_ours: bool = True):
        torch.manual_seed(0)
        self.case, self.device = case, device
        config = GlowConfig(case.steps_per_level, case.hidden_channels, coupling_settings={"clamp": case.clamp})
        ours = ConditionalGlow(config, case.condition_channels, case.global_channels)
        with torch.no_grad():  # away from the identity that a fresh coupling starts as
            for parameter in ours.parameters():
                parameter.add_(3e-3 * torch.randn_like(parameter))
        self.freia = None
        if build_freia:
            self.freia = build_freia_glow(ours, case.ab_size, case.ab_size).to(device)
            copy_weights(ours, self.freia)
        self.ours = ours.to(device) if build_ours else None
        self.ab = 0.3 * torch.randn(case.batch, 2, case.ab_size, case.ab_size, device=device)
        self.conditions = random_conditions(case, case.batch, device)
        self.shapes = ours.latent_shapes(case.ab_size, case.ab_size)

    def forward(self, which: str):
        """A closure running one flow's forward pass on the pair's inputs -> (zs, logdet)."""
        if which == "ours":
            return lambda: self.ours(self.ab, self.conditions)

        def freia_forward():
            c = freia_conditions(self.conditions, self.case.global_channels, self.case.batch)
            zs, logdet = self.freia(self.ab, c=c)
            return list(zs), logdet

        return freia_forward

    def training_step(self, which: str) -> Callable[[], None]:
        """A closure running one training step: forward, MAP loss, backward, Adam step."""
        module = self.ours if which == "ours" else self.freia
        parameters = [p for p in module.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(parameters, lr=LEARNING_RATE)
        forward = self.forward(which)

        def step():
            for condition in self.conditions:
                condition.grad = None
            zs, logdet = forward()
            loss = map_loss(zs, logdet, parameters, L2_WEIGHT)
            optimizer.zero_grad(set_to_none=True)
            loss.total.backward()
            optimizer.step()

        return step

    def sampling(self, which: str, num_samples: int) -> Callable[[], None]:
        """A closure drawing ``num_samples`` samples for the pair's first condition (inverse pass)."""
        one = [c[:1].detach() for c in self.conditions]
        generator = torch.Generator(self.device).manual_seed(0)

        @torch.no_grad()
        def sample():
            zs = sample_latents(self.shapes, num_samples, 1.0, generator, self.device)
            if which == "ours":  # computed once, shared by the samples
                self.ours.inverse(zs, one)
            elif which == "ours, condition repeated":
                self.ours.inverse(zs, [c.repeat_interleave(num_samples, 0) for c in one])
            else:
                self.freia(zs, c=freia_conditions(one, self.case.global_channels, num_samples), rev=True)

        return sample


def random_conditions(case: FlowCase, batch: int, device: torch.device) -> list[torch.Tensor]:
    """Per-level maps (B, C_k, H / 2**k, W / 2**k), then the (B, G) global vector if there is one."""
    size = case.ab_size
    tensors = [
        torch.randn(batch, channels, size >> level, size >> level, device=device)
        for level, channels in enumerate(case.condition_channels)
    ]
    if case.global_channels:
        tensors.append(torch.randn(batch, case.global_channels, device=device))
    return [t.requires_grad_(case.trained_conditions) for t in tensors]


def throughput_row(measure: str, case: FlowCase, items: int, unit: str, medians, seconds) -> dict:
    rates = {name: items / median for name, median in medians.items()}
    row = {"measure": measure, "case": case_text(case), "unit": unit, **rates}
    row["ratio"] = rates["ours"] / rates["freia"]
    row["seconds"] = seconds
    return row


def case_text(case: FlowCase) -> str:
    return f"{case.label}, ab {case.ab_size}, batch {case.batch}"


def compare_flows(case: FlowCase, args: argparse.Namespace, device: torch.device) -> list[dict]:
    """Training step (fixed and trained conditions) and sampling of one case, interleaved."""
    rows = []
    for trained in (False, True):
        pair = Pair(case.but(trained_conditions=trained), device)
        runs = {name: pair.training_step(name) for name in ("ours", "freia")}
        medians, seconds = interleaved(runs, args.repeats, args.warmup, device)
        measure = "training step, conditions " + ("trained" if trained else "fixed")
        rows.append(throughput_row(measure, case, case.batch, "images/s", medians, seconds))
        print_row(rows[-1])
    runs = {name: pair.sampling(name, args.samples) for name in ("ours", "freia", "ours, condition repeated")}
    medians, seconds = interleaved(runs, args.repeats, args.warmup, device)
    rows.append(
        throughput_row(f"sampling {args.samples} for one condition", case, args.samples, "samples/s", medians, seconds)
    )
    print_row(rows[-1])
    return rows


def peak_memory(case: FlowCase, which: str, device: torch.device, steps: int = 3) -> dict:
    """Peak memory of training steps of one flow, measured in a fresh Python process."""
    probe = {"case": dataclasses.asdict(case), "which": which, "device": str(device), "steps": steps}
    command = [sys.executable, str(Path(__file__).resolve()), "--probe", json.dumps(probe)]
    # A fixed mmap threshold makes glibc return every large freed block to the system at once, so
    # that the resident set follows the live tensors instead of the allocator's caching.
    environment = os.environ | {"MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=environment)
    if result.returncode:
        raise RuntimeError(f"the memory probe of {which} on {case_text(case)} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_probe(text: str) -> None:
    """In the subprocess: build one flow, then report the memory of its training steps as JSON."""
    probe = json.loads(text)
    values = probe["case"]
    for key in ("steps_per_level", "hidden_channels", "condition_channels"):
        values[key] = tuple(values[key])
    case, device, which = FlowCase(**values), torch.device(probe["device"]), probe["which"]
    pair = Pair(case, device, build_freia=which == "freia", build_ours=which == "ours")
    step = pair.training_step(which)
    synchronize(device)
    if device.type == "cuda":
        baseline = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        baseline = resident_set("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident set
    for _ in range(probe["steps"]):
        step()
    synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else resident_set("VmHWM")
    print(json.dumps({"peak_mb": peak / 2**20, "baseline_mb": baseline / 2**20}))


def resident_set(field: str) -> int:
    """A memory field of /proc/self/status (VmRSS, VmHWM) in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def memory_row(case: FlowCase, device: torch.device) -> dict:
    """Memory that training steps (conditions fixed) add to the built flow, both flows; ratio ours / FrEIA.

    The peak resident set (or CUDA allocation) during three steps minus the one before them: the
    activations kept for the backward pass, gradients, Adam's state and temporaries.
    """
    results = {name: peak_memory(case, name, device) for name in ("ours", "freia")}
    row = {"measure": "peak memory of training steps", "case": case_text(case), "unit": "MB"}
    row.update({name: result["peak_mb"] - result["baseline_mb"] for name, result in results.items()})
    row["ratio"] = row["ours"] / row["freia"]
    row["peak_mb"] = {name: result["peak_mb"] for name, result in results.items()}
    row["baseline_mb"] = {name: result["baseline_mb"] for name, result in results.items()}
    print_row(row)
    return row


def scaling_rows(case: FlowCase, sizes, batches, args, device) -> list[dict]:
    """Training-step throughput and peak memory of both flows over ab sizes, then batch sizes."""
    rows = []
    variants = [case.but(ab_size=size) for size in sizes]
    variants += [case.but(batch=batch) for batch in batches if case.but(batch=batch) not in variants]
    for variant in variants:
        pair = Pair(variant, device)
        runs = {name: pair.training_step(name) for name in ("ours", "freia")}
        medians, seconds = interleaved(runs, args.repeats, args.warmup, device)
        rows.append(throughput_row("scaling: training step", variant, variant.batch, "images/s", medians, seconds))
        print_row(rows[-1])
        rows.append(memory_row(variant, device) | {"measure": "scaling: peak memory of training steps"})
    return rows


def print_row(row: dict) -> None:
    better = "lower is better" if row["unit"] == "MB" else "higher is better"
    print(
        f"{row['measure']:<36} {row['case']:<32} ours {row['ours']:>9.2f}  FrEIA {row['freia']:>9.2f} "
        f"{row['unit']:<9}  ours/FrEIA {row['ratio']:5.2f} ({better})"
        + "".join(f"  {name} {row[name]:.2f}" for name in row if name.startswith("ours, ")),
        flush=True,
    )


def settings(args: argparse.Namespace) -> dict:
    """Shapes and sizes of a full run (about 6 minutes on 2 idle CPU cores) or a --quick one."""
    config = ROOT / "configs" / "default.yaml"
    if args.quick:
        cases = {"default": recipe_case(config, 2), "paper": paper_case(1).but(ab_size=16)}
        return cases | {"scaling_sizes": (16, 32), "scaling_batches": (1, 4), "samples": 8, "repeats": 2, "warmup": 1}
    cases = {"default": recipe_case(config, 32), "paper": paper_case(8)}
    return cases | {
        "scaling_sizes": (32, 64, 128),
        "scaling_batches": (1, 8, 32),
        "samples": 8,
        "repeats": 7,
        "warmup": 1,
    }


def equivalence(case: FlowCase, device: torch.device) -> dict:
    """Parameter counts and the largest differences between the two flows on the same inputs."""
    pair = Pair(case.but(batch=2), device)
    counts = {"ours": trainable_parameters(pair.ours), "freia": trainable_parameters(pair.freia)}
    if counts["ours"] != counts["freia"]:
        raise AssertionError(f"the flows differ in size: {counts}")
    differences = max_difference(pair.ours, pair.freia, pair.ab, pair.conditions)
    print(f"{case.label}: {counts['ours']:,} parameters in both; max |ours - FrEIA|: {differences}", flush=True)
    return {"parameters": counts, "max_abs_difference": differences}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n")[-1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="tiny shapes and one or two repeats, to check the script")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--out", type=Path, help="write the results here as JSON (e.g. benchmarks/results/cpu.json)")
    parser.add_argument("--readme", type=Path, help="fill the results section of this Markdown file")
    parser.add_argument("--cuda-results", type=Path, help="CUDA results JSON for the README's CUDA columns")
    parser.add_argument("--repeats", type=int, help="interleaved rounds per measurement (default: 7; quick: 2)")
    parser.add_argument(
        "--skip",
        nargs="*",
        default=[],
        choices=("flow", "memory", "scaling", "end-to-end"),
        help="sections to leave out",
    )
    parser.add_argument("--probe", help=argparse.SUPPRESS)  # internal: one memory measurement, in a subprocess
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.probe:
        run_probe(args.probe)
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda was asked for but no CUDA GPU is available", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    setup = settings(args)
    args.repeats = args.repeats or setup["repeats"]
    args.warmup, args.samples = setup["warmup"], setup["samples"]
    start = time.perf_counter()
    command = "python benchmarks/freia_compare.py " + " ".join(sys.argv[1:] if argv is None else argv)
    results = {"machine": machine(device), "command": command.strip(), "flow": [], "end_to_end": []}
    results["settings"] = {"repeats": args.repeats, "warmup": args.warmup, "samples": args.samples}
    print(json.dumps(results["machine"]))
    cases = (setup["default"], setup["paper"])
    results["equivalence"] = {case.label: equivalence(case, device) for case in cases}
    for case in cases:
        if "flow" not in args.skip:
            results["flow"] += compare_flows(case, args, device)
        if "memory" not in args.skip:
            results["flow"].append(memory_row(case, device))
    if "scaling" not in args.skip:
        scaling = setup["default"].but(batch=8 if not args.quick else 1)
        results["flow"] += scaling_rows(scaling, setup["scaling_sizes"], setup["scaling_batches"], args, device)
    if "end-to-end" not in args.skip:
        config = ROOT / "configs" / "default.yaml"
        results["end_to_end"] = end_to_end_rows(config, args.quick, args.repeats, device)
    results["seconds"] = time.perf_counter() - start
    results["machine"]["load_average_at_end"] = os.getloadavg()[0]
    print(f"total {results['seconds']:.0f} s")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    if args.readme:
        cuda = json.loads(args.cuda_results.read_text()) if args.cuda_results else None
        update_readme(args.readme, markdown(results, cuda))
    return 0


if __name__ == "__main__":
    sys.exit(main())
