"""Several machines and restarts: a real two-node torchrun launch on 127.0.0.1 (gloo), a worker killed
with SIGKILL under --max-restarts 1, and a checkpoint write killed halfway."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

from cinn.training import launch_store, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
DEBUG = str(ROOT / "configs" / "debug.yaml")
STEPS = 30


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch_two_nodes(out: Path, data: Path) -> list[subprocess.Popen]:
    """Two torchrun agents, one process each, meeting at a c10d rendezvous on 127.0.0.1 as two machines would."""
    port, agents = free_port(), []
    for node_rank in (0, 1):
        command = [
            sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
            "--node_rank", str(node_rank), "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
            "--rdzv-id", out.name, "--max-restarts", "1", "--monitor-interval", "0.2",
            str(ROOT / "pipelines" / "train.py"), "--config", DEBUG, "--data", str(data), "--out", str(out),
            "--set", f"train.steps={STEPS}", "--set", "train.val_every=100", "--set", "train.image_every=100",
        ]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        # Files, not pipes: an agent whose pipe nobody drains would block on a full buffer.
        logs = [open(out.parent / f"{out.name}.node{node_rank}.{name}", "w") for name in ("out", "err")]  # noqa: SIM115
        agents.append(subprocess.Popen(command, stdout=logs[0], stderr=logs[1], text=True, env=env))
        for log in logs:
            log.close()
    return agents


def finish(agents: list[subprocess.Popen], out: Path, timeout: float = 300) -> list[tuple[int, str, str]]:
    """Each agent's (exit code, stdout, stderr); every agent must exit by itself within ``timeout``."""
    deadline = time.monotonic() + timeout
    try:
        for agent in agents:
            agent.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for agent in agents:
            if agent.poll() is None:
                agent.kill()
                agent.wait()
    read = lambda node, name: (out.parent / f"{out.name}.node{node}.{name}").read_text()  # noqa: E731
    return [(agent.returncode, read(node, "out"), read(node, "err")) for node, agent in enumerate(agents)]


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()] if path.exists() else []


def logged_step(out: Path) -> int:
    log = out / "log.jsonl"
    lines = log.read_text().splitlines() if log.exists() else []
    return max((int(line.split('"step": ')[1].split(",")[0]) for line in lines if line.endswith("}")), default=0)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, photo_folder) -> Path:
    out = tmp_path_factory.mktemp("two_nodes") / "straight"
    results = finish(launch_two_nodes(out, photo_folder), out)
    assert [code for code, _, _ in results] == [0, 0], [stderr[-3000:] for _, _, stderr in results]
    assert "weights identical on all 2 ranks" in "".join(stdout for _, stdout, _ in results)
    return out


def test_a_two_node_launch_finishes_with_identical_weights_on_both_ranks(uninterrupted):
    assert load_checkpoint(uninterrupted / "checkpoints/last.pt")["progress"]["step"] == STEPS
    assert (uninterrupted / "release/model.safetensors").is_file()


def test_a_worker_killed_mid_run_restarts_from_the_checkpoint_and_ends_with_the_same_weights(
    tmp_path, photo_folder, uninterrupted
):
    out = tmp_path / "killed"
    agents = launch_two_nodes(out, photo_folder)
    try:
        deadline = time.monotonic() + 240
        while logged_step(out) < 8 and time.monotonic() < deadline and agents[1].poll() is None:
            time.sleep(0.02)
        workers = children(agents[1].pid)
        assert logged_step(out) < STEPS and len(workers) == 1, "the run ended before the kill"
        os.kill(workers[0], signal.SIGKILL)
    finally:
        results = finish(agents, out)
    assert [code for code, _, _ in results] == [0, 0], [stderr[-3000:] for _, _, stderr in results]
    stderr = "".join(stderr for _, _, stderr in results)
    resumed_at = int(stderr.split(f"resuming {out} at step ")[1].split()[0])
    assert 0 < resumed_at < STEPS
    assert "weights identical on all 2 ranks" in "".join(stdout for _, stdout, _ in results)
    straight = load_file(uninterrupted / "release/model.safetensors")
    restarted = load_file(out / "release/model.safetensors")
    assert straight.keys() == restarted.keys()
    for name in straight:
        assert torch.equal(straight[name], restarted[name]), name


def test_a_checkpoint_write_killed_halfway_leaves_the_last_good_one(tmp_path):
    """The process is killed (SIGKILL) when ``atomic_save`` has written half of a 64 MB checkpoint that
    would replace a good one."""
    path = tmp_path / "checkpoints" / "last.pt"
    script = textwrap.dedent(f"""
        import io, os, signal
        from pathlib import Path
        import torch
        from cinn.training import atomic_save

        HALF = 32 * 2**20
        path = Path({str(path)!r})
        atomic_save({{"step": 1, "weights": torch.ones(4)}}, path)

        class KilledHalfway(io.FileIO):
            def write(self, data):
                if self.tell() + len(data) >= HALF:
                    super().write(bytes(data)[: HALF - self.tell()])
                    os.kill(os.getpid(), signal.SIGKILL)
                return super().write(data)

        real_save = torch.save
        torch.save = lambda payload, target: real_save(payload, KilledHalfway(target, "w"))
        atomic_save({{"step": 2, "weights": torch.randn(16 * 2**20)}}, path)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == -signal.SIGKILL, result.stderr
    leftovers = list(path.parent.glob(".last.pt.*.tmp"))
    assert [file.stat().st_size for file in leftovers] == [32 * 2**20]  # the half-written checkpoint
    checkpoint = load_checkpoint(path)
    assert checkpoint["step"] == 1 and torch.equal(checkpoint["weights"], torch.ones(4))


def test_each_launch_of_the_workers_has_its_own_keys_in_the_store_torchrun_keeps(monkeypatch):
    """torchrun's agent keeps one store across restarts; restarted workers that read the killed ones'
    addresses from it failed to connect (see ``launch_store``)."""
    server = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(server.port))
    first = [launch_store(2) for _rank in range(2)]
    first[0].set("rank_0", "address of a worker that was killed")
    second = [launch_store(2) for _rank in range(2)]
    assert not second[1].check(["rank_0"])
    second[0].set("rank_0", "address of its restarted successor")
    assert second[1].get("rank_0") == b"address of its restarted successor"
    assert first[1].get("rank_0") == b"address of a worker that was killed"
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "False")  # env:// starts a fresh store each launch
    assert launch_store(2) is None
