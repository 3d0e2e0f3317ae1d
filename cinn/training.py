"""What the training pipelines share: devices, processes, resumable data order, checkpoints."""

from __future__ import annotations

import contextlib
import math
import os
import pickle
import random
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler

from cinn.data import collate_skipping
from cinn.devices import resolve_device
from cinn.errors import UserError
from cinn.shards import ShardedPhotos


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place in a ``torchrun`` job (rank 0 of 1 when run directly)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str) -> tuple[ProcessGroup, torch.device]:
    """Joins the ``torchrun`` process group (gloo on CPU, nccl on CUDA) if launched by torchrun."""
    if "RANK" not in os.environ:
        return ProcessGroup(), resolve_device(device_name)
    group = ProcessGroup(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]))
    device = resolve_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", group.local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    store = launch_store(group.world_size)
    if store is None:
        dist.init_process_group(backend)
    else:
        dist.init_process_group(backend, store=store, rank=group.rank, world_size=group.world_size)
    return group, device


def launch_store(world_size: int) -> dist.Store | None:
    """The rendezvous store of this launch of the workers, when torchrun's agent hosts one for all launches.

    Under ``torchrun`` the agent serves the workers' store (``TORCHELASTIC_USE_AGENT_STORE``) and keeps
    it across ``--max-restarts`` restarts, without clearing it: the restarted workers found the
    addresses the killed ones had published there and failed to connect to them ("Gloo connectFullMesh
    failed ... Connection refused"), in about one run in six of ``tests/test_restarts.py``. Each launch
    therefore gets its own key space: every worker counts itself in once, and the workers of a launch
    all get the same count divided by the world size (only one launch's workers are alive at a time:
    the agents stop all of them before the next rendezvous; one count per world size, as an elastic
    job's may change between launches). None when torchrun's agent does not serve the store
    (``init_process_group``'s env:// rendezvous then starts a fresh store on rank 0 each launch).
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != str(True):
        return None
    shared = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size, is_master=False)
    launch = (shared.add(f"cinn/workers_started/{world_size}", 1) - 1) // world_size
    return dist.PrefixStore(f"cinn/launch/{world_size}/{launch}/", shared)


class ResumableSampler(Sampler):
    """An endless, resumable stream of ``(index, item_seed)`` for one rank.

    Each epoch is a permutation seeded by ``(seed, epoch)``, dealt round-robin to the ranks. The
    stream starts at ``start`` items into this rank's share, so a resumed run continues with
    exactly the photos (and, through ``item_seed``, exactly the crops and noise) it would have seen.
    """

    def __init__(self, length: int, seed: int, start: int = 0, rank: int = 0, world_size: int = 1):
        self.length, self.seed, self.start = length, seed, start
        self.rank, self.world_size = rank, world_size
        self.per_rank = math.ceil(length / world_size)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, offset = divmod(self.start, self.per_rank)
        while True:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            order = torch.randperm(self.length, generator=generator)
            order = order.repeat(math.ceil(self.per_rank * self.world_size / self.length))
            share = order[self.rank :: self.world_size][: self.per_rank].tolist()
            for position in range(offset, self.per_rank):
                yield share[position], (self.seed * 100_003 + epoch) * 1_000_003 + position
            epoch, offset = epoch + 1, 0

    def __len__(self) -> int:  # endless; DataLoader only asks for it in messages
        return 2**62


class SeededItems(Dataset):
    """Wraps a dataset so that item ``(index, seed)`` is drawn with torch's RNG seeded by ``seed``."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        torch.manual_seed(seed)
        return self.dataset[index]

    def __len__(self) -> int:
        return len(self.dataset)


def training_loader(dataset: Dataset, batch_size: int, num_workers: int, sampler: ResumableSampler) -> DataLoader:
    """An endless loader of training batches in the order ``sampler`` deals."""
    return DataLoader(
        SeededItems(dataset),
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_skipping,
        persistent_workers=num_workers > 0,
        prefetch_factor=4 if num_workers > 0 else None,
    )


def training_batches(
    dataset: Dataset,
    batch_size: int,
    num_workers: int,
    seed: int,
    start_batch: int = 0,
    group: ProcessGroup | None = None,
) -> Iterator[dict]:
    """Endless training batches of this rank, resumable: ``start_batch`` batches in, the stream continues
    with exactly the photos, crops and noise an uninterrupted run would have drawn. A photo folder is
    read in a ``ResumableSampler``'s order; tar shards (``ShardedPhotos``) are streamed."""
    group = group if group is not None else ProcessGroup()
    if not isinstance(dataset, ShardedPhotos):
        sampler = ResumableSampler(len(dataset), seed, start_batch * batch_size, group.rank, group.world_size)
        return iter(training_loader(dataset, batch_size, num_workers, sampler))
    stream = dataset.ordered(seed, start_batch, batch_size, group.rank, group.world_size)
    stream.check_readers(num_workers)
    loader = DataLoader(
        stream,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate_skipping,
        persistent_workers=num_workers > 0,
        prefetch_factor=4 if num_workers > 0 else None,
    )
    return iter(loader)


def validation_loader(dataset: Dataset, batch_size: int, num_workers: int) -> DataLoader:
    """Validation batches in a fixed order."""
    return DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_skipping)


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_save(payload: Any, path: Path) -> None:
    """``torch.save`` to a temporary file, then rename: a crash never leaves a torn checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(payload, temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be read: damaged, or holding more than tensors and plain values."""


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A training checkpoint, read with ``weights_only=True``: tensors, numbers, strings and containers
    only, so a planted object in a downloaded or tampered checkpoint can never run code on resume."""
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint to resume from at '{path}'")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"'{path}' is not a readable checkpoint ({reason})") from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"'{path}' is not a training checkpoint (it holds a {type(checkpoint).__name__})")
    return checkpoint


def warmup_cosine(warmup_steps: int, total_steps: int, min_ratio: float, cosine: bool = True):
    """Learning-rate multiplier: linear warmup, then cosine decay to ``min_ratio`` (or constant)."""

    def multiplier(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if not cosine:
            return 1.0
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return multiplier


class StopRequest:
    """Whether SIGINT (Ctrl-C) or SIGTERM (``kill``, a cluster's pre-emption) asked the loop to stop.

    The first signal only sets ``requested``; the loop checks it between steps, so a checkpoint is
    always saved with weights and step counter of the same step (exact resume). A second signal
    interrupts at once (``KeyboardInterrupt``), for a loop that does not come back.
    """

    def __init__(self) -> None:
        self.requested = False

    def handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def agreed(self, group: ProcessGroup, device: torch.device) -> bool:
        """``requested`` on any rank: all ranks stop at the same step (a signal may reach only one)."""
        if group.world_size == 1:
            return self.requested
        flag = torch.tensor([float(self.requested)], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())


@contextlib.contextmanager
def stop_signals() -> Iterator[StopRequest]:
    """Routes SIGINT and SIGTERM to a ``StopRequest`` while the block runs (main thread only); a shell
    starts background jobs with SIGINT ignored, which this undoes."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {sig: signal.signal(sig, request.handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield request
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
