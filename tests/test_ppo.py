"""PPO: GAE, losses and distributions against hand computations; normalization; short real runs; resume."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from torch.distributions import Normal

from gymnasium import spaces

from rlrun.algos.ppo import clipped_surrogate_loss, make_minibatch_loss, value_loss
from rlrun.cli.train import run_training
from rlrun.core.checkpoint import latest_checkpoint
from rlrun.core.config import ConfigError
from rlrun.core.events import read_scalars
from rlrun.data.rollout import gae
from rlrun.nn.heads import ActorCritic
from rlrun.nn.normalize import RunningMeanStd

PPO_TAGS = ("charts/learning_rate", "losses/value_loss", "losses/policy_loss", "losses/entropy",
            "losses/old_approx_kl", "losses/approx_kl", "losses/clipfrac", "losses/explained_variance",
            "charts/SPS")


def test_gae_with_termination_truncation_and_life_loss_in_one_rollout():
    # env 0: step 1 truncated (final obs worth 5.0), step 3 terminated (game over)
    # env 1: step 1 terminated without an episode end (an Atari life loss)
    rewards = torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [4.0, 0.0]])
    values = torch.tensor([[0.5, 1.0], [1.0, 1.0], [1.5, 1.0], [2.0, 1.0]])
    terminated = torch.tensor([[0.0, 0.0], [0.0, 1.0], [0.0, 0.0], [1.0, 0.0]])
    episode_end = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    final_values = torch.tensor([[0.0, 0.0], [5.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    next_value = torch.tensor([10.0, 2.0])
    adv = gae(rewards, values, next_value, terminated, episode_end, final_values, gamma=0.9, gae_lambda=0.5)
    # by hand, backwards; env 0: A3 = 4 - 2 = 2; A2 = 3 + .9*2 - 1.5 + .45*2 = 4.2;
    # A1 = 2 + .9*5 - 1 (bootstrap from the final obs, no carry) = 5.5; A0 = 1 + .9*1 - .5 + .45*5.5 = 3.875
    # env 1: A3 = .9*2 - 1 = .8; A2 = .9 - 1 + .45*.8 = .26; A1 = -1 (no bootstrap); A0 = -.1 + .45*-1 = -.55
    expected = torch.tensor([[3.875, -0.55], [5.5, -1.0], [4.2, 0.26], [2.0, 0.8]])
    torch.testing.assert_close(adv, expected)


def test_clipped_surrogate_and_value_losses_by_hand():
    advantages = torch.tensor([1.0, -1.0, 2.0])
    ratio = torch.tensor([1.5, 0.5, 0.9])
    # max(-A r, -A clip(r, .8, 1.2)): max(-1.5, -1.2) = -1.2; max(.5, .8) = .8; max(-1.8, -1.8) = -1.8
    assert clipped_surrogate_loss(advantages, ratio, 0.2).item() == pytest.approx((-1.2 + 0.8 - 1.8) / 3)
    new, old, returns = torch.tensor([2.0]), torch.tensor([1.0]), torch.tensor([3.0])
    assert value_loss(new, old, returns, None).item() == pytest.approx(0.5)  # 0.5 * (2 - 3)^2
    assert value_loss(new, old, returns, 0.5).item() == pytest.approx(1.125)  # clipped value 1.5: .5 * 2.25


def test_gaussian_log_probability_and_entropy_sum_over_dimensions():
    dist = Normal(torch.tensor([[0.0, 1.0]]), torch.tensor([[2.0, 1.0]]))
    agent = ActorCritic((4,), spaces.Box(-1.0, 1.0, (2,)), [8], "tanh")
    logp, entropy = agent.log_prob_and_entropy(dist, torch.tensor([[1.0, 1.0]]))
    half_log_2pi = 0.5 * math.log(2 * math.pi)
    assert logp.item() == pytest.approx((-0.5 * 0.25 - math.log(2) - half_log_2pi) + (-half_log_2pi))
    assert entropy.item() == pytest.approx((0.5 + half_log_2pi + math.log(2)) + (0.5 + half_log_2pi))


def test_running_mean_std_matches_numpy_and_survives_a_safe_checkpoint():
    rng = np.random.default_rng(0)
    data = rng.normal(3.0, 2.0, size=(1000, 5))
    rms = RunningMeanStd((5,))
    for chunk in np.split(data, 10):
        rms.update(chunk)
    np.testing.assert_allclose(rms.mean, data.mean(0), rtol=1e-6)
    np.testing.assert_allclose(rms.var, data.var(0), rtol=1e-5)
    buf = io.BytesIO()
    torch.save(rms.state_dict(), buf)
    buf.seek(0)
    copy = RunningMeanStd((5,))
    copy.load_state_dict(torch.load(buf, weights_only=True))
    np.testing.assert_array_equal(copy.mean, rms.mean)
    np.testing.assert_array_equal(copy.var, rms.var)
    with pytest.raises(ValueError, match="do not fit"):
        RunningMeanStd((4,)).load_state_dict(rms.state_dict())


def test_short_breakout_run_writes_ppo_scalars_and_a_checkpoint(make_cfg, tmp_path):
    cfg = make_cfg("algo=ppo", "env=breakout", "algo.num_envs=2", "algo.num_steps=64", "total_timesteps=512",
                   "checkpoint.interval=256")
    run_training(cfg, tmp_path / "run")
    scalars = read_scalars(tmp_path / "run")
    for tag in PPO_TAGS:
        assert len(scalars.get(tag, [])) == 4, tag  # one per iteration of 128 steps
    lrs = [v for _, v, _ in scalars["charts/learning_rate"]]
    assert lrs[0] == pytest.approx(2.5e-4) and lrs == sorted(lrs, reverse=True)  # annealed
    path, ckpt = latest_checkpoint(tmp_path / "run")
    assert ckpt["global_step"] == 512 and ckpt["iteration"] == 4


def test_short_halfcheetah_run_saves_its_normalization_statistics(make_cfg, tmp_path):
    cfg = make_cfg("algo=ppo", "env=halfcheetah", "algo.num_steps=256", "algo.num_minibatches=4",
                   "total_timesteps=1024")
    assert cfg.algo.normalize_obs and cfg.algo.update_epochs == 20  # RL Zoo's HalfCheetah settings
    assert cfg.algo.init_log_std == -2.0 and cfg.algo.hidden_sizes == [256, 256]
    run_training(cfg, tmp_path / "run")
    scalars = read_scalars(tmp_path / "run")
    assert all(scalars.get(tag) for tag in PPO_TAGS)
    _, ckpt = latest_checkpoint(tmp_path / "run")
    assert ckpt["obs_norm"]["count"] == pytest.approx(1025, abs=1)  # the reset obs and 1,024 steps
    assert tuple(ckpt["obs_norm"]["mean"].shape) == (17,) and ckpt["reward_norm"]["rms"]["count"] > 1000
    assert ckpt["agent"]["actor_logstd"].shape == (1, 6)
    assert ckpt["agent"]["actor_logstd"].numpy() == pytest.approx(-2.0, abs=0.05)  # started at -2, lr 2e-5

    from rlrun.cli.evaluate import evaluate_checkpoint  # a checkpoint saved before init_log_std existed still plays
    from omegaconf import OmegaConf

    saved = OmegaConf.create(ckpt["config"])
    del saved.algo["init_log_std"]
    ckpt["config"] = OmegaConf.to_yaml(saved)
    old = tmp_path / "run" / "checkpoints" / "step_000000000001.pt"
    torch.save(ckpt, old)
    assert evaluate_checkpoint(old, episodes=1, video=False)["global_step"] == ckpt["global_step"]


def test_gaussian_policy_starts_at_the_configured_log_std():

    space = spaces.Box(-1.0, 1.0, (3,))
    assert ActorCritic((4,), space, [8], "tanh").actor_logstd.detach().numpy() == pytest.approx(np.zeros((1, 3)))
    agent = ActorCritic((4,), space, [8], "tanh", init_log_std=-2.0)
    dist, _ = agent.dist_and_value(torch.zeros(5, 4))
    assert dist.stddev.detach().numpy() == pytest.approx(np.full((5, 3), np.exp(-2.0)), rel=1e-6)


def test_ppo_resume_gives_the_same_scalars_as_an_uninterrupted_run(stop_and_resume):
    overrides = ("algo=ppo", "env=cartpole", "total_timesteps=4096", "checkpoint.interval=100000",
                 "algo.normalize_obs=true", "algo.normalize_reward=true")
    whole, split, _ = stop_and_resume(overrides, 1536)
    assert whole.keys() == split.keys() and len(whole["losses/approx_kl"]) == 8
    for tag in whole:
        assert split[tag] == whole[tag], tag


@pytest.mark.parametrize("overrides, key, allowed", [
    (["algo.num_minibatches=3"], "algo.num_minibatches", "a divisor of algo.num_envs x algo.num_steps = 8 x 128"),
    (["algo.clip_coef=0"], "algo.clip_coef", "> 0"),
    (["env=halfcheetah", "algo.policy=categorical"], "algo.policy", "gaussian (or auto): HalfCheetah-v5 has continuous"),
    (["env=cartpole", "algo.policy=gaussian"], "algo.policy", "categorical (or auto): CartPole-v1 has discrete"),
    (["algo.compile=sometimes"], "algo.compile", "true, false or auto"),
    (["algo.init_log_std=5"], "algo.init_log_std", "<= 2"),
    (["algo.init_log_std=small"], "algo.init_log_std", "a number"),
])
def test_bad_ppo_values_give_one_clear_error(make_cfg, overrides, key, allowed):
    from rlrun.cli.train import validate

    with pytest.raises(ConfigError) as info:
        validate(make_cfg("algo=ppo", *overrides))
    assert str(info.value).startswith(key) and allowed in str(info.value), str(info.value)


def test_rollout_sampling_draws_exactly_what_the_policy_distribution_draws():

    for space in (spaces.Discrete(3), spaces.Box(-1.0, 1.0, (2,))):
        agent = ActorCritic((4,), space, [8], "tanh")
        obs = torch.randn(64, 4)
        torch.manual_seed(0)
        action, logprob, value = agent.sample_action(obs)
        torch.manual_seed(0)
        with torch.no_grad():
            dist, expected_value = agent.dist_and_value(obs)
            expected = dist.sample()
            expected_logprob, _ = agent.log_prob_and_entropy(dist, expected)
        assert torch.equal(action, expected)
        torch.testing.assert_close(logprob, expected_logprob)
        torch.testing.assert_close(value, expected_value)


def _minibatch(agent, n=32):
    torch.manual_seed(3)
    obs = torch.randn(n, 4)
    actions = torch.randint(0, 3, (n,))
    return obs, actions, torch.randn(n) - 1.0, torch.randn(n), torch.randn(n), torch.randn(n)


def test_compiled_minibatch_loss_equals_the_eager_one():
    from types import SimpleNamespace


    agent = ActorCritic((4,), spaces.Discrete(3), [16], "tanh")
    batch = _minibatch(agent)
    results = []
    # eager, compiled, and compiled in reduce-overhead mode (CUDA graphs on a GPU; the same kernels on a CPU)
    for use_compile, mode in ((False, "default"), (True, "default"), (True, "reduce-overhead")):
        args = SimpleNamespace(clip_coef=0.2, clip_vloss=True, norm_adv=True, ent_coef=0.01, vf_coef=0.5,
                               compile_mode=mode)
        agent.zero_grad()
        loss, stats = make_minibatch_loss(agent, args, use_compile)(*batch)
        loss.backward()
        results.append((loss.detach(), stats, [p.grad.clone() for p in agent.parameters()]))
    (eager_loss, eager_stats, eager_grads), *compiled = results
    for loss, stats, grads in compiled:
        torch.testing.assert_close(loss, eager_loss, rtol=1e-5, atol=1e-6)
        for name in ("policy_loss", "value_loss", "entropy", "old_approx_kl", "approx_kl", "clipfrac"):
            torch.testing.assert_close(stats[name], eager_stats[name], rtol=1e-5, atol=1e-6)
        for g, expected in zip(grads, eager_grads):
            torch.testing.assert_close(g, expected, rtol=1e-4, atol=1e-6)


def test_a_failing_compiler_falls_back_to_the_eager_update_once(monkeypatch, capsys):
    from types import SimpleNamespace


    def broken_compile(fn, mode=None):
        def call(*args):
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found")
        return call

    monkeypatch.setattr(torch, "compile", broken_compile)
    args = SimpleNamespace(clip_coef=0.2, clip_vloss=False, norm_adv=False, ent_coef=0.0, vf_coef=0.5,
                           compile_mode="default")
    agent = ActorCritic((4,), spaces.Discrete(3), [16], "tanh")
    loss_fn = make_minibatch_loss(agent, args, use_compile=True)
    batch = _minibatch(agent)
    first, second = loss_fn(*batch)[0], loss_fn(*batch)[0]
    expected = make_minibatch_loss(agent, args, use_compile=False)(*batch)[0]
    assert torch.equal(first, expected) and torch.equal(second, expected)
    out = capsys.readouterr().out
    assert out.count("torch.compile failed (RuntimeError: InvalidCxxCompiler") == 1 and "eagerly" in out
