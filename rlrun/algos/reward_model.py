"""Reward-model training from pairwise preferences: Christiano et al. 2017, "Deep reinforcement learning
from human preferences" (NeurIPS), section 2.2.3; the text variant as TRL's RewardTrainer (Ouyang et al.
2022, section 3.5).

``algo.data=segments``: clips of (observation, action), and the next observations for ``use_next_obs``, from ``env``, either read from files
(``segments_path`` and ``labels_path``: people's answers plug in unchanged) or collected here with
``policy`` and labelled by the synthetic labeler on their true returns. The segments are split into
training and held-out ones; ``num_labels`` pairs of training segments are labelled for training, and
every held-out segment is compared with another held-out one for the held-out accuracy (these labels
do not count against ``num_labels``). With a labels file the labelled pairs themselves are split.

An ensemble of ``ensemble_size`` reward networks r(s, a) is fit by the Bradley-Terry cross-entropy of
segment sums (:class:`rlrun.rlhf.fitting.PreferenceFitter`). Every ``eval_interval`` epochs it logs
losses/preference_loss, charts/train_accuracy, charts/holdout_accuracy, charts/holdout_loss,
charts/margin and, where true rewards exist, charts/pearson and charts/spearman between predicted and
true returns of the held-out segments. The run directory gets ``segments.npz`` and ``labels.jsonl``
(the data used, with a "split" key per label) and ``reward_model.pt`` (weights and normalization),
which later runs optimize with ``reward=learned reward.path=<run dir>/reward_model.pt``.

``algo.data=text`` trains a transformers sequence-classification model on prompt/chosen/rejected pairs
(:mod:`rlrun.rlhf.text_reward`).

``global_step`` counts gradient steps; ``total_timesteps`` is not used.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from rlrun.core import registry
from rlrun.core.checkpoint import load_checkpoint
from rlrun.core.config import ConfigError, check_choice, check_int, check_number, fail, get
from rlrun.core.registry import AlgoSpec, register
from rlrun.core.run import Run, resolve_device
from rlrun.core.state import Counters
from rlrun.envs.factory import check_array_observations, env_spaces, make_vec_env
from rlrun.rlhf.fitting import PreferenceFitter, evaluate_pairs, fitter_from_config, validate_model_keys
from rlrun.rlhf.preference_data import Segments, cut_segments, load_labels, load_segments, write_labels
from rlrun.rlhf.preferences import SyntheticLabeler, correlations
from rlrun.rlhf.reward_models import RewardEnsemble, action_features_size, save_reward_model
from rlrun.rlhf.text_reward import train_text, validate_text

SEED_OFFSET_COLLECT = 0       # env seed offset of segment collection (envs get seed + this)


def validate(cfg: DictConfig) -> None:
    """Check the reward_model keys, and load and validate its data files; raises ConfigError."""
    a = "algo."
    data = check_choice(cfg, a + "data", ["segments", "text"])
    validate_model_keys(cfg, a)
    check_int(cfg, a + "epochs", low=1)
    check_number(cfg, a + "holdout_fraction", low=0, high=1, low_open=True, high_open=True)
    check_int(cfg, a + "eval_interval", low=1)
    if data == "text":
        validate_text(cfg)
        return
    if get(cfg, "env.family") == "text":
        fail("algo.data", data, "text on a text task (env.family=text)")
    check_array_observations(cfg)
    obs_space, action_space = env_spaces(cfg)
    try:
        action_features_size(action_space)
    except ValueError as exc:
        raise ConfigError(f"env={cfg.env.name}: {exc}") from None
    segments_path, labels_path = get(cfg, a + "segments_path"), get(cfg, a + "labels_path")
    if labels_path is not None and segments_path is None:
        fail(a + "labels_path", labels_path, "null unless algo.segments_path names the segments its ids refer to")
    if segments_path is not None:
        segments = load_segments(segments_path)
        if segments.obs.shape[2:] != obs_space.shape:
            raise ConfigError(f"{a}segments_path={segments_path!r}: observations of shape {segments.obs.shape[2:]} "
                              f"but {cfg.env.id} has {obs_space.shape}: expected segments of this env")
        if cfg.algo.use_next_obs and segments.next_obs is None:
            raise ConfigError(f"{a}use_next_obs=true needs the next observations, but {a}segments_path="
                              f"{segments_path!r} has no array 'next_obs': expected segments saved with it, or "
                              f"{a}use_next_obs=false")
        if labels_path is not None:
            pairs, _ = load_labels(labels_path, segments)
            if len(pairs) < 2:
                fail(a + "labels_path", labels_path, "at least 2 labelled pairs (some are held out)")
        elif segments.rewards is None:
            fail(a + "labels_path", None, f"a labels file: {segments_path} has no true rewards for the synthetic labeler")
        return
    policy = get(cfg, a + "policy")
    if policy != "random" and not (isinstance(policy, str) and Path(policy).is_file()):
        fail(a + "policy", policy, "random or the path of an rlrun checkpoint (a .pt file)")
    check_int(cfg, a + "num_segments", low=4)
    check_int(cfg, a + "segment_length", low=1)
    check_int(cfg, a + "num_labels", low=1)
    check_choice(cfg, a + "labeler.mode", ["deterministic", "bradley_terry"])
    check_number(cfg, a + "labeler.temperature", low=0, low_open=True)
    check_number(cfg, a + "labeler.random_answer_prob", low=0, high=1)


def collect_segments(cfg: DictConfig, num_segments: int, length: int) -> Segments:
    """Play ``cfg.algo.policy`` (uniformly random actions, or an rlrun checkpoint's evaluation policy)
    on one env of ``cfg.env`` until ``num_segments`` clips of ``length`` steps are cut (within episodes);
    with ``cfg.algo.use_next_obs`` they keep the next observations too.

    Raises:
        ConfigError: if the checkpoint cannot be loaded or does not fit the env.
    """
    envs = make_vec_env(cfg, 1)
    space = envs.single_action_space
    space.seed(int(cfg.seed))
    if cfg.algo.policy == "random":
        def act(obs):
            return np.array([space.sample()])
    else:
        try:
            state = load_checkpoint(cfg.algo.policy)
        except Exception as exc:  # unreadable or foreign file
            raise ConfigError(f"algo.policy={cfg.algo.policy!r} cannot be loaded: {exc}") from None
        policy_cfg = OmegaConf.create(state["config"])
        act = registry.make_policy(policy_cfg, state, envs, resolve_device(cfg.device), float(cfg.eval.epsilon),
                                   int(cfg.seed))
    steps = num_segments * length
    obs_shape = envs.single_observation_space.shape
    obs = np.zeros((steps, 1, *obs_shape), envs.single_observation_space.dtype)
    actions = np.zeros((steps, 1, *space.shape), np.float32 if space.shape else np.int64)
    rewards, ends = np.zeros((steps, 1), np.float32), np.zeros((steps, 1), bool)
    next_obs = np.zeros_like(obs) if cfg.algo.use_next_obs else None
    clips: list = []
    current = envs.reset(seed=int(cfg.seed) + SEED_OFFSET_COLLECT)
    while len(clips) < num_segments:  # rounds of `steps` steps; episode ends can waste a few clips' worth
        for t in range(steps):
            obs[t] = current
            actions[t] = act(current)
            result = envs.step(actions[t])
            rewards[t], ends[t] = result.reward, result.episode_end
            if next_obs is not None:
                next_obs[t] = result.final_obs
            current = result.obs
        clips += cut_segments(obs, actions, rewards, ends, length, next_obs)
    envs.close()
    obs, actions, rewards, *rest = (np.stack(arrays) for arrays in zip(*clips[:num_segments]))
    return Segments(obs, actions, rewards, np.arange(num_segments, dtype=np.int64), cfg.env.id, *rest)


def random_pairs(rng: np.random.Generator, rows: np.ndarray, count: int) -> np.ndarray:
    """(count, 2) pairs of two distinct entries of ``rows`` each, drawn uniformly."""
    first = rng.integers(0, len(rows), count)
    second = (first + rng.integers(1, len(rows), count)) % len(rows)  # never the same segment
    return np.stack([rows[first], rows[second]], axis=1)


def prepare_data(cfg: DictConfig, run: Run) -> tuple[Segments, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The segments and their (training pairs, training labels, held-out pairs, held-out labels)."""
    args, rng = cfg.algo, np.random.default_rng(int(cfg.seed))
    if args.segments_path is None:
        segments = collect_segments(cfg, int(args.num_segments), int(args.segment_length))
    else:
        segments = load_segments(args.segments_path)
    if args.labels_path is not None:
        pairs, labels = load_labels(args.labels_path, segments)
        order = rng.permutation(len(pairs))
        n_holdout = min(max(1, round(len(pairs) * float(args.holdout_fraction))), len(pairs) - 1)
        train, holdout = order[n_holdout:], order[:n_holdout]
        return segments, pairs[train], labels[train], pairs[holdout], labels[holdout]
    labeler = SyntheticLabeler(args.labeler.mode, float(args.labeler.temperature),
                               float(args.labeler.random_answer_prob), seed=int(cfg.seed))
    order = rng.permutation(len(segments))
    n_holdout = min(max(2, round(len(segments) * float(args.holdout_fraction))), len(segments) - 2)
    holdout_rows, train_rows = order[:n_holdout], order[n_holdout:]
    returns = segments.true_returns()
    train_pairs = random_pairs(rng, train_rows, int(args.num_labels))
    holdout_pairs = random_pairs(rng, holdout_rows, len(holdout_rows))
    train_labels = labeler(returns[train_pairs[:, 0]], returns[train_pairs[:, 1]])
    holdout_labels = labeler(returns[holdout_pairs[:, 0]], returns[holdout_pairs[:, 1]])
    return segments, train_pairs, train_labels, holdout_pairs, holdout_labels


def train(cfg: DictConfig, run: Run) -> float:
    """Fit the reward model; returns the held-out accuracy at the end."""
    if cfg.algo.data == "text":
        return train_text(cfg, run)
    args = cfg.algo
    if run.resumed:  # the data were saved by the interrupted run
        segments = load_segments(run.dir / "segments.npz")
        train_pairs, train_labels, holdout_pairs, holdout_labels = (
            run.restored["split"][k].numpy() for k in ("train_pairs", "train_labels", "holdout_pairs", "holdout_labels"))
    else:
        segments, train_pairs, train_labels, holdout_pairs, holdout_labels = prepare_data(cfg, run)
        segments.save(run.dir / "segments.npz")
        write_labels(run.dir / "labels.jsonl", segments, np.concatenate([train_pairs, holdout_pairs]),
                     np.concatenate([train_labels, holdout_labels]),
                     ["train"] * len(train_pairs) + ["holdout"] * len(holdout_pairs))
    _, action_space = env_spaces(cfg)
    fitter = fitter_from_config(args, segments.obs.shape[2:], action_space, resolve_device(cfg.device), int(cfg.seed))
    ensemble = fitter.ensemble
    # the fitter stores only the training segments: rows renumbered
    train_rows = np.unique(train_pairs)
    renumber = np.full(len(segments), -1, np.int64)
    renumber[train_rows] = np.arange(len(train_rows))
    next_obs = segments.next_obs if args.use_next_obs else None
    fitter.add(segments.obs[train_rows], segments.actions[train_rows], renumber[train_pairs], train_labels,
               None if next_obs is None else next_obs[train_rows])
    holdout_segments = np.setdiff1d(np.unique(holdout_pairs), train_rows) if segments.rewards is not None else []
    steps_per_epoch = -(-len(train_pairs) // int(args.batch_size))
    run.set_total(int(args.epochs) * steps_per_epoch)

    def stats_now() -> dict[str, float]:
        return evaluate(ensemble, segments, fitter, train_labels, holdout_pairs, holdout_labels, holdout_segments,
                        float(args.random_answer_prob))

    # STATE: what a checkpoint holds (the split is saved, and read back above); a resumed run loads it back here
    counters = Counters(epoch=0)
    split = {"train_pairs": torch.from_numpy(train_pairs), "train_labels": torch.from_numpy(train_labels),
             "holdout_pairs": torch.from_numpy(holdout_pairs), "holdout_labels": torch.from_numpy(holdout_labels)}
    run.track(counters=counters, fitter=fitter, split=lambda: split)
    stats: dict[str, float] = {}
    while counters.epoch < int(args.epochs):
        loss = fitter.fit(1)
        counters.epoch += 1
        global_step = counters.epoch * steps_per_epoch
        if counters.epoch % int(args.eval_interval) == 0 or counters.epoch == int(args.epochs):
            stats = stats_now()
            run.log(global_step, {"losses/preference_loss": loss, **{f"charts/{k}": v for k, v in stats.items()}})
        if run.end_iteration(global_step):
            break
    run.finish(counters.epoch * steps_per_epoch)
    if not run.should_stop:
        stats = stats or stats_now()
        save_reward_model(ensemble, run.dir / "reward_model.pt", segments.env_id,
                          extra={"num_labels": len(train_pairs), "metrics": {k: float(v) for k, v in stats.items()}})
        print(f"rlrun: reward model: held-out accuracy {stats['holdout_accuracy']:.3f}, "
              f"Pearson {stats.get('pearson', float('nan')):.3f} on {len(holdout_segments)} held-out segments; "
              f"written to {run.dir / 'reward_model.pt'}", flush=True)
    return float(stats.get("holdout_accuracy", float("nan")))


def evaluate(ensemble: RewardEnsemble, segments: Segments, fitter: PreferenceFitter, train_labels: np.ndarray,
             holdout_pairs: np.ndarray, holdout_labels: np.ndarray, holdout_segments: np.ndarray,
             random_answer_prob: float) -> dict[str, float]:
    """Training accuracy, held-out accuracy, loss and margin, and the correlations of predicted and true
    returns of the held-out segments (those in no training pair)."""
    train = evaluate_pairs(ensemble, fitter.obs, fitter.actions, fitter.pairs, train_labels, random_answer_prob,
                           fitter.next_obs)
    next_obs = segments.next_obs if ensemble.use_next_obs else None
    rows = np.unique(holdout_pairs)
    renumber = np.zeros(len(segments), np.int64)
    renumber[rows] = np.arange(len(rows))
    held = evaluate_pairs(ensemble, segments.obs[rows], segments.actions[rows], renumber[holdout_pairs],
                          holdout_labels, random_answer_prob, None if next_obs is None else next_obs[rows])
    stats = {"train_accuracy": train["accuracy"], "holdout_accuracy": held["accuracy"],
             "holdout_loss": held["loss"], "margin": held["margin"]}
    if len(holdout_segments) >= 2:
        with torch.no_grad():
            predicted = ensemble.segment_returns(*(None if x is None else torch.as_tensor(x[holdout_segments])
                                                   for x in (segments.obs, segments.actions, next_obs))).mean(0)
        stats["pearson"], stats["spearman"] = correlations(predicted.cpu().numpy(),
                                                           segments.true_returns()[holdout_segments])
    return stats


register(AlgoSpec("reward_model", validate, train, metric="held-out accuracy", task="both"))  # no policy: nothing to play
