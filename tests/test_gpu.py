"""GPU readiness: the GPU benchmark says so and exits 0 where there is no CUDA device; where there is one, short
runs on device=cuda train, write checkpoints and evaluate on the CPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
no_cuda = not torch.cuda.is_available()


@pytest.mark.skipif(not no_cuda, reason="this machine has CUDA: the benchmark would measure")
def test_the_gpu_benchmark_without_cuda_says_so_and_exits_0(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_gpu.py"), "--record"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("bench_gpu: no CUDA device here") and "nothing to measure" in out.stdout


@pytest.mark.skipif(no_cuda, reason="needs a CUDA device")
@pytest.mark.parametrize("args", [
    ["algo=dqn", "env=breakout", "total_timesteps=1500", "algo.learning_starts=500", "replay.buffer_size=1500"],
    ["algo=ppo", "env=breakout", "total_timesteps=2048"],
    ["algo=ppo", "env=hopper", "total_timesteps=4096"],
])
def test_a_short_run_on_cuda_trains_and_evaluates_on_the_cpu(tmp_path, rlrun, cli, args):
    run_dir = tmp_path / "run"
    out = rlrun(*args, "device=cuda", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert list((run_dir / "checkpoints").glob("step_*.pt"))
    evaluated = cli("rlrun-eval", run_dir, "--episodes", "1", "--device", "cpu", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
