"""eval.interval: every algorithm with an evaluation policy plays it during training, on a separate env, once per
interval of its steps; an algorithm without one refuses the key before anything runs."""

from __future__ import annotations

import pytest

import rlrun.algos  # noqa: F401 (registers every algorithm)
from rlrun.cli.evaluate import evaluate_checkpoint
from rlrun.cli.train import run_training, validate
from rlrun.core import registry
from rlrun.core.config import ConfigError
from rlrun.core.events import read_scalars

GRIDWORLD_EXPERT = ("algo=value_iteration", "env=gridworld", "algo.gamma=1", "algo.soft=true")
# algo -> (overrides with eval.interval, total steps in the algorithm's unit, the interval)
RUNS = {
    "dqn": (["env=cartpole", "total_timesteps=900", "algo.learning_starts=200"], 900, 300),
    "rainbow": (["algo=rainbow", "env=cartpole", "total_timesteps=900", "algo.learning_starts=200"], 900, 300),
    "ppo": (["env=cartpole", "total_timesteps=2048"], 2048, 512),
    "pbrl": (["env=gym", "env.id=Pendulum-v1", "total_timesteps=1024", "algo.num_envs=1", "algo.num_steps=512",
              "algo.num_minibatches=4", "algo.update_epochs=1", "algo.num_labels=20", "algo.segment_length=10",
              "algo.reward_model.epochs=1", "algo.reward_model.initial_epochs=1"], 1024, 512),
    "reinforce": (["env=cartpole", "total_timesteps=3000"], 3000, 1000),
    "td": (["env=random_walk", "total_timesteps=900", "algo.trajectories_per_update=2"], 900, 300),
    "q_learning": (["env=recycling", "total_timesteps=300"], 300, 100),
    "value_iteration": (["env=gridworld", "algo.gamma=1", "algo.soft=true"], 20, 5),  # 20 sweeps
    "maxent_irl": (["env=gridworld", "algo.max_iterations=30", "algo.demos={demos}"], 30, 10),
    "bc": (["env=gridworld", "algo.epochs=6", "algo.eval_interval=0", "algo.demos={demos}"], None, None),
    "dagger": (["env=gridworld", "algo.num_rounds=3", "algo.epochs=5", "algo.expert={expert}"], None, None),
}


@pytest.fixture(scope="module")
def gridworld_expert(make_cfg, tmp_path_factory):
    """(a soft-optimal gridworld expert's run directory, 10 of its episodes as demonstrations)."""
    root = tmp_path_factory.mktemp("expert")
    run_training(make_cfg(*GRIDWORLD_EXPERT), root / "expert")
    evaluate_checkpoint(root / "expert", episodes=10, save_demos_path=root / "demos.npz")
    return root / "expert", root / "demos.npz"


def test_every_algorithm_but_one_has_an_evaluation_policy():
    assert sorted(RUNS) == sorted(s.name for s in registry.specs() if s.make_policy is not None)
    # the reward model has no policy; the language-model algorithms evaluate on held-out prompts instead of an env,
    # selfplay plays board games against random play and minimax (algo.eval_interval, rlrun-eval --mcts-simulations)
    assert sorted(s.name for s in registry.specs() if s.make_policy is None) == ["dpo", "ppo_rlhf", "reward_model",
                                                                                "selfplay", "sft"]


@pytest.mark.parametrize("algo", sorted(RUNS))
def test_eval_interval_is_honoured(make_cfg, tmp_path, gridworld_expert, algo):
    expert, demos = gridworld_expert
    overrides, total, interval = RUNS[algo]
    overrides = [o.format(demos=demos, expert=expert) for o in overrides]
    if total is None:  # bc's and dagger's steps (gradient steps, rollout steps) are known once they ran
        run_training(make_cfg(f"algo={algo}", *overrides), tmp_path / "probe")
        total = max(s for events in read_scalars(tmp_path / "probe").values() for s, _, _ in events)
        interval = max(total // 3, 1)
    run_training(make_cfg(f"algo={algo}", *overrides, f"eval.interval={interval}", "eval.episodes=2"),
                 tmp_path / "run")
    scalars = read_scalars(tmp_path / "run")
    steps = [s for s, _, _ in scalars["eval/mean_return"]]
    assert 1 <= len(steps) <= total // interval, steps
    assert [s // interval for s in steps] == sorted(set(s // interval for s in steps))  # at most one per interval
    assert all(s >= interval for s in steps)  # the first once an interval has passed
    assert len(scalars["eval/episodic_return"]) == 2 * len(steps)  # eval.episodes each


def test_an_algorithm_without_a_policy_refuses_eval_interval(make_cfg):
    with pytest.raises(ConfigError) as info:
        validate(make_cfg("algo=reward_model", "env=gym", "env.id=Pendulum-v1", "eval.interval=1000"))
    assert str(info.value) == ("eval.interval=1000 is not allowed: expected 0 for algo=reward_model: it has no policy "
                               "to evaluate")
