"""The configs ship inside the wheel: an installed rlrun composes a config outside the checkout."""

from __future__ import annotations

import pytest

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

COMPOSE = """
import rlrun.configs, sys
from hydra import compose, initialize_config_module
assert "site-packages" in rlrun.configs.__file__, rlrun.configs.__file__
with initialize_config_module(version_base="1.3", config_module="rlrun.configs"):
    cfg = compose("config", overrides=["env=cartpole"])
print(cfg.algo.name, cfg.env.id, cfg.preprocessing.name, cfg.algo.batch_size)
"""


def run(*cmd: str, cwd: Path) -> str:
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{cmd}\n{out.stdout}\n{out.stderr}"
    return out.stdout


@pytest.mark.slow
def test_wheel_installed_in_a_fresh_venv_composes_configs(tmp_path):
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"),
        str(ROOT), cwd=tmp_path)
    wheel = next((tmp_path / "dist").glob("rlrun-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "rlrun/configs/config.yaml" in names and "rlrun/configs/env/breakout.yaml" in names
    assert "rlrun/configs/tuned/dqn_cartpole.yaml" in names
    run(sys.executable, "-m", "venv", str(tmp_path / "venv"), cwd=tmp_path)
    py = str(tmp_path / "venv" / "bin" / "python")
    # composing needs only Hydra; the heavy dependencies (torch, ALE) are not needed for this check
    run(py, "-m", "pip", "install", "-q", "--no-deps", str(wheel), cwd=tmp_path)
    run(py, "-m", "pip", "install", "-q", "hydra-core>=1.3,<1.4", cwd=tmp_path)
    assert run(py, "-c", COMPOSE, cwd=tmp_path).split() == ["dqn", "CartPole-v1", "none", "128"]
