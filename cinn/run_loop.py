"""The loop skeleton both training programs share: steps until done or stopped, what a run records
(progress bar, TensorBoard, ``log.jsonl``) and checkpoints that resume exactly.

A program supplies its own step and its own checkpoint contents; this module owns the rules they
share: a stop signal is honoured between two steps (so a checkpoint's weights and step counter always
agree), a second one interrupts at once without saving, and every run writes the same records.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from cinn.training import ProcessGroup, atomic_save, rng_state, stop_signals

STOPPED = 130  # the exit status of a run stopped by a signal (128 + SIGINT), saved or not


class Counted(Protocol):
    step: int


class RunLog:
    """Rank 0's record of a run: a progress bar, TensorBoard scalars and ``log.jsonl`` (one JSON object
    per line, appended across resumes), and the images per second since the last report."""

    def __init__(self, out: Path, total_steps: int, initial_step: int):
        self.writer = SummaryWriter(out / "tensorboard")
        self.file = open(out / "log.jsonl", "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        self.bar = tqdm(total=total_steps, initial=initial_step, dynamic_ncols=True)
        self.images, self.clock = 0, time.perf_counter()

    def stepped(self, images: int) -> None:
        self.bar.update(1)
        self.images += images

    def images_per_second(self) -> float:
        """Since the previous call (or the start)."""
        rate = self.images / max(time.perf_counter() - self.clock, 1e-9)
        self.images, self.clock = 0, time.perf_counter()
        return rate

    def log(self, step: int, scalars: dict[str, float]) -> None:
        for name, value in scalars.items():
            self.writer.add_scalar(name, value, step)
        self.file.write(json.dumps({"step": step, **scalars}) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.bar.close()
        self.writer.close()
        self.file.close()


def save_checkpoint(path: Path, progress: Any, recipe: dict, **state: torch.nn.Module | Any) -> None:
    """One checkpoint format for every program: each ``state`` object's ``state_dict()`` under its name,
    the loop's ``progress`` (a dataclass), the random generators and the recipe (a plain dict)."""
    payload = {name: value.state_dict() for name, value in state.items()}
    payload.update(progress=dict(progress.__dict__), rng=rng_state(), recipe=recipe)
    atomic_save(payload, path)


def run_steps(
    steps: int,
    progress: Counted,
    take_step: Callable[[], None],
    save: Callable[[], None],
    checkpoint: Path,
    resume_hint: str,
    group: ProcessGroup | None = None,
    device: torch.device | None = None,
) -> int | None:
    """Calls ``take_step`` (which advances ``progress.step``) until ``progress.step == steps``.

    Returns None when done, or ``STOPPED`` when SIGINT or SIGTERM came first: the first signal is
    honoured between two steps (rank 0 calls ``save``, which writes ``checkpoint``; every rank stops at
    the same step), a second one interrupts the step it lands in and nothing is saved.
    """
    group = group or ProcessGroup()
    with stop_signals() as stop:
        try:
            while progress.step < steps:
                if stop.agreed(group, device or torch.device("cpu")):
                    if group.is_main:
                        save()
                        print(f"\nstopped at step {progress.step}; saved. Continue with: {resume_hint}",
                              file=sys.stderr)  # fmt: skip
                    return STOPPED
                take_step()
        except KeyboardInterrupt:
            print(f"\ninterrupted twice: stopped without saving; {checkpoint} is the last good checkpoint",
                  file=sys.stderr)  # fmt: skip
            return STOPPED
    return None
