"""Throughput and memory benchmark of rlrun's DQN on ALE Breakout.

Settings are CleanRL's ``dqn_atari.py`` (see ``REFERENCE``): 1 env, replay of
1,000,000 transitions, batch 32, a gradient step every 4 agent steps, Adam at
1e-4, target copy every 1,000 steps, the Nature CNN. Only ``learning_starts`` is
lowered (``--learning-starts``, default 1,000) so that a run is short. One agent
step is 4 emulator frames. Every figure is the median over ``--repeats`` runs,
and the measurements run one after the other, never two at once.

The figures:

1. Environment steps/s: rlrun's ``AtariVecEnv`` (ale_py's C++ vector env with the
   Nature preprocessing) on Breakout with uniformly random actions, 1 env and 8
   envs; agent steps per second summed over the envs.
2. One DQN update at batch 32, in ms: target-network forward, TD target
   (``rlrun.algos.dqn.td_target``), online forward, backward and Adam step on
   ``rlrun.nn.networks.NatureCNN``, as in ``rlrun.algos.dqn.train`` (replay sampling
   excluded). Three variants: eager NCHW, the network in channels_last (rlrun's
   default ``algo.channels_last=true``), and the TD loss under ``torch.compile``
   with channels_last (``algo.compile=true``), warmed up (compiled) before timing.
3. rlrun DQN agent steps/s after learning starts: a real run of
   ``rlrun.cli.run_training`` for ``learning_starts + steps`` agent steps in a fresh
   temporary run directory. The steady-state rate is read from the wall times of
   the ``losses/td_loss`` TensorBoard events (one every 100 steps once learning
   has started): (last.step - first.step) / (last.wall_time - first.wall_time),
   skipping the first ``WARMUP_POINTS`` events. With ``--compile`` also for
   ``algo.compile=true``. Epsilon reaches its final 0.01 within the first 10 % of
   the run, so the steady state is the regime of a long run: mostly greedy
   actions (one forward pass per step) plus an update every 4 steps.
4. Stable-Baselines3 DQN with the same hyperparameters on the same game
   (``BreakoutNoFrameskip-v4``, ``make_atari_env`` + ``VecFrameStack(4)``, the
   Nature CNN of ``CnnPolicy``), measured the same way from a callback clock; and
   the ratio rlrun / SB3 of the steady-state rates. SB3 keeps its own defaults
   where CleanRL differs slightly (Huber loss, gradient clipping at norm 10).
   SB3 with ``optimize_memory_usage=False`` allocates obs and next_obs arrays of
   28.2 GB each; where the machine refuses that allocation the run uses a buffer
   of ``learning_starts + steps + 1`` transitions instead (noted in the table):
   the buffer never fills during the run, so it samples exactly as a 1M buffer.
With ``--switches``: figures 2 and 3 also for each Rainbow component of ``algo=dqn`` alone
(``SWITCHES``) and for ``algo=rainbow`` (all of them, with its learning_starts and buffer set to the
runs' values; its other settings do not change the work per step), and the ratio of each to plain DQN.
5. Peak memory (peak RSS, ``VmHWM`` of the process's own address space, in GB):
   (a) a process holding rlrun's ``ReplayBuffer`` of 1,000,000 (4, 84, 84) uint8
   observations after every slot was written through ``add()`` with random
   nonzero frames, next to the computed sizes: frames stored once (7.1 GB) versus
   stacked observations (28.2 GB for obs, 56.4 GB for obs + next_obs);
   (b) the rlrun training process of figure 3, which touches only the replay
   slots of its ``learning_starts + steps`` transitions;
   (c) with ``--switches``, (a) for the prioritized buffer (frames plus the float64 sum tree).

Training runs (3, 4) and the buffer fill (5a) each run in a fresh Python process,
so that their memory figures are not mixed; runs of rlrun and SB3 alternate.
Torch uses its default threads (one per core) unless ``OMP_NUM_THREADS`` is set;
on a VM whose vCPUs do not really run in parallel the default can be 20x slower
than ``OMP_NUM_THREADS=1``. The thread count and such variables are recorded.

Usage::

    python scripts/bench_dqn.py                 # the full benchmark, about 10 minutes on 2 real cores
    python scripts/bench_dqn.py --quick         # tiny sizes, a smoke check of every figure
    python scripts/bench_dqn.py --compile --record   # also algo.compile=true; write docs/benchmarks.md
"""

from __future__ import annotations

# Only light imports at module level: the measurement processes are started with
# "spawn" and re-import this module, and the buffer-fill process (figure 5a) must
# not carry torch in its resident memory. Heavy modules are imported where used.
import argparse
import contextlib
import importlib.util
import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

# benchlib.py sits next to this script, so it is on sys.path when the script runs
from benchlib import DOCS, GB, compose_config, in_subprocess, publish, say, seconds_per_call, steady_rate

REFERENCE = {  # CleanRL dqn_atari.py settings, shared by the rlrun and SB3 runs
    "num_envs": 1,
    "buffer_size": 1_000_000,
    "batch_size": 32,
    "train_frequency": 4,
    "learning_rate": 1e-4,
    "target_network_frequency": 1000,
    "gamma": 0.99,
    "end_e": 0.01,
    "exploration_fraction": 0.1,
}
OBS_SHAPE = (4, 84, 84)     # 4 stacked 84x84 grayscale frames
N_ACTIONS = 4               # Breakout's minimal action set
SEED = 1
LOG_INTERVAL = 100          # agent steps between rlrun's td_loss events (logging.log_interval)
WARMUP_POINTS = 5           # clock points skipped at the start of a training run (500 steps)
UPDATE_WARMUP = 5           # untimed updates before timing (the first one compiles)
EPISODE_LENGTH = 1000       # the buffer fill ends an episode this often, as a game would
SECTION = "## DQN on Breakout"

SWITCHES = {  # name -> overrides of algo=dqn; "rainbow" is the preset with every switch on
    "prioritized": ["algo.prioritized=true"],
    "n_step=3": ["algo.n_step=3"],
    "dueling": ["algo.dueling=true"],
    "noisy": ["algo.noisy=true"],
    "distributional (C51)": ["algo.distributional=true"],
    "rainbow": ["algo=rainbow"],
}

FULL = {"repeats": 3, "steps": 4000, "learning_starts": 1000, "env_steps": 5000, "update_calls": 200,
        "fill": REFERENCE["buffer_size"]}
QUICK = {"repeats": 1, "steps": 400, "learning_starts": 200, "env_steps": 1000, "update_calls": 20,
         "fill": 20_000}


def with_algo(overrides: tuple[str, ...]) -> list[str]:
    """``overrides`` with ``algo=dqn`` in front unless they choose the algo themselves (algo=rainbow)."""
    return list(overrides) if any(o.startswith("algo=") for o in overrides) else ["algo=dqn", *overrides]


# ---- 1. environment steps ------------------------------------------------------------

def bench_env(num_envs: int, agent_steps: int, repeats: int) -> float:
    """Median agent steps/s (summed over envs) of rlrun's AtariVecEnv on Breakout with random actions."""
    from rlrun.envs.factory import make_vec_env

    envs = make_vec_env(compose_config(["env=breakout"]), num_envs)
    envs.reset(seed=SEED)
    rng = np.random.default_rng(SEED)
    n_actions = int(envs.single_action_space.n)

    def step() -> None:
        envs.step(rng.integers(0, n_actions, size=num_envs))

    calls = max(agent_steps // num_envs, 1)
    seconds = statistics.median(seconds_per_call(step, calls, warmup=10) for _ in range(repeats))
    envs.close()
    return num_envs / seconds


# ---- 2. one DQN update ---------------------------------------------------------------

UPDATE_VARIANTS = {  # name -> (channels_last, torch.compile)
    "eager NCHW": (False, False),
    "channels_last": (True, False),
    "torch.compile + channels_last": (True, True),
}


def bench_update(channels_last: bool, compile: bool, calls: int, repeats: int, overrides: tuple[str, ...] = ()
                 ) -> float:
    """Median ms of one DQN update at batch 32: rlrun.algos.dqn.make_update on the Q-network of
    ``algo=dqn`` + ``overrides`` (rlrun.algos.dqn.build_q_network) with rlrun's optimizer (make_adam),
    exactly the gradient step of rlrun.algos.dqn.train, with n-step discounts and importance weights
    when the overrides ask for them."""
    import copy
    from types import SimpleNamespace

    import torch
    from omegaconf import OmegaConf

    from rlrun.algos.dqn import build_q_network, make_update
    from rlrun.nn.optim import make_adam

    torch.manual_seed(SEED)
    cfg = compose_config([*with_algo(overrides), "env=breakout"])
    q_network = build_q_network(cfg, OBS_SHAPE, N_ACTIONS)
    if channels_last:
        q_network = q_network.to(memory_format=torch.channels_last)
    target_network = copy.deepcopy(q_network).requires_grad_(False)
    optimizer = make_adam(q_network, REFERENCE["learning_rate"], 1e-8)
    args = SimpleNamespace(**{**OmegaConf.to_container(cfg.algo, resolve=True), "compile": compile})
    update = make_update(q_network, target_network, optimizer, args)
    batch = REFERENCE["batch_size"]
    tensors = (torch.randint(0, 256, (batch, *OBS_SHAPE), dtype=torch.uint8),  # obs
               torch.randint(0, N_ACTIONS, (batch,)),                          # actions
               torch.randint(-1, 2, (batch,)).float(),                         # rewards
               torch.randint(0, 256, (batch, *OBS_SHAPE), dtype=torch.uint8),  # next_obs
               (torch.rand(batch) < 0.05).float(),                             # terminated
               torch.full((batch,), args.gamma ** args.n_step) if args.n_step > 1 else None,  # discounts
               torch.rand(batch) if args.prioritized else None)                # importance weights
    return 1000 * statistics.median(seconds_per_call(lambda: update(*tensors), calls, UPDATE_WARMUP)
                                    for _ in range(repeats))


# ---- 3. rlrun training ---------------------------------------------------------------

def train_rlrun(learning_starts: int, steps: int, compile: bool, overrides: tuple[str, ...] = ()
                ) -> list[tuple[int, float]]:
    """Train rlrun's DQN (``algo=dqn`` + ``overrides``, e.g. a Rainbow switch) on Breakout; returns
    (step, wall time) of every ``losses/td_loss`` event."""
    from rlrun.cli.train import run_training
    from rlrun.core.events import read_scalars

    r = REFERENCE
    cfg = compose_config([
        *with_algo(overrides), "env=breakout", f"seed={SEED}", f"total_timesteps={learning_starts + steps}",
        f"algo.learning_starts={learning_starts}", f"algo.compile={str(compile).lower()}",
        f"algo.num_envs={r['num_envs']}", f"replay.buffer_size={r['buffer_size']}",
        f"algo.batch_size={r['batch_size']}", f"algo.train_frequency={r['train_frequency']}",
        f"algo.learning_rate={r['learning_rate']}", f"algo.target_network_frequency={r['target_network_frequency']}",
        f"algo.gamma={r['gamma']}", f"algo.end_e={r['end_e']}", f"algo.exploration_fraction={r['exploration_fraction']}",
        f"logging.log_interval={LOG_INTERVAL}", "logging.progress=none", "checkpoint.interval=0",
    ])
    with tempfile.TemporaryDirectory(prefix="bench_dqn_") as tmp:
        run_dir = Path(tmp) / "run"
        with contextlib.redirect_stdout(io.StringIO()):  # rlrun's start and end lines
            run_training(cfg, run_dir)
        return [(step, wall_time) for step, _, wall_time in read_scalars(run_dir)["losses/td_loss"]]


# ---- 4. Stable-Baselines3 training -----------------------------------------------------

def train_sb3(learning_starts: int, steps: int) -> tuple[list[tuple[int, float]], int]:
    """Train SB3's DQN on BreakoutNoFrameskip-v4; returns (step, perf_counter) every 100 steps
    after learning starts, and the replay size used (1M unless the machine refused it)."""
    import ale_py
    import gymnasium
    from stable_baselines3 import DQN
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack

    class Clock(BaseCallback):
        """Records (num_timesteps, perf_counter) every LOG_INTERVAL steps after learning starts."""

        def __init__(self) -> None:
            super().__init__()
            self.points: list[tuple[int, float]] = []

        def _on_step(self) -> bool:
            if self.num_timesteps > learning_starts and self.num_timesteps % LOG_INTERVAL == 0:
                self.points.append((self.num_timesteps, time.perf_counter()))
            return True

    gymnasium.register_envs(ale_py)
    env = VecFrameStack(make_atari_env("BreakoutNoFrameskip-v4", n_envs=REFERENCE["num_envs"], seed=SEED), n_stack=4)
    total = learning_starts + steps
    r = REFERENCE

    def make_model(buffer_size: int) -> DQN:
        return DQN("CnnPolicy", env, buffer_size=buffer_size, learning_starts=learning_starts,
                   batch_size=r["batch_size"], train_freq=r["train_frequency"], gradient_steps=1,
                   target_update_interval=r["target_network_frequency"], learning_rate=r["learning_rate"],
                   gamma=r["gamma"], exploration_fraction=r["exploration_fraction"],
                   exploration_final_eps=r["end_e"], optimize_memory_usage=False, seed=SEED, verbose=0)

    buffer_size = r["buffer_size"]
    try:
        model = make_model(buffer_size)
    except MemoryError:  # 2 x 28.2 GB refused: a buffer that never fills samples the same
        buffer_size = total + 1
        model = make_model(buffer_size)
    clock = Clock()
    model.learn(total_timesteps=total, callback=clock)
    env.close()
    return clock.points, buffer_size


# ---- 5. replay memory ------------------------------------------------------------------

def fill_replay(capacity: int, prioritized: bool = False) -> int:
    """Write every slot of an rlrun ReplayBuffer (or PrioritizedReplayBuffer, alpha 0.5 and n = 3 as in
    Rainbow) of ``capacity`` Atari transitions; returns len(buffer)."""
    from rlrun.data.replay import PrioritizedReplayBuffer, ReplayBuffer

    if prioritized:
        rb = PrioritizedReplayBuffer(capacity, OBS_SHAPE, np.uint8, num_envs=1, frame_stack=OBS_SHAPE[0], seed=SEED,
                                     n_step=3, alpha=0.5)
    else:
        rb = ReplayBuffer(capacity, OBS_SHAPE, np.uint8, num_envs=1, frame_stack=OBS_SHAPE[0], seed=SEED)
    frames = np.random.default_rng(SEED).integers(1, 256, size=(64, 1, *OBS_SHAPE), dtype=np.uint8)
    action, reward = np.zeros(1, dtype=np.int64), np.ones(1, dtype=np.float32)
    for i in range(capacity):
        obs = frames[i % len(frames)]
        end = np.array([i % EPISODE_LENGTH == EPISODE_LENGTH - 1])
        rb.add(obs, action, reward, end, end, obs)
    return len(rb)


def stacked_bytes(capacity: int, copies: int) -> int:
    """Bytes of ``copies`` arrays of ``capacity`` stacked (4, 84, 84) uint8 observations."""
    return copies * capacity * int(np.prod(OBS_SHAPE))


# ---- main --------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags; sizes left unset take the full or ``--quick`` defaults."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, help="runs per figure, the median is reported (default 3, quick 1)")
    p.add_argument("--steps", type=int, help="agent steps timed after learning starts (default 4000, quick 400)")
    p.add_argument("--learning-starts", type=int, help="agent steps before learning (default 1000, quick 200)")
    p.add_argument("--quick", action="store_true", help="tiny sizes for a smoke check (buffer fill of 20,000)")
    p.add_argument("--skip-sb3", action="store_true", help="do not run Stable-Baselines3")
    p.add_argument("--skip-memory", action="store_true", help="do not run the replay-buffer fill (figure 5a)")
    p.add_argument("--compile", action="store_true", help="also train rlrun with algo.compile=true")
    p.add_argument("--switches", action="store_true", help="also each Rainbow switch alone and algo=rainbow")
    p.add_argument("--record", action="store_true", help=f"write the results into {DOCS.relative_to(DOCS.parents[1])}")
    args = p.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    for key in ("repeats", "steps", "learning_starts"):
        if getattr(args, key) is None:
            setattr(args, key, sizes[key])
    args.env_steps, args.update_calls, args.fill = sizes["env_steps"], sizes["update_calls"], sizes["fill"]
    return args


def main(argv: list[str] | None = None) -> None:
    """Run every figure one after the other, print the Markdown table, optionally record it."""
    args = parse_args(argv)
    repeats, ls, steps = args.repeats, args.learning_starts, args.steps
    rows: list[tuple[str, str, str]] = []

    for num_envs in (1, 8):
        rate = bench_env(num_envs, args.env_steps, repeats)
        say(f"AtariVecEnv, {num_envs} env(s): {rate:,.0f} agent steps/s")
        rows.append((f"AtariVecEnv Breakout, random actions, {num_envs} env{'s' * (num_envs > 1)}",
                     f"{rate:,.0f} steps/s", f"{args.env_steps:,} agent steps, summed over envs"))

    for name, (channels_last, compile) in UPDATE_VARIANTS.items():
        ms = bench_update(channels_last, compile, args.update_calls, repeats)
        say(f"DQN update, {name}: {ms:.2f} ms")
        rows.append((f"DQN update (batch 32), {name}", f"{ms:.2f} ms",
                     f"mean of {args.update_calls} updates" + (", after compiling" if compile else "")))

    switches = SWITCHES if args.switches else {}
    plain_ms = bench_update(True, False, args.update_calls, repeats) if switches else None
    for name, overrides in switches.items():
        ms = bench_update(True, False, args.update_calls, repeats, tuple(overrides))
        say(f"DQN update, {name}: {ms:.2f} ms")
        rows.append((f"Update (batch 32, channels_last), {name}", f"{ms:.2f} ms",
                     f"plain DQN {plain_ms:.2f} ms in the same invocation: {ms / plain_ms:.2f}x its time"))

    run_sb3 = not args.skip_sb3 and importlib.util.find_spec("stable_baselines3") is not None
    if not args.skip_sb3 and not run_sb3:
        say("stable-baselines3 is not installed: skipping SB3 (pip install stable-baselines3)")
    variants = [False, True] if args.compile else [False]
    rlrun_rates: dict[bool, list[float]] = {c: [] for c in variants}
    rlrun_rss: list[int] = []
    sb3_rates: list[float] = []
    sb3_buffer = REFERENCE["buffer_size"]
    switch_rates: dict[str, list[float]] = {name: [] for name in switches}
    for i in range(repeats):  # rlrun and SB3 alternate, so a slow phase of the machine hits both
        for compile in variants:
            points, rss = in_subprocess(train_rlrun, ls, steps, compile)
            rlrun_rates[compile].append(steady_rate(points, WARMUP_POINTS))
            if not compile:
                rlrun_rss.append(rss)
            say(f"rlrun DQN{' compile' * compile} run {i + 1}/{repeats}: {rlrun_rates[compile][-1]:,.0f} agent steps/s")
        for name, overrides in switches.items():
            points, _ = in_subprocess(train_rlrun, ls, steps, False, tuple(overrides))
            switch_rates[name].append(steady_rate(points, WARMUP_POINTS))
            say(f"rlrun DQN {name} run {i + 1}/{repeats}: {switch_rates[name][-1]:,.0f} agent steps/s")
        if run_sb3:
            (points, sb3_buffer), _ = in_subprocess(train_sb3, ls, steps)
            sb3_rates.append(steady_rate(points, WARMUP_POINTS))
            say(f"SB3 DQN run {i + 1}/{repeats}: {sb3_rates[-1]:,.0f} agent steps/s")

    timed = f"{steps:,} steps after learning starts, up to the first {WARMUP_POINTS * LOG_INTERVAL} skipped as warm-up"
    rlrun_rate = statistics.median(rlrun_rates[False])
    rows.append(("rlrun DQN, steady state after learning starts", f"{rlrun_rate:,.0f} steps/s", timed))
    if args.compile:
        rows.append(("rlrun DQN, algo.compile=true, steady state", f"{statistics.median(rlrun_rates[True]):,.0f} steps/s",
                     timed + ", compile time excluded"))
    for name, rates in switch_rates.items():
        rate = statistics.median(rates)
        rows.append((f"rlrun DQN + {name}, steady state" if name != "rainbow" else "rlrun algo=rainbow, steady state",
                     f"{rate:,.0f} steps/s", f"{rate / rlrun_rate:.2f}x plain DQN; {timed}"))
    if run_sb3:
        sb3_rate = statistics.median(sb3_rates)
        note = timed if sb3_buffer == REFERENCE["buffer_size"] else (
            f"{timed}; buffer_size {sb3_buffer:,}: the 1M buffer (2 x 28.2 GB) was refused, it never fills here anyway")
        rows.append(("SB3 DQN, steady state after learning starts", f"{sb3_rate:,.0f} steps/s", note))
        rows.append(("rlrun / SB3, steady state", f"{rlrun_rate / sb3_rate:.2f}x", "same invocation"))
    elif not args.skip_sb3:
        rows.append(("SB3 DQN", "-", "stable-baselines3 not installed"))

    if not args.skip_memory:
        from rlrun.data.replay import ReplayBuffer

        size, rss = in_subprocess(fill_replay, args.fill)
        assert size == args.fill, (size, args.fill)
        once = ReplayBuffer.nbytes_for(args.fill, OBS_SHAPE, np.uint8, OBS_SHAPE[0])
        say(f"ReplayBuffer of {args.fill:,} filled: peak RSS {rss / GB:.2f} GB")
        rows.append((f"Peak RSS, rlrun ReplayBuffer of {args.fill:,} (4,84,84) uint8 transitions, all written",
                     f"{rss / GB:.2f} GB",
                     f"computed: frames once {once / GB:.2f} GB; stacked obs {stacked_bytes(args.fill, 1) / GB:.1f} GB, "
                     f"obs + next_obs {stacked_bytes(args.fill, 2) / GB:.1f} GB"))
        if switches:
            size, rss = in_subprocess(fill_replay, args.fill, True)
            assert size == args.fill, (size, args.fill)
            need = ReplayBuffer.nbytes_for(args.fill, OBS_SHAPE, np.uint8, OBS_SHAPE[0], prioritized=True)
            say(f"PrioritizedReplayBuffer of {args.fill:,} filled: peak RSS {rss / GB:.2f} GB")
            rows.append((f"Peak RSS, rlrun PrioritizedReplayBuffer of {args.fill:,} transitions, all written",
                         f"{rss / GB:.2f} GB", f"computed with the sum tree: {need / GB:.2f} GB (limit of the issue: 8 GB)"))
    rows.append(("Peak RSS, rlrun DQN training process", f"{statistics.median(rlrun_rss) / GB:.2f} GB",
                 f"figure 3; replay pages touched for its {ls + steps:,} transitions only"))

    settings = (f"Settings (CleanRL dqn_atari): 1 env, buffer_size 1,000,000, batch 32, train_frequency 4, "
                f"learning_rate 1e-4, target_network_frequency 1000, Nature CNN; learning_starts {ls:,}, "
                f"{steps:,} agent steps after it; 1 agent step = 4 frames.")
    publish(SECTION, "scripts/bench_dqn.py", argv, settings, rows, repeats, args.record)


if __name__ == "__main__":
    main()
