"""Preference data on disk: trajectory segments, labels of pairs of them, and text preference pairs.

Formats (validated on load; errors name the file, line and key):

* segments, ``.npz``: ``obs`` (M, L, *obs_shape), ``actions`` (M, L) int64 or (M, L, A) float32,
  optional ``rewards`` (M, L) float32 (the true rewards, for synthetic labels and correlations),
  optional ``next_obs`` (M, L, *obs_shape) (the observation each step led to, for rewards r(s, a, s')),
  ``ids`` (M,) int64 distinct segment ids, and ``env_id`` (a 0-d string);
* labels, JSONL: one object per line, ``{"a": <id>, "b": <id>, "label": 0 | 0.5 | 1}`` where 1 means
  segment a was preferred, so that answers collected from people plug in unchanged;
* text pairs, JSONL: ``{"prompt": ..., "chosen": ..., "rejected": ...}`` per line, the format of TRL's
  RewardTrainer and of public preference datasets.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rlrun.core.config import ConfigError

LABELS = (0.0, 0.5, 1.0)  # allowed labels: second preferred, tie, first preferred
PAIR_KEYS = ("prompt", "chosen", "rejected")  # the keys of every line of a text pairs file (TRL's names)
REPR_LIMIT = 60  # characters of an offending value quoted in an error message


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


# ---- text pairs ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TextPair:
    """One preference: for ``prompt``, the response ``chosen`` was preferred to ``rejected``."""

    prompt: str
    chosen: str
    rejected: str


def _quote(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= REPR_LIMIT else text[:REPR_LIMIT] + "..."


def load_text_pairs(path: str | Path) -> list[TextPair]:
    """Read and validate a JSONL file of text preference pairs.

    Every non-blank line is an object with the string keys ``prompt``, ``chosen`` and ``rejected``
    (more keys are ignored). ``chosen`` and ``rejected`` must be non-empty after ``strip()``; the
    prompt may be empty.

    Returns:
        The pairs in file order.

    Raises:
        ConfigError: naming the file and line of the first bad one: unreadable file, invalid JSON,
            a missing key, a value that is not a string, an empty response, or a file without pairs.
    """
    pairs = []
    for number, record in read_jsonl(path, PAIR_KEYS):
        for key in PAIR_KEYS:
            if not isinstance(record[key], str):
                raise ConfigError(f"{path} line {number}: {key}={_quote(record[key])} is not a string: "
                                  f"expected text for {', '.join(PAIR_KEYS)}")
        for key in ("chosen", "rejected"):
            if not record[key].strip():
                raise ConfigError(f"{path} line {number}: {key} is empty: expected a non-empty response")
        pairs.append(TextPair(record["prompt"], record["chosen"], record["rejected"]))
    return pairs


# ---- demonstrations and rankings for language models ------------------------------------------------

SFT_KEYS = ("prompt", "response")  # the keys of every line of a supervised fine-tuning file
RANKING_KEYS = ("prompt", "responses", "ranking")  # the keys of every line of a rankings file


@dataclass(frozen=True)
class TextDemonstration:
    """One demonstration for supervised fine-tuning: the answer ``response`` to ``prompt``."""

    prompt: str
    response: str
    line: int = field(default=0, compare=False)  # its line in the file it was read from (for error messages)


@dataclass(frozen=True)
class TextRanking:
    """K answers to one prompt ranked by a labeller: ``ranks[i]`` is the rank of ``responses[i]``, 1 the best;
    equal ranks are ties."""

    prompt: str
    responses: tuple[str, ...]
    ranks: tuple[int, ...]

    def pairs(self) -> list[tuple[int, int, float]]:
        """All K-choose-2 comparisons (Ouyang et al. 2022, section 3.5), as (i, j, label) with i < j: label 1
        when response i is ranked better, 0 when response j is, 0.5 for a tie."""
        out = []
        for i in range(len(self.responses)):
            for j in range(i + 1, len(self.responses)):
                a, b = self.ranks[i], self.ranks[j]
                out.append((i, j, 1.0 if a < b else 0.0 if a > b else 0.5))
        return out


def _check_text(path: str | Path, number: int, key: str, value: Any, allow_empty: bool = False) -> str:
    """``value`` if it is a string (non-empty after strip() unless ``allow_empty``); else one ConfigError."""
    if not isinstance(value, str):
        raise ConfigError(f"{path} line {number}: {key}={_quote(value)} is not a string: expected text")
    if not allow_empty and not value.strip():
        raise ConfigError(f"{path} line {number}: {key} is empty: expected a non-empty response")
    return value


def load_demonstrations(path: str | Path) -> list[TextDemonstration]:
    """Read and validate a JSONL file of demonstrations: ``{"prompt": ..., "response": ...}`` per line (the prompt
    may be empty, the response may not; more keys are ignored).

    Raises:
        ConfigError: naming the file and line of the first bad record (see :func:`read_jsonl`).
    """
    return [TextDemonstration(_check_text(path, n, "prompt", r["prompt"], allow_empty=True),
                              _check_text(path, n, "response", r["response"]), n)
            for n, r in read_jsonl(path, SFT_KEYS)]


def load_prompts(path: str | Path) -> list[tuple[int, str]]:
    """Read and validate a JSONL file of prompts, ``{"prompt": ...}`` per line (a non-empty string; more keys, e.g.
    a demonstrations file's ``response``, are ignored).

    Returns:
        (line number, prompt) of every record, in file order.

    Raises:
        ConfigError: naming the file and line of the first bad record (see :func:`read_jsonl`).
    """
    return [(n, _check_text(path, n, "prompt", r["prompt"])) for n, r in read_jsonl(path, ("prompt",))]


def load_rankings(path: str | Path) -> list[TextRanking]:
    """Read and validate a JSONL file of K-way rankings: ``{"prompt": ..., "responses": [K strings], "ranking":
    [K integer ranks]}`` per line, K >= 2, rank 1 the best, equal ranks for ties.

    Raises:
        ConfigError: naming the file and line of the first bad record: a missing key, a response that is not a
            non-empty string, fewer than 2 responses, or a ranking that is not one integer >= 1 per response.
    """
    rankings = []
    for number, record in read_jsonl(path, RANKING_KEYS):
        prompt = _check_text(path, number, "prompt", record["prompt"], allow_empty=True)
        responses, ranks = record["responses"], record["ranking"]
        if not isinstance(responses, list) or len(responses) < 2:
            raise ConfigError(f"{path} line {number}: responses={_quote(responses)} is not allowed: expected a "
                              "list of at least 2 responses")
        texts = tuple(_check_text(path, number, f"responses[{i}]", r) for i, r in enumerate(responses))
        if (not isinstance(ranks, list) or len(ranks) != len(texts)
                or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in ranks)):
            raise ConfigError(f"{path} line {number}: ranking={_quote(ranks)} is not allowed: expected one integer "
                              f"rank >= 1 per response ({len(texts)}), 1 the best, equal ranks for ties")
        rankings.append(TextRanking(prompt, texts, tuple(ranks)))
    return rankings


def ranking_pairs(rankings: list[TextRanking]) -> tuple[list[TextPair], list[float]]:
    """Every ranking expanded into its K-choose-2 pairs: (pairs, labels), label 1 for a strict preference (the
    better response is ``chosen``) and 0.5 for a tie (the first-listed response is ``chosen``)."""
    pairs, labels = [], []
    for ranking in rankings:
        for i, j, label in ranking.pairs():
            better, worse = (j, i) if label == 0.0 else (i, j)
            pairs.append(TextPair(ranking.prompt, ranking.responses[better], ranking.responses[worse]))
            labels.append(1.0 if label != 0.5 else 0.5)
    return pairs, labels
