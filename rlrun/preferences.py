"""Preferences between trajectory segments: the Bradley-Terry model, its loss, labelers and data files.

The Bradley-Terry model (Bradley and Terry 1952) says that an item with latent reward R_a is
preferred to one with R_b with probability exp(R_a) / (exp(R_a) + exp(R_b)) = sigmoid(R_a - R_b).
Christiano et al. 2017 ("Deep reinforcement learning from human preferences", NeurIPS) apply it to
segments of trajectories, with R the sum of a learned per-step reward r(s, a) over the segment, and
fit r by the cross-entropy between this probability and the labels.

A label mu is the probability that the FIRST segment of a pair is preferred: 1 (first), 0 (second)
or 0.5 (a tie, "equally good").

Data formats (validated on load, errors name the file, line and key):

* segments, ``.npz``: ``obs`` (M, L, *obs_shape), ``actions`` (M, L) int64 or (M, L, A) float32,
  optional ``rewards`` (M, L) float32 (the true rewards, for synthetic labels and correlations),
  optional ``next_obs`` (M, L, *obs_shape) (the observation each step led to, for rewards r(s, a, s')),
  ``ids`` (M,) int64 distinct segment ids, and ``env_id`` (a 0-d string);
* labels, JSONL: one object per line, ``{"a": <id>, "b": <id>, "label": 0 | 0.5 | 1}``, so that
  answers collected from people plug in unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rlrun.config import ConfigError

LABELS = (0.0, 0.5, 1.0)  # allowed labels: second preferred, tie, first preferred


def bradley_terry_probability(reward_a: torch.Tensor | float, reward_b: torch.Tensor | float,
                              random_answer_prob: float = 0.0) -> torch.Tensor:
    """P(a preferred to b) = (1 - eps) * exp(R_a) / (exp(R_a) + exp(R_b)) + eps / 2.

    ``eps = random_answer_prob`` is the chance that the labeler answers uniformly at random
    (Christiano et al. 2017, section 2.2.3, use 0.1). Works elementwise on tensors of any shape.
    """
    reward_a, reward_b = torch.as_tensor(reward_a, dtype=torch.float64), torch.as_tensor(reward_b, dtype=torch.float64)
    return (1.0 - random_answer_prob) * torch.sigmoid(reward_a - reward_b) + random_answer_prob / 2.0


def preference_loss(returns_a: torch.Tensor, returns_b: torch.Tensor, labels: torch.Tensor,
                    random_answer_prob: float = 0.0, margin: torch.Tensor | float = 0.0,
                    center_coef: float = 0.0) -> torch.Tensor:
    """Mean Bradley-Terry cross-entropy of a batch of labelled pairs.

    loss = -mean(mu log P(a > b) + (1 - mu) log P(b > a)) + center_coef * mean((R_a + R_b)^2)

    where P(a > b) = (1 - eps) sigmoid(R_a - R_b - m) + eps / 2 for mu = 1, and symmetrically for
    mu = 0 (the preferred return must exceed the other by the margin m, as in TRL's RewardTrainer);
    ties (mu = 0.5) use no margin. With eps = 0 and m = 0 this is logistic regression on
    R_a - R_b. The centering term (TRL's ``center_rewards_coefficient``, Eisenstein et al. 2023)
    keeps the rewards near zero.

    Args:
        returns_a, returns_b: (B,) float predicted returns of the two segments (sums of r over steps).
        labels: (B,) float in {0, 0.5, 1}, the probability that segment a is preferred.
        random_answer_prob: eps in [0, 1).
        margin: a float or (B,) tensor m >= 0.
        center_coef: weight of the centering term (>= 0).

    Returns:
        A 0-d tensor.
    """
    labels = labels.to(returns_a.dtype)
    diff = returns_a - returns_b
    margin = torch.as_tensor(margin, dtype=diff.dtype, device=diff.device)
    strict = (labels != 0.5).to(diff.dtype)
    sign = 2.0 * labels - 1.0  # +1 when a is preferred, -1 when b is, 0 for a tie
    diff = diff - sign * strict * margin
    if random_answer_prob > 0:
        p_a = (1.0 - random_answer_prob) * torch.sigmoid(diff) + random_answer_prob / 2.0
        nll = -(labels * torch.log(p_a) + (1.0 - labels) * torch.log1p(-p_a))
    else:  # log-sigmoid form: exact for large |diff|
        nll = -(labels * F.logsigmoid(diff) + (1.0 - labels) * F.logsigmoid(-diff))
    loss = nll.mean()
    if center_coef > 0:
        loss = loss + center_coef * ((returns_a + returns_b) ** 2).mean()
    return loss


class SyntheticLabeler:
    """Labels pairs by their true returns, as the synthetic oracle of Christiano et al. 2017.

    Args:
        mode: ``deterministic`` (the higher true return is preferred, equal returns tie) or
            ``bradley_terry`` (mu ~ Bernoulli(sigmoid((R_a - R_b) / temperature)); equal returns tie).
        temperature: > 0, the return difference that makes the Bradley-Terry odds e:1.
        random_answer_prob: in [0, 1], the chance of answering 0 or 1 uniformly at random instead.
        seed: seed of the labeler's own generator.
    """

    def __init__(self, mode: str = "deterministic", temperature: float = 1.0, random_answer_prob: float = 0.0,
                 seed: int = 0):
        if mode not in ("deterministic", "bradley_terry"):
            raise ValueError(f"labeler mode {mode!r}: expected deterministic or bradley_terry")
        self.mode, self.temperature, self.random_answer_prob = mode, float(temperature), float(random_answer_prob)
        self.rng = np.random.default_rng(seed)

    def __call__(self, returns_a: np.ndarray, returns_b: np.ndarray) -> np.ndarray:
        """(P,) true returns of the first and second segments -> (P,) float32 labels in {0, 0.5, 1}."""
        returns_a, returns_b = np.asarray(returns_a, np.float64), np.asarray(returns_b, np.float64)
        diff = returns_a - returns_b
        if self.mode == "deterministic":
            labels = (diff > 0).astype(np.float64)
        else:
            p = 1.0 / (1.0 + np.exp(-np.clip(diff / self.temperature, -700, 700)))
            labels = (self.rng.random(diff.shape) < p).astype(np.float64)
        labels[diff == 0] = 0.5
        random = self.rng.random(diff.shape) < self.random_answer_prob
        labels[random] = self.rng.integers(0, 2, size=int(random.sum()))
        return labels.astype(np.float32)


# ---- segments --------------------------------------------------------------------------------

@dataclass
class Segments:
    """M fixed-length clips of (observation, action), with their true rewards where known.

    Attributes:
        obs: (M, L, *obs_shape) observations (float32 vectors or uint8 frames).
        actions: (M, L) int64 discrete actions or (M, L, A) float32 continuous ones.
        rewards: (M, L) float32 true rewards, or None (e.g. clips shown to people).
        ids: (M,) int64 distinct ids, what labels files refer to.
        env_id: the gymnasium id of the env they come from.
        next_obs: (M, L, *obs_shape) observations each step led to (the episode's last one where it ended),
            or None; rewards r(s, a, s') need them.
    """

    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray | None
    ids: np.ndarray
    env_id: str
    next_obs: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def length(self) -> int:
        """Steps per segment L."""
        return int(self.obs.shape[1])

    def true_returns(self) -> np.ndarray:
        """(M,) float64 sums of the true rewards. Raises ValueError without rewards."""
        if self.rewards is None:
            raise ValueError("these segments have no true rewards")
        return self.rewards.astype(np.float64).sum(axis=1)

    def index_of(self) -> dict[int, int]:
        """Segment id -> row."""
        return {int(i): row for row, i in enumerate(self.ids)}

    def save(self, path: str | Path) -> Path:
        """Write the segments as an uncompressed ``.npz`` (see the module docstring)."""
        path = Path(path)
        arrays = {"obs": self.obs, "actions": self.actions, "ids": self.ids, "env_id": np.array(self.env_id)}
        if self.rewards is not None:
            arrays["rewards"] = self.rewards
        if self.next_obs is not None:
            arrays["next_obs"] = self.next_obs
        tmp = path.with_name(f".tmp_{path.name}")
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        tmp.replace(path)
        return path


def load_segments(path: str | Path) -> Segments:
    """Read and validate a segments ``.npz``.

    Raises:
        ConfigError: naming the file and the array that is missing, of the wrong shape or dtype,
            or duplicated ids; or if the file cannot be read.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"segments file {path} cannot be read: {exc}") from None
    for key in ("obs", "actions", "ids", "env_id"):
        if key not in arrays:
            raise ConfigError(f"segments file {path} has no array {key!r}: expected obs, actions, ids, env_id "
                              "and optionally rewards and next_obs")
    obs, actions, ids = arrays["obs"], arrays["actions"], arrays["ids"]
    m = len(ids)
    if obs.ndim < 3 or obs.shape[0] != m:
        raise ConfigError(f"segments file {path}: obs has shape {obs.shape}: expected (M, L, *obs_shape) "
                          f"with M = {m} ids")
    length = obs.shape[1]
    if actions.shape[:2] != (m, length) or actions.ndim not in (2, 3):
        raise ConfigError(f"segments file {path}: actions has shape {actions.shape}: expected ({m}, {length}) "
                          f"or ({m}, {length}, A)")
    rewards = arrays.get("rewards")
    if rewards is not None and rewards.shape != (m, length):
        raise ConfigError(f"segments file {path}: rewards has shape {rewards.shape}: expected ({m}, {length})")
    next_obs = arrays.get("next_obs")
    if next_obs is not None and (next_obs.shape != obs.shape or next_obs.dtype != obs.dtype):
        raise ConfigError(f"segments file {path}: next_obs is {next_obs.dtype} of shape {next_obs.shape}: expected "
                          f"{obs.dtype} of obs's shape {obs.shape}")
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer) or len(np.unique(ids)) != m:
        raise ConfigError(f"segments file {path}: ids must be {m} distinct integers")
    return Segments(obs, actions.astype(np.int64) if actions.ndim == 2 else actions.astype(np.float32),
                    None if rewards is None else rewards.astype(np.float32), ids.astype(np.int64),
                    str(arrays["env_id"]), next_obs)


def cut_segments(obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, episode_end: np.ndarray,
                 length: int, next_obs: np.ndarray | None = None) -> list[tuple[np.ndarray, ...]]:
    """Cut a (T, N) rollout into clips of ``length`` consecutive steps of one env within one episode.

    Args:
        obs: (T, N, *obs_shape) observations the actions were taken in.
        actions: (T, N, ...) actions; rewards: (T, N) true rewards.
        episode_end: (T, N) bool, the episode ended with step t (the next step starts a new one).
        length: steps per clip L.
        next_obs: optional (T, N, *obs_shape) observations each step led to (the episode's last one where
            it ended), for rewards r(s, a, s').

    Returns:
        (obs (L, *obs_shape), actions (L, ...), rewards (L,)[, next_obs (L, *obs_shape)]) clips, env by
        env, non-overlapping: copies, so the rollout's buffers may be reused.
    """
    arrays = (obs, actions, rewards) if next_obs is None else (obs, actions, rewards, next_obs)
    clips = []
    for env in range(obs.shape[1]):
        start = 0
        for t in range(obs.shape[0]):
            if t + 1 - start == length:
                clips.append(tuple(x[start:t + 1, env].copy() for x in arrays))
                start = t + 1
            elif episode_end[t, env]:
                start = t + 1  # a clip never spans two episodes
    return clips


# ---- labels files --------------------------------------------------------------------------------

def read_jsonl(path: str | Path, required: tuple[str, ...]) -> list[tuple[int, dict]]:
    """(line number, object) of every non-blank line of a JSONL file that has the ``required`` keys.

    Raises:
        ConfigError: if the file cannot be read, a line is not a JSON object, or lacks a key
            (naming the file, the line and the key).
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} cannot be read: {exc}") from None
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path} line {number} is not valid JSON: {exc.msg}") from None
        if not isinstance(record, dict):
            raise ConfigError(f"{path} line {number} is not a JSON object: expected keys {', '.join(required)}")
        for key in required:
            if key not in record:
                raise ConfigError(f"{path} line {number} has no key {key!r}: expected keys {', '.join(required)}")
        records.append((number, record))
    if not records:
        raise ConfigError(f"{path} has no records: expected one JSON object per line")
    return records


def load_labels(path: str | Path, segments: Segments) -> tuple[np.ndarray, np.ndarray]:
    """Read a labels JSONL file about ``segments``.

    Returns:
        ((P, 2) int64 rows of the first and second segment, (P,) float32 labels).

    Raises:
        ConfigError: naming the line for an unknown segment id, a pair of a segment with itself,
            or a label outside {0, 0.5, 1}.
    """
    rows = segments.index_of()
    pairs, labels = [], []
    for number, record in read_jsonl(path, ("a", "b", "label")):
        for key in ("a", "b"):
            if not isinstance(record[key], int) or isinstance(record[key], bool) or record[key] not in rows:
                raise ConfigError(f"{path} line {number}: {key}={record[key]!r} names no segment: expected one of "
                                  f"the {len(rows)} ids in the segments file (e.g. {', '.join(map(str, list(rows)[:3]))})")
        if record["a"] == record["b"]:
            raise ConfigError(f"{path} line {number}: a segment is compared with itself (a=b={record['a']})")
        label = record["label"]
        if isinstance(label, bool) or not isinstance(label, (int, float)) or float(label) not in LABELS:
            raise ConfigError(f"{path} line {number}: label={label!r} is not allowed: expected 0, 0.5 or 1 "
                              "(1 = a preferred, 0 = b preferred, 0.5 = equally good)")
        pairs.append((rows[record["a"]], rows[record["b"]]))
        labels.append(float(label))
    return np.array(pairs, np.int64), np.array(labels, np.float32)


def write_labels(path: str | Path, segments: Segments, pairs: np.ndarray, labels: np.ndarray,
                 splits: list[str] | None = None) -> Path:
    """Write (P, 2) rows of ``segments`` and their labels as a labels JSONL file (ids, not rows), with a
    "split" key per line when ``splits`` (P strings) is given (ignored by :func:`load_labels`)."""
    path = Path(path)
    with open(path, "w", encoding="utf-8") as f:
        for p, ((i, j), label) in enumerate(zip(pairs, labels)):
            record = {"a": int(segments.ids[i]), "b": int(segments.ids[j]), "label": float(label)}
            if splits is not None:
                record["split"] = splits[p]
            f.write(json.dumps(record) + "\n")
    return path


# ---- statistics ------------------------------------------------------------------------------------

def correlations(predicted: np.ndarray, true: np.ndarray) -> tuple[float, float]:
    """(Pearson, Spearman) correlation of two (M,) arrays (scipy.stats); nan when one is constant."""
    from scipy import stats

    predicted, true = np.asarray(predicted, np.float64), np.asarray(true, np.float64)
    if len(predicted) < 2 or np.ptp(predicted) == 0 or np.ptp(true) == 0:
        return float("nan"), float("nan")
    return float(stats.pearsonr(predicted, true)[0]), float(stats.spearmanr(predicted, true)[0])
