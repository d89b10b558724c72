"""Config composition, tuned files, comments on every key, and validation errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rlrun.cli.train import validate
from rlrun.core import registry
from rlrun.core.config import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ENVS = sorted(p.stem for p in (CONFIGS / "env").glob("*.yaml") if p.stem not in ("atari", "gym"))
ALGOS = sorted(p.stem for p in (CONFIGS / "algo").glob("*.yaml"))
CONTINUOUS_ENVS = {"halfcheetah", "hopper"}
PIXEL_ENVS = {"breakout", "pong"}
INDEX_STATE_ENVS = {"recycling", "trap", "gridworld", "gridworld_corridor"}  # observations are state indices (env.kwargs.one_hot=false)
TABULAR_ALGOS = {"value_iteration", "q_learning"}


LM_ALGOS = {"sft", "dpo", "ppo_rlhf"}  # they train a language model on a text task
TEXT_ENVS = {"sentiment", "text"}
TEXT_ENV_NEEDS = {"sft": "env.demonstrations_path", "dpo": "env.prompts_path", "ppo_rlhf": "env.prompts_path"}
BOARD_ENVS = {"tictactoe", "connect_four"}  # two-player board games, for algo=selfplay


def expected_refusal(env: str, algo: str) -> str | None:
    """The start of the ConfigError validate() must raise for (env, algo) at their defaults, or None."""
    if algo == "selfplay":  # two-player board games only
        return None if env in BOARD_ENVS else (f"env='{env}' is not allowed: expected a two-player board game "
                                               "(env.family=board) for algo=selfplay, one of tictactoe, connect_four")
    if algo in LM_ALGOS and env not in TEXT_ENVS:
        return f"env='{env}' is not allowed: expected a text task for algo={algo}"
    if algo in LM_ALGOS and env == "text":  # the user's own task: its files have no default
        return f"{TEXT_ENV_NEEDS[algo]}=None is not allowed: expected a JSONL file"
    if algo in LM_ALGOS:
        return None
    if env in BOARD_ENVS:
        return f"env='{env}' is not allowed: expected an environment for algo={algo}: a two-player board game"
    if algo == "reward_model" and env in TEXT_ENVS:
        return "algo.data='segments' is not allowed: expected text on a text task"
    if env in TEXT_ENVS:
        return f"env='{env}' is not allowed: expected an environment for algo={algo}: a text task"
    if algo in ("maxent_irl", "bc"):  # their demonstrations have no default
        return "algo.demos=None is not allowed: expected the path of a demonstrations .npz"
    if algo == "dagger":  # nor has its expert
        return "algo.expert is null: a DAgger run needs an expert"
    if algo in ("dqn", "rainbow") and env in CONTINUOUS_ENVS:
        return f"algo='{algo}' is not allowed: expected an algorithm for continuous"
    if algo in TABULAR_ALGOS and env not in INDEX_STATE_ENVS:
        return f"env='{env}' is not allowed: expected an env with discrete states"
    if algo in ("dqn", "rainbow", "ppo", "pbrl", "reward_model") and env in INDEX_STATE_ENVS:
        return f"env='{env}' is not allowed: expected an env with vector or pixel observations"
    if algo == "td" and env in PIXEL_ENVS:
        return f"env='{env}' is not allowed: expected a gymnasium env with vector or discrete observations"
    if algo == "td" and env in CONTINUOUS_ENVS:
        return f"env='{env}' is not allowed: expected an env with discrete actions"
    return None


def test_every_algo_config_has_a_registered_spec_and_every_spec_a_config(make_cfg):
    assert ALGOS and ALGOS == registry.names()
    for name in ALGOS:
        spec = registry.get(name)
        assert spec.name == make_cfg(f"algo={name}").algo.name == name
        preset_of = {"rainbow": "dqn"}  # configs/algo/rainbow.yaml: algo=dqn with every switch on
        assert spec.train.__module__ == spec.validate.__module__ == f"rlrun.algos.{preset_of.get(name, name)}"


def test_an_unregistered_algo_name_is_one_error_listing_the_registered_ones():
    with pytest.raises(ConfigError) as info:
        registry.get("muzero")
    assert str(info.value) == ("algo.name='muzero' is not allowed: expected one of bc, dagger, dpo, dqn, maxent_irl, "
                               "pbrl, ppo, ppo_rlhf, q_learning, rainbow, reinforce, reward_model, selfplay, sft, td, "
                               "value_iteration")


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("env", ENVS)
def test_every_env_algo_pair_composes_and_validates(make_cfg, env, algo):
    cfg = make_cfg(f"env={env}", f"algo={algo}")
    assert cfg.algo.name == algo and cfg.env.name == env
    natural = "atari" if cfg.env.family == "atari" else "none"
    assert cfg.preprocessing.name == natural
    refusal = expected_refusal(env, algo)
    if refusal is not None:
        with pytest.raises(ConfigError) as err:
            validate(cfg)
        assert str(err.value).startswith(refusal), str(err.value)
    else:
        validate(cfg)


def test_generic_envs_compose(make_cfg):
    validate(make_cfg("env=atari", "env.id=space_invaders"))
    cfg = make_cfg("env=gym", "env.id=CartPole-v1")
    assert cfg.preprocessing.name == "none" and cfg.env.name == "CartPole-v1"
    validate(cfg)


def test_breakout_defaults_equal_cleanrl_dqn_atari(make_cfg):
    cfg = make_cfg("env=breakout", "algo=dqn")
    a = cfg.algo
    assert cfg.total_timesteps == 10_000_000 and cfg.replay.buffer_size == 1_000_000
    assert (a.learning_rate, a.gamma, a.target_network_frequency, a.batch_size) == (1e-4, 0.99, 1000, 32)
    assert (a.learning_starts, a.train_frequency, a.start_e, a.end_e, a.exploration_fraction) == (
        80_000, 4, 1.0, 0.01, 0.1)
    assert (a.tau, a.loss, a.double_dqn) == (1.0, "auto", False)  # auto: mse unless C51


def test_tuned_file_applies_and_command_line_beats_it(make_cfg):
    cfg = make_cfg("env=cartpole", "algo=dqn")
    assert cfg.algo.hidden_sizes == [120, 84] and cfg.algo.batch_size == 128
    assert cfg.total_timesteps == 500_000 and cfg.replay.buffer_size == 10_000
    cfg = make_cfg("env=cartpole", "algo=dqn", "algo.batch_size=64", "total_timesteps=1000")
    assert cfg.algo.batch_size == 64 and cfg.total_timesteps == 1000
    assert make_cfg("env=breakout").algo.batch_size == 32  # no tuned file: algo defaults


def test_command_line_preprocessing_beats_env_choice(make_cfg):
    assert make_cfg("env=cartpole", "preprocessing=atari").preprocessing.name == "atari"


def _keys_without_comment(path: Path) -> list[str]:
    missing = []
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.startswith("- "):
            continue
        if stripped.endswith(":") or stripped == "defaults:":
            continue  # a mapping header: its children carry the comments
        if ":" in stripped and "#" not in stripped:
            missing.append(f"{path.relative_to(CONFIGS)}: {stripped}")
    return missing


def test_every_config_key_has_a_comment():
    files = sorted(CONFIGS.rglob("*.yaml"))
    assert len(files) > 10
    for f in files:
        yaml.safe_load(f.read_text())  # each file is valid YAML
    missing = [m for f in files for m in _keys_without_comment(f)]
    assert not missing, "keys without a one-line comment:\n" + "\n".join(missing)


@pytest.mark.parametrize("overrides, key, allowed", [
    (["algo.learning_rate=-0.001"], "algo.learning_rate", "> 0"),
    (["algo.learning_rate=abc"], "algo.learning_rate", "a number"),
    (["algo.batch_size=64", "replay.buffer_size=32"], "algo.batch_size", "at most replay.buffer_size=32"),
    (["algo.learning_starts=2000", "total_timesteps=1000"], "algo.learning_starts", "total_timesteps=1000"),
    (["env=atari", "env.id=breakot"], "env.id", "an ALE game"),
    (["env=gym", "env.id=CartPole-v9"], "env.id", "CartPole-v1"),
    (["algo.gamma=1.5"], "algo.gamma", "<= 1"),
    (["algo.loss=l3"], "algo.loss", "auto, mse, huber, cross_entropy"),
    (["algo.alpha=1.5"], "algo.alpha", "<= 1"),
    (["algo.beta=-0.1"], "algo.beta", ">= 0"),
    (["algo.n_step=0"], "algo.n_step", ">= 1"),
    (["algo.num_atoms=1"], "algo.num_atoms", ">= 2"),
    (["algo.v_min=10", "algo.v_max=10"], "algo.v_min", "less than algo.v_max=10"),
    (["algo.distributional=true", "algo.loss=mse"], "algo.loss", "auto or cross_entropy"),
    (["algo.loss=cross_entropy"], "algo.loss", "set algo.distributional=true"),
    (["algo=rainbow", "algo.loss=huber"], "algo.loss", "auto or cross_entropy"),
    (["algo.noisy_std=0"], "algo.noisy_std", "> 0"),
    (["algo.epsilon_greedy=maybe"], "algo.epsilon_greedy", "auto, true, false"),
    (["algo.compile_mode=fastest"], "algo.compile_mode", "default, reduce-overhead, max-autotune"),
    (["algo=ppo", "algo.compile_mode=cudagraphs"], "algo.compile_mode", "default, reduce-overhead, max-autotune"),
    (["logging.trackers=[tensorboard]"], "logging.trackers", "wandb, trackio"),
    (["logging.trackio=1"], "logging.trackio", "true or false"),
    (["algo=rainbow", "replay.buffer_size=100000000"], "replay.buffer_size", "GB available"),
    (["seed=-1"], "seed", ">= 0"),
    (["algo.train_frequency=2.5"], "algo.train_frequency", "an integer"),
    (["env=cartpole", "preprocessing=atari"], "preprocessing", "none for gymnasium ids"),
    (["algo.end_e=0.5", "algo.start_e=0.1"], "algo.end_e", "at most algo.start_e"),
    (["device=gpu"], "device", "auto, cpu, cuda"),
    (["checkpoint.keep_last=0"], "checkpoint.keep_last", ">= 1"),
])
def test_bad_values_give_one_clear_error(make_cfg, overrides, key, allowed):
    cfg = make_cfg(*overrides)
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    message = str(info.value)
    assert message.startswith(key) and allowed in message, message
    assert "\n" not in message


@pytest.mark.parametrize("value", ["true", "false", "auto"])
def test_epsilon_greedy_takes_the_command_lines_booleans(make_cfg, value):
    # Hydra reads algo.epsilon_greedy=true as the boolean True; it was refused as "not one of auto, true, false"
    validate(make_cfg("algo=rainbow", f"algo.epsilon_greedy={value}"))


def test_unknown_algorithm_lists_the_available_ones(make_cfg):
    cfg = make_cfg()
    cfg.algo.name = "dqm"
    with pytest.raises(ConfigError, match="expected one of .*dqn"):
        validate(cfg)
