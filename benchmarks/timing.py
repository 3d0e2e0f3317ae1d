"""Timing shared by the benchmarks: closures measured in interleaved rounds, medians."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(runs: dict[str, Callable[[], None]], repeats: int, warmup: int, device: torch.device):
    """Seconds per call of each closure: median over ``repeats`` rounds that call each in turn (a slow
    drift of the machine then affects all of them alike), and every round's seconds."""
    for run in runs.values():
        for _ in range(warmup):
            run()
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            synchronize(device)
            start = time.perf_counter()
            run()
            synchronize(device)
            seconds[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in seconds.items()}, seconds
