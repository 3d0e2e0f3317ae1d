"""The machine a benchmark ran on, and the Markdown tables of benchmarks/README.md."""

from __future__ import annotations

import datetime
import os
import platform
from importlib import metadata
from pathlib import Path

import torch

START, END = "<!-- results:start -->", "<!-- results:end -->"
NO_GPU = "not measured (no GPU in this session)"


def machine(device: torch.device) -> dict:
    """CPU model, cores, threads, library versions and (on CUDA) the GPU."""
    cpu = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        lines = cpuinfo.read_text().splitlines()
        names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
        cpu = names[0] if names else cpu
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "freia": installed_version("FrEIA"),
        "python": platform.python_version(),
        "device": str(device),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "load_average_at_start": os.getloadavg()[0],  # 1-minute average: includes the minute before
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def installed_version(distribution: str) -> str | None:
    """The installed version of ``distribution``, None where it is not installed."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def number(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def flow_table(cpu: dict, cuda: dict | None) -> list[str]:
    """One row per (measure, case): CPU ours / FrEIA / ratio, then the same on CUDA if measured."""
    head = "| Measure | Shape | Unit | CPU ours | CPU FrEIA | CPU ours/FrEIA |"
    rule = "|---|---|---|---:|---:|---:|"
    if cuda is None:
        head, rule = head + f" CUDA: {NO_GPU} |", rule + "---|"
    else:
        head, rule = head + " CUDA ours | CUDA FrEIA | CUDA ours/FrEIA |", rule + "---:|---:|---:|"
    cuda_rows = {(row["measure"], row["case"]): row for row in (cuda or {}).get("flow", [])}
    lines = [head, rule]
    for row in cpu["flow"]:
        cells = [row["measure"], row["case"], row["unit"], number(row["ours"]), number(row["freia"])]
        cells.append(f"**{row['ratio']:.2f}**")
        other = cuda_rows.get((row["measure"], row["case"]))
        if cuda is None:
            cells.append("–")
        elif other:
            cells += [number(other["ours"]), number(other["freia"]), f"**{other['ratio']:.2f}**"]
        else:
            cells += ["–"] * 3
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def end_to_end_table(cpu: dict, cuda: dict | None) -> list[str]:
    cuda_rows = {row["measure"]: row for row in (cuda or {}).get("end_to_end", [])}
    cuda_head = "CUDA" if cuda else f"CUDA: {NO_GPU}"
    lines = [f"| Program | Unit | CPU | {cuda_head} | Notes |", "|---|---|---:|---:|---|"]
    for row in cpu.get("end_to_end", []):
        other = cuda_rows.get(row["measure"])
        gpu = number(other["value"]) if other else "–"
        lines.append(f"| {row['measure']} | {row['unit']} | {number(row['value'])} | {gpu} | {row['note']} |")
    return lines


def machine_line(results: dict, label: str) -> str:
    m = results["machine"]
    gpu = f", {m['gpu']}" if "gpu" in m else ""
    return (
        f"- {label}: {m['cpu']}, {m['cores']} cores ({m['torch_threads']} torch threads){gpu}; torch {m['torch']}, "
        f"FrEIA {m['freia']}, Python {m['python']}; {m['date']}; `{results['command']}`"
    )


def markdown(cpu: dict, cuda: dict | None = None) -> str:
    """The results section of benchmarks/README.md."""
    lines = ["Measured on:", "", machine_line(cpu, "CPU")]
    lines.append(machine_line(cuda, "CUDA") if cuda else f"- CUDA: {NO_GPU}")
    lines += ["", "Flows (ours/FrEIA: > 1 is better for images/s and samples/s, < 1 for MB):", ""]
    lines += flow_table(cpu, cuda)
    if cpu.get("end_to_end"):
        lines += ["", "The project's programs:", ""] + end_to_end_table(cpu, cuda)
    return "\n".join(lines)


def update_readme(path: Path, text: str) -> None:
    """Replaces what lies between the results markers of ``path`` with ``text``."""
    readme = path.read_text(encoding="utf-8")
    if START not in readme or END not in readme:
        raise ValueError(f"{path} has no '{START}' ... '{END}' section to fill")
    head, rest = readme.split(START, 1)
    tail = rest.split(END, 1)[1]
    path.write_text(f"{head}{START}\n{text}\n{END}{tail}", encoding="utf-8")
