"""Preferences: the Bradley-Terry loss, labelers, data files, algo=reward_model, reward=learned and algo=pbrl."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from rlrun.cli.train import run_training, validate
from rlrun.core.config import ConfigError
from rlrun.rlhf.reward_models import load_reward_model
from rlrun.rlhf.preference_data import Segments, cut_segments, load_labels, load_segments, write_labels
from rlrun.rlhf.preferences import SyntheticLabeler, bradley_terry_probability, preference_loss
from rlrun.core.events import read_scalars

PENDULUM = ["env=gym", "env.id=Pendulum-v1"]  # classic control whose reward varies from step to step
SMALL_PPO = ["algo.num_envs=1", "algo.num_steps=512", "algo.num_minibatches=4", "algo.update_epochs=2"]


def scalar_values(run_dir, tag):
    return [v for _, v, _ in read_scalars(run_dir).get(tag, [])]


# ---- the Bradley-Terry model and its loss ---------------------------------------------------------

def test_bradley_terry_probability_by_hand():
    assert bradley_terry_probability(20.0, 20.0).item() == 0.5
    assert bradley_terry_probability(math.log(3), 0.0).item() == pytest.approx(0.75, abs=1e-12)
    assert bradley_terry_probability(0.0, 0.0, random_answer_prob=0.1).item() == 0.5
    assert bradley_terry_probability(50.0, 0.0, random_answer_prob=0.1).item() == pytest.approx(0.95, abs=1e-12)


def test_preference_loss_against_hand_computed_values():
    ra = torch.tensor([math.log(3), 0.0, 1.0], dtype=torch.float64)
    rb = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    # a preferred at odds 3:1 -> -log 0.75; a tie of equal rewards -> -log 0.5; "b preferred" of equal ones -> -log 0.5
    labels = torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64)
    expected = (-math.log(0.75) - math.log(0.5) - math.log(0.5)) / 3
    assert preference_loss(ra, rb, labels).item() == pytest.approx(expected, abs=1e-12)
    # a tie of unequal rewards: -(0.5 log 0.75 + 0.5 log 0.25)
    tie = preference_loss(ra[:1], rb[:1], torch.tensor([0.5], dtype=torch.float64)).item()
    assert tie == pytest.approx(-(0.5 * math.log(0.75) + 0.5 * math.log(0.25)), abs=1e-12)
    # random answers with eps = 0.1: P = 0.9 * 0.75 + 0.05 = 0.725
    eps = preference_loss(ra[:1], rb[:1], torch.tensor([1.0], dtype=torch.float64), random_answer_prob=0.1).item()
    assert eps == pytest.approx(-math.log(0.725), abs=1e-12)
    # with eps a confidently wrong model's loss is bounded by -log(eps / 2); without it, it grows with the gap
    wrong_a, wrong_b = torch.tensor([100.0], dtype=torch.float64), torch.tensor([0.0], dtype=torch.float64)
    zero = torch.tensor([0.0], dtype=torch.float64)
    assert preference_loss(wrong_a, wrong_b, zero, random_answer_prob=0.1).item() == pytest.approx(
        -math.log(0.05), abs=1e-9)
    assert preference_loss(wrong_a, wrong_b, zero).item() == pytest.approx(100.0, abs=1e-9)
    # margin: a must beat b by 1, so a gap of ln 3 + 1 counts as ln 3; ties ignore the margin
    assert preference_loss(ra[:1] + 1.0, rb[:1], torch.tensor([1.0], dtype=torch.float64), margin=1.0).item() == \
        pytest.approx(-math.log(0.75), abs=1e-12)
    assert preference_loss(ra[1:2], rb[1:2], torch.tensor([0.5], dtype=torch.float64), margin=1.0).item() == \
        pytest.approx(-math.log(0.5), abs=1e-12)
    # centering adds coef * mean((R_a + R_b)^2)
    centred = preference_loss(ra[2:], rb[2:], labels[2:], center_coef=0.01).item()
    assert centred == pytest.approx(-math.log(0.5) + 0.01 * 4.0, abs=1e-12)


def test_preference_loss_gradient_is_that_of_logistic_regression():
    ra = torch.tensor([0.3, -1.0], dtype=torch.float64, requires_grad=True)
    rb = torch.tensor([0.0, 0.5], dtype=torch.float64)
    labels = torch.tensor([1.0, 0.0], dtype=torch.float64)
    preference_loss(ra, rb, labels).backward()
    expected = (torch.sigmoid(ra.detach() - rb) - labels) / 2  # d/dR_a of the mean cross-entropy
    assert torch.allclose(ra.grad, expected, atol=1e-12)


# ---- labelers ------------------------------------------------------------------------------------

def test_deterministic_labeler_prefers_the_higher_return_and_ties_equal_ones():
    labeler = SyntheticLabeler()
    assert labeler(np.array([3.0, 1.0, 2.0]), np.array([1.0, 3.0, 2.0])).tolist() == [1.0, 0.0, 0.5]


def test_bradley_terry_labeler_answers_with_the_model_probability():
    labeler = SyntheticLabeler("bradley_terry", temperature=2.0, seed=0)
    n = 20000
    labels = labeler(np.full(n, 2 * math.log(3)), np.zeros(n))  # gap / temperature = ln 3 -> P = 0.75
    assert labels.mean() == pytest.approx(0.75, abs=0.015)
    assert set(np.unique(labels)) == {0.0, 1.0}
    assert labeler(np.array([1.0]), np.array([1.0])).tolist() == [0.5]


def test_random_answers_happen_at_the_configured_rate():
    labeler = SyntheticLabeler(random_answer_prob=0.4, seed=1)
    n = 20000
    labels = labeler(np.ones(n), np.zeros(n))  # always "a" unless random: wrong with probability 0.4 / 2
    assert (labels == 0).mean() == pytest.approx(0.2, abs=0.015)


# ---- data files ----------------------------------------------------------------------------------

def make_segments(m=6, length=3, rewards=True):
    rng = np.random.default_rng(0)
    return Segments(rng.standard_normal((m, length, 2)).astype(np.float32), rng.integers(0, 2, (m, length)),
                    rng.standard_normal((m, length)).astype(np.float32) if rewards else None,
                    np.arange(10, 10 + m, dtype=np.int64), "Toy-v0")


def test_segments_and_labels_files_round_trip(tmp_path):
    segments = make_segments()
    segments.save(tmp_path / "s.npz")
    loaded = load_segments(tmp_path / "s.npz")
    assert loaded.env_id == "Toy-v0" and np.array_equal(loaded.obs, segments.obs)
    assert np.array_equal(loaded.ids, segments.ids) and np.allclose(loaded.true_returns(), segments.true_returns())
    pairs, labels = np.array([[0, 1], [2, 5]]), np.array([1.0, 0.5], np.float32)
    write_labels(tmp_path / "l.jsonl", segments, pairs, labels, splits=["train", "holdout"])
    first = json.loads((tmp_path / "l.jsonl").read_text().splitlines()[0])
    assert first == {"a": 10, "b": 11, "label": 1.0, "split": "train"}
    got_pairs, got_labels = load_labels(tmp_path / "l.jsonl", loaded)
    assert got_pairs.tolist() == pairs.tolist() and got_labels.tolist() == labels.tolist()


@pytest.mark.parametrize("line, message", [
    ('{"a": 10, "b": 99, "label": 1}', "line 2: b=99 names no segment"),
    ('{"a": 10, "b": 11, "label": 2}', "line 2: label=2 is not allowed: expected 0, 0.5 or 1"),
    ('{"a": 10, "b": 11, "label": "yes"}', "line 2: label='yes' is not allowed"),
    ('{"a": 10, "b": 10, "label": 1}', "line 2: a segment is compared with itself"),
    ('{"a": 10, "label": 1}', "line 2 has no key 'b'"),
    ('{"a": 10, "b": 11, "label": 1', "line 2 is not valid JSON"),
])
def test_a_bad_labels_file_names_the_offending_line(tmp_path, line, message):
    path = tmp_path / "labels.jsonl"
    path.write_text('{"a": 10, "b": 11, "label": 0}\n' + line + "\n")
    with pytest.raises(ConfigError) as err:
        load_labels(path, make_segments())
    assert message in str(err.value) and str(path) in str(err.value)


def test_a_bad_segments_file_is_refused(tmp_path):
    np.savez(tmp_path / "missing.npz", obs=np.zeros((2, 3, 1)), ids=np.arange(2), env_id=np.array("X"))
    with pytest.raises(ConfigError, match="has no array 'actions'"):
        load_segments(tmp_path / "missing.npz")
    np.savez(tmp_path / "shape.npz", obs=np.zeros((2, 3, 1)), actions=np.zeros((2, 4)), ids=np.arange(2),
             env_id=np.array("X"))
    with pytest.raises(ConfigError, match=r"actions has shape \(2, 4\): expected \(2, 3\)"):
        load_segments(tmp_path / "shape.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="cannot be read"):
        load_segments(tmp_path / "junk.npz")


def test_segments_never_span_two_episodes():
    T, N = 10, 2
    obs = np.arange(T * N, dtype=np.float32).reshape(T, N, 1)
    ends = np.zeros((T, N), bool)
    ends[4, 0] = True  # env 0: an episode ends after step 4
    clips = cut_segments(obs, np.zeros((T, N), np.int64), np.ones((T, N), np.float32), ends, 3)
    starts = [(int(c[0][0, 0]) % N, int(c[0][0, 0]) // N) for c in clips]  # (env, first step)
    assert starts == [(0, 0), (0, 5), (1, 0), (1, 3), (1, 6)]


# ---- algo=reward_model ----------------------------------------------------------------------------

def test_a_linear_reward_is_recovered_from_synthetic_comparisons(make_cfg, tmp_path):
    cfg = make_cfg("+experiment=lecture/linear_reward_preferences")
    accuracy = run_training(cfg, tmp_path / "run")
    assert accuracy > 0.95
    assert scalar_values(tmp_path / "run", "charts/pearson")[-1] > 0.95
    assert scalar_values(tmp_path / "run", "charts/spearman")[-1] > 0.95
    # the recovered weights point the way of the true ones: (features / their std, action difference)
    ensemble, payload = load_reward_model(tmp_path / "run" / "reward_model.pt")
    w = ensemble.members[0].head.net[0].weight.detach().double()[0]
    recovered = torch.cat([w[:4] / ensemble.obs_std.double(), (w[5] - w[4]).reshape(1)])
    true = torch.tensor([1.0, -2.0, 0.5, 0.0, 1.0], dtype=torch.float64)
    assert torch.nn.functional.cosine_similarity(recovered, true, dim=0).item() > 0.99
    assert payload["num_labels"] == 700


def test_reward_model_from_files_and_its_checkpoint_drives_ppo(make_cfg, tmp_path):
    # 1. collect and label segments of Pendulum; the run writes them as files
    first = make_cfg("algo=reward_model", *PENDULUM, "algo.num_segments=60", "algo.segment_length=20",
                     "algo.num_labels=120", "algo.epochs=20")
    run_training(first, tmp_path / "synthetic")
    labels = [json.loads(line) for line in (tmp_path / "synthetic" / "labels.jsonl").read_text().splitlines()]
    assert len(labels) == 120 + 12 and {r["split"] for r in labels} == {"train", "holdout"}
    # 2. the same files as a person's answers (the first 50 of them): a second model trains on them; the
    # segments in none of its training pairs give the correlations
    (tmp_path / "answers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in labels[:50]))
    second = make_cfg("algo=reward_model", *PENDULUM, f"algo.segments_path={tmp_path / 'synthetic' / 'segments.npz'}",
                      f"algo.labels_path={tmp_path / 'answers.jsonl'}", "algo.epochs=20")
    accuracy = run_training(second, tmp_path / "from_files")
    assert accuracy >= 0.8  # 10 held-out pairs
    tags = read_scalars(tmp_path / "from_files")
    for tag in ("losses/preference_loss", "charts/train_accuracy", "charts/holdout_accuracy", "charts/holdout_loss",
                "charts/margin", "charts/pearson", "charts/spearman"):
        assert tag in tags, tag
    # 3. PPO on the learned reward: true returns in charts/episodic_return, learned ones beside them
    model = tmp_path / "from_files" / "reward_model.pt"
    ppo = make_cfg("algo=ppo", *PENDULUM, "reward=learned", f"reward.path={model}", "total_timesteps=1024",
                   *SMALL_PPO)
    run_training(ppo, tmp_path / "ppo")
    true, learned = (scalar_values(tmp_path / "ppo", tag) for tag in
                     ("charts/episodic_return", "charts/learned_episodic_return"))
    assert len(true) == len(learned) == 5  # 1,024 steps of 200-step episodes
    assert all(r < 0 for r in true)  # Pendulum's true reward is never positive
    assert not np.allclose(true, learned)


def test_reward_model_checkpoint_on_an_env_with_other_spaces_is_refused(make_cfg, tmp_path):
    run_training(make_cfg("algo=reward_model", *PENDULUM, "algo.num_segments=20", "algo.segment_length=5",
                          "algo.num_labels=20", "algo.epochs=1"), tmp_path / "rm")
    model = tmp_path / "rm" / "reward_model.pt"
    with pytest.raises(ConfigError) as err:
        validate(make_cfg("algo=ppo", "env=cartpole", "reward=learned", f"reward.path={model}"))
    assert str(err.value).startswith("reward.path: the reward model takes observations of shape (3,) but CartPole-v1")
    with pytest.raises(ConfigError, match="reward=env for algo=reinforce"):
        validate(make_cfg("algo=reinforce", *PENDULUM, "reward=learned", f"reward.path={model}"))
    (tmp_path / "corrupt.pt").write_bytes(b"\x00garbage")
    with pytest.raises(ConfigError, match="cannot be read as a reward model"):
        validate(make_cfg("algo=ppo", *PENDULUM, "reward=learned", f"reward.path={tmp_path / 'corrupt.pt'}"))
    training_checkpoint = next((tmp_path / "rm" / "checkpoints").glob("step_*.pt"))
    with pytest.raises(ConfigError, match="is not a reward-model checkpoint"):
        validate(make_cfg("algo=ppo", *PENDULUM, "reward=learned", f"reward.path={training_checkpoint}"))
    with pytest.raises(ConfigError, match="reward.path must be set"):
        validate(make_cfg("algo=ppo", *PENDULUM, "reward=learned"))


@pytest.mark.parametrize("overrides, message", [
    (["algo.labels_path=labels.jsonl"], "algo.labels_path='labels.jsonl' is not allowed: expected null unless"),
    (["algo.policy=nowhere.pt"], "algo.policy='nowhere.pt' is not allowed"),
    (["algo.random_answer_prob=1.0"], "algo.random_answer_prob=1.0 is not allowed: expected a number >= 0 and < 1"),
    (["algo.hidden_sizes=[0]"], "algo.hidden_sizes=[0] is not allowed"),
    (["algo.labeler.mode=oracle"], "algo.labeler.mode='oracle' is not allowed"),
    (["algo.use_actions=maybe"], "algo.use_actions='maybe' is not allowed"),
    (["algo.shift=median"], "algo.shift='median' is not allowed"),
])
def test_bad_reward_model_keys_are_refused(make_cfg, overrides, message):
    with pytest.raises(ConfigError) as err:
        validate(make_cfg("algo=reward_model", *PENDULUM, *overrides))
    assert str(err.value).startswith(message), str(err.value)


def test_a_state_only_reward_ignores_the_action_and_survives_its_checkpoint(make_cfg, tmp_path):
    run_training(make_cfg("algo=reward_model", *PENDULUM, "algo.num_segments=20", "algo.segment_length=5",
                          "algo.num_labels=20", "algo.epochs=2", "algo.use_actions=false"),
                 tmp_path / "rm")
    ensemble, payload = load_reward_model(tmp_path / "rm" / "reward_model.pt")
    assert payload["spec"]["use_actions"] is False
    assert ensemble.members[0].head.net[0].weight.shape[1] == 3  # Pendulum's 3 observation entries, no action
    obs = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    low, high = ensemble.reward(obs, -2 * np.ones((8, 1), np.float32)), ensemble.reward(obs, 2 * np.ones((8, 1), np.float32))
    assert torch.equal(low, high) and low.std() > 0
    # a checkpoint from before the key existed saw the action, and still does
    from gymnasium import spaces

    from rlrun.rlhf.reward_models import RewardEnsemble, save_reward_model
    with_actions = RewardEnsemble((3,), spaces.Box(-2, 2, (1,), np.float32), [8], "relu", 1)
    save_reward_model(with_actions, tmp_path / "old.pt", "Pendulum-v1")
    old_payload = torch.load(tmp_path / "old.pt", weights_only=True)
    old_payload["spec"].pop("use_actions")
    torch.save(old_payload, tmp_path / "old.pt")
    old, _ = load_reward_model(tmp_path / "old.pt")
    assert old.use_actions and old.members[0].head.net[0].weight.shape[1] == 4
    assert not torch.equal(old.reward(obs, -2 * np.ones((8, 1), np.float32)), old.reward(obs, 2 * np.ones((8, 1), np.float32)))


def progress_segments(m=200, length=10, seed=0):
    """Segments whose true reward is progress over the step, next_obs[0] - obs[0], with each next
    observation a random step away from the observation: what a step earns shows only in s'."""
    rng = np.random.default_rng(seed)
    obs = rng.standard_normal((m, length, 3)).astype(np.float32)
    next_obs = (obs + rng.standard_normal(obs.shape)).astype(np.float32)
    actions = rng.uniform(-2, 2, (m, length, 1)).astype(np.float32)
    rewards = next_obs[..., 0] - obs[..., 0]
    return Segments(obs, actions, rewards, np.arange(m, dtype=np.int64), "Pendulum-v1", next_obs)


def test_a_progress_reward_is_learned_only_with_the_next_observation(make_cfg, tmp_path):
    progress_segments().save(tmp_path / "progress.npz")
    accuracy = {}
    for use_next_obs in ("false", "true"):
        cfg = make_cfg("algo=reward_model", *PENDULUM, f"algo.segments_path={tmp_path / 'progress.npz'}",
                       "algo.num_labels=600", "algo.epochs=30", "algo.learning_rate=0.01", "algo.hidden_sizes=[]",
                       "algo.ensemble_size=1",
                       f"algo.use_next_obs={use_next_obs}")
        accuracy[use_next_obs] = run_training(cfg, tmp_path / use_next_obs)
    assert accuracy["true"] > 0.9 and accuracy["false"] < 0.75  # the step is in s' alone: r(s, a) cannot see it
    assert scalar_values(tmp_path / "true", "charts/pearson")[-1] > 0.95
    ensemble, payload = load_reward_model(tmp_path / "true" / "reward_model.pt")
    assert payload["spec"]["use_next_obs"] is True
    assert ensemble.members[0].head.net[0].weight.shape[1] == 3 + 1 + 3  # s, a, s'
    assert load_segments(tmp_path / "true" / "segments.npz").next_obs is not None  # saved with the run's data
    with pytest.raises(ValueError, match="pass the next observations"):
        ensemble.reward(np.zeros((2, 3), np.float32), np.zeros((2, 1), np.float32))


def test_segments_without_or_with_bad_next_observations_are_refused(make_cfg, tmp_path):
    segments = progress_segments(m=6)
    segments.next_obs = None
    segments.save(tmp_path / "no_next.npz")
    with pytest.raises(ConfigError) as err:
        validate(make_cfg("algo=reward_model", *PENDULUM, f"algo.segments_path={tmp_path / 'no_next.npz'}",
                          "algo.use_next_obs=true"))
    assert str(err.value).startswith("algo.use_next_obs=true needs the next observations, but "
                                     "algo.segments_path="), str(err.value)
    validate(make_cfg("algo=reward_model", *PENDULUM, f"algo.segments_path={tmp_path / 'no_next.npz'}"))  # r(s, a)
    arrays = dict(np.load(tmp_path / "no_next.npz"))
    np.savez(tmp_path / "bad_next.npz", **arrays, next_obs=arrays["obs"][:, :-1])
    with pytest.raises(ConfigError, match=r"next_obs is float32 of shape \(6, 9, 3\): expected float32 of obs's shape"):
        load_segments(tmp_path / "bad_next.npz")
    with pytest.raises(ConfigError, match="algo.reward_model.use_next_obs='yes' is not allowed"):
        validate(make_cfg(*PBRL, "algo.reward_model.use_next_obs=yes"))


def test_a_learned_reward_reads_the_last_observation_of_an_episode_not_the_reset_one(make_cfg):
    from rlrun.envs.factory import make_vec_env
    from rlrun.rlhf.learned_reward import LearnedRewardVecEnv
    from rlrun.rlhf.reward_models import RewardEnsemble

    env_cfg = make_cfg("algo=ppo", *PENDULUM)
    envs = make_vec_env(env_cfg, 1)
    ensemble = RewardEnsemble((3,), envs.single_action_space, [], "relu", 1, use_next_obs=True)
    with torch.no_grad():  # r(s, a, s') = the next observation's first entry, cos(theta)
        weight = ensemble.members[0].head.net[0].weight
        weight.zero_()
        weight[0, 4] = 1.0
        ensemble.members[0].head.net[0].bias.zero_()
    wrapped = LearnedRewardVecEnv(envs, ensemble)
    wrapped.reset(seed=0)
    for t in range(200):  # Pendulum's episodes end by the time limit at step 200
        result = wrapped.step(np.zeros((1, 1), np.float32))
        assert result.reward[0] == pytest.approx(result.final_obs[0, 0], abs=1e-6)
    assert result.episode_end[0] and result.final_obs[0, 0] != result.obs[0, 0]
    wrapped.close()


def test_pbrl_with_the_next_observation_stores_it_resumes_and_drives_ppo(make_cfg, tmp_path, stop_and_resume):
    overrides = [*PBRL, "algo.reward_model.use_next_obs=true"]
    run_training(make_cfg(*overrides), tmp_path / "run")
    ensemble, payload = load_reward_model(tmp_path / "run" / "reward_model.pt")
    assert payload["spec"]["use_next_obs"] is True
    ckpt = torch.load(sorted((tmp_path / "run" / "checkpoints").glob("step_*.pt"))[-1], weights_only=True)
    fitter = ckpt["feedback"]["fitter"]
    obs, next_obs = fitter["obs"].numpy(), fitter["next_obs"].numpy()
    assert next_obs.shape == obs.shape and np.array_equal(next_obs[:, :-1], obs[:, 1:])  # s' of a step is s of the next
    ppo = make_cfg("algo=ppo", *PENDULUM, "reward=learned", f"reward.path={tmp_path / 'run' / 'reward_model.pt'}",
                   "total_timesteps=512", *SMALL_PPO)
    run_training(ppo, tmp_path / "ppo")
    assert len(scalar_values(tmp_path / "ppo", "charts/learned_episodic_return")) == 2
    whole, split, _ = stop_and_resume(overrides, stop_at=1024)
    assert whole == split


def test_the_normalized_reward_is_shifted_to_zero_mean_or_zero_minimum():
    from gymnasium import spaces

    from rlrun.rlhf.reward_models import RewardEnsemble

    torch.manual_seed(0)
    ensemble = RewardEnsemble((3,), spaces.Box(-1, 1, (2,), np.float32), [8], "tanh", 2)
    rng = np.random.default_rng(0)
    obs, actions = rng.normal(size=(500, 3)).astype(np.float32), rng.uniform(-1, 1, (500, 2)).astype(np.float32)
    ensemble.fit_normalization(obs, actions)
    by_mean = ensemble.reward(obs, actions)
    assert abs(by_mean.mean().item()) < 1e-5 and by_mean.std().item() == pytest.approx(1.0, abs=1e-4)
    ensemble.fit_normalization(obs, actions, shift="min")
    by_min = ensemble.reward(obs, actions)
    assert by_min.min().item() == pytest.approx(0.0, abs=1e-5) and by_min.std().item() == pytest.approx(1.0, abs=1e-4)
    assert torch.allclose(by_min - by_mean, (by_min - by_mean)[0].expand(500), atol=1e-5)  # the same reward, shifted
    assert (by_min - by_mean)[0].item() == pytest.approx(-by_mean.min().item(), abs=1e-5)
    with pytest.raises(ValueError, match="shift='median': expected one of mean, min"):
        ensemble.fit_normalization(obs, actions, shift="median")


def test_a_segments_file_of_another_env_is_refused(make_cfg, tmp_path):
    make_segments().save(tmp_path / "s.npz")  # (2,) observations; Pendulum has (3,)
    with pytest.raises(ConfigError, match=r"observations of shape \(2,\) but Pendulum-v1 has \(3,\)"):
        validate(make_cfg("algo=reward_model", *PENDULUM, f"algo.segments_path={tmp_path / 's.npz'}"))


# ---- algo=pbrl ----------------------------------------------------------------------------------------

def test_labels_are_front_loaded_and_reach_the_budget():
    from rlrun.algos.pbrl import labels_due

    due = [labels_due(x, 1000, 0.25, 5.0) for x in np.linspace(0, 1, 11)]
    assert due[0] == 250 and due[-1] == 1000
    increments = np.diff(due)
    assert np.all(increments > 0) and np.all(np.diff(increments) <= 1)  # decaying rate
    assert increments[0] > 3 * increments[-1]
    assert labels_due(0.5, 1000, 0.25, 0.0) == 625  # no decay: a constant rate after the initial share


PBRL = ["algo=pbrl", *PENDULUM, "total_timesteps=2048", "algo.num_labels=60", "algo.segment_length=25",
        "algo.reward_model.initial_epochs=5", "checkpoint.interval=1024", *SMALL_PPO]


def test_a_short_pbrl_run_writes_the_expected_scalars(make_cfg, tmp_path):
    metric = run_training(make_cfg(*PBRL), tmp_path / "run")
    tags = read_scalars(tmp_path / "run")
    labels = [v for _, v, _ in tags["charts/labels"]]
    assert labels[0] == 15 and labels[-1] == 60 and labels == sorted(labels)  # 25% up front, all by the end
    for tag in ("charts/episodic_return", "charts/learned_episodic_return", "charts/reward_model_accuracy",
                "losses/preference_loss", "charts/pearson", "charts/spearman", "losses/policy_loss"):
        assert tag in tags, tag
    assert len(tags["charts/episodic_return"]) == len(tags["charts/learned_episodic_return"]) == 10
    assert metric == pytest.approx(np.mean([v for _, v, _ in tags["charts/episodic_return"]]))
    ensemble, payload = load_reward_model(tmp_path / "run" / "reward_model.pt")
    assert payload["num_labels"] == 60 and len(ensemble.members) == 3
    # its checkpoints play like PPO's with rlrun-eval: whole Pendulum episodes of the policy's mode
    from rlrun.cli.evaluate import evaluate_checkpoint

    stats = evaluate_checkpoint(tmp_path / "run", episodes=2)
    assert len(stats["returns"]) == 2 and all(r < 0 for r in stats["returns"])


def test_pbrl_starts_from_the_same_agent_as_ppo_with_the_same_seed(make_cfg, tmp_path):
    # building the reward model leaves torch's generator alone: the first rollout (512 steps, before any
    # update) plays the same two Pendulum episodes under both, so seeds pair the two arms of a comparison
    run_training(make_cfg(*PBRL, "seed=3"), tmp_path / "pbrl")
    run_training(make_cfg("algo=ppo", *PENDULUM, "seed=3", "total_timesteps=2048", *SMALL_PPO), tmp_path / "ppo")
    pbrl, ppo = (scalar_values(tmp_path / run, "charts/episodic_return") for run in ("pbrl", "ppo"))
    assert pbrl[:2] == ppo[:2] and pbrl[2:] != ppo[2:]  # then the rewards they learn from differ
    from gymnasium import spaces

    from rlrun.rlhf.reward_models import RewardEnsemble
    state = torch.get_rng_state()
    box = spaces.Box(-1, 1, (1,), np.float32)
    first, again, other = (RewardEnsemble((3,), box, [8], "relu", 2, init_seed=seed) for seed in (1, 1, 2))
    assert torch.equal(state, torch.get_rng_state())
    weights = [e.members[1].head.net[0].weight for e in (first, again, other)]
    assert torch.equal(weights[0], weights[1]) and not torch.equal(weights[0], weights[2])
    assert not torch.equal(first.members[0].head.net[0].weight, weights[0])  # members start apart


def test_pbrl_resumes_exactly(stop_and_resume):
    whole, split, ckpt = stop_and_resume(PBRL, stop_at=1024)
    assert ckpt["feedback"]["labels_used"] > 0
    assert whole == split


def test_a_pixel_reward_model_fits_saves_and_matches_breakout(make_cfg, tmp_path):
    from gymnasium import spaces

    from rlrun.envs.factory import env_spaces
    from rlrun.rlhf.fitting import PreferenceFitter
    from rlrun.rlhf.reward_models import RewardEnsemble, check_spaces, save_reward_model

    obs_space, action_space = env_spaces(make_cfg("env=breakout", "algo=ppo"))
    ensemble = RewardEnsemble(obs_space.shape, action_space, [16], "relu", ensemble_size=2)
    rng = np.random.default_rng(0)
    obs = rng.integers(0, 255, (4, 3, *obs_space.shape), dtype=np.uint8)  # 4 segments of 3 stacked-frame steps
    obs[:2] //= 8  # two dark segments preferred to two bright ones
    actions = rng.integers(0, action_space.n, (4, 3))
    fitter = PreferenceFitter(ensemble, 1e-3, 0.0, batch_size=4, random_answer_prob=0.0, margin=0.0,
                              center_coef=0.0, bootstrap=False, seed=0)
    fitter.add(obs, actions, np.array([[0, 2], [1, 3], [2, 0], [3, 1]]), np.array([1.0, 1.0, 0.0, 0.0], np.float32))
    first, last = fitter.fit(1), fitter.fit(30)
    assert last < first
    returns = ensemble.segment_returns(torch.as_tensor(obs), torch.as_tensor(actions))
    assert returns.shape == (2, 4) and (returns[:, :2].min() > returns[:, 2:].max())
    rewards = ensemble.reward(obs.reshape(12, *obs_space.shape), actions.reshape(12))
    assert rewards.shape == (12,) and abs(rewards.mean().item()) < 1e-5  # normalized to mean 0
    save_reward_model(ensemble, tmp_path / "rm.pt", "breakout")
    loaded, _ = load_reward_model(tmp_path / "rm.pt")
    assert torch.equal(loaded.reward(obs[0], actions[0]), ensemble.reward(obs[0], actions[0]))
    check_spaces(loaded, obs_space, action_space, "breakout")  # fits
    with pytest.raises(ConfigError, match="takes actions"):
        check_spaces(loaded, obs_space, spaces.Discrete(action_space.n + 1), "pong")


def test_dqn_trains_on_a_learned_reward(make_cfg, tmp_path):
    run_training(make_cfg("algo=reward_model", "env=cartpole", "algo.num_segments=20", "algo.segment_length=5",
                          "algo.num_labels=20", "algo.epochs=1"), tmp_path / "rm")
    cfg = make_cfg("algo=dqn", "env=cartpole", "reward=learned", f"reward.path={tmp_path / 'rm' / 'reward_model.pt'}",
                   "total_timesteps=600", "algo.learning_starts=200")
    run_training(cfg, tmp_path / "dqn")
    true, learned = (scalar_values(tmp_path / "dqn", tag) for tag in
                     ("charts/episodic_return", "charts/learned_episodic_return"))
    assert len(true) == len(learned) > 5
    assert all(r == int(r) for r in true)  # CartPole's true return counts steps
    assert any(r != int(r) for r in learned)


def test_pbrl_benchmark_refuses_to_reuse_runs_trained_with_other_settings(make_cfg, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from omegaconf import OmegaConf

    script = Path(__file__).resolve().parents[1] / "scripts" / "bench_pbrl.py"
    old = tmp_path / "true_s1"  # a run of yesterday's settings: another initial log std
    old.mkdir()
    OmegaConf.save(make_cfg("algo=ppo", "env=halfcheetah", "algo.init_log_std=0.0"), old / "config.yaml")
    done = subprocess.run([sys.executable, str(script), "--out-dir", str(tmp_path), "--seeds", "1"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    message = done.stderr.strip().splitlines()[-1]
    assert message.startswith(f"bench_pbrl: {old} was trained with other settings") and "(algo.init_log_std)" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["true_s1"]  # nothing trained, nothing overwritten
    assert (old / "config.yaml").read_text() == OmegaConf.to_yaml(
        make_cfg("algo=ppo", "env=halfcheetah", "algo.init_log_std=0.0"))
