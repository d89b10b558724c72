"""People's answers to comparisons: what a labelling page asks, and how each answer reaches the disk.

Christiano et al. 2017 had people compare two short clips of the agent ("left better, right better, equally
good, can't tell"); Ouyang et al. 2022 had labellers rank K answers to one prompt. A :class:`LabelStore` serves
such questions from a source and appends every answer to a JSONL file, flushed and fsynced before the call
returns, in the format the rest of rlrun reads:

* segments (a segments ``.npz``, a run directory that has ``segments.npz``, or a pbrl run with
  ``algo.labeler=human``): ``{"a": id, "b": id, "label": 1 | 0.5 | 0, ...}``, read by ``algo.labels_path``
  (:func:`rlrun.rlhf.preference_data.load_labels`); 1 means the left clip ``a`` was preferred;
* text pairs (``{"prompt", "chosen", "rejected"}`` lines) and rankings (``{"prompt", "responses", "ranking"}``):
  a rankings file, read by ``algo.rankings_path``; a pair becomes a ranking of its two responses (equal ranks
  for "equally good"), so ties are kept.

Every answer line also carries ``labeler`` (the name typed into the page), ``time`` (UTC, ISO 8601) and
``item`` (the question's id); the readers ignore extra keys. "Can't tell" is not a label: skipped questions go
to ``<output>.skipped.jsonl`` so that they are not asked again, and undo removes them from there too.

Guarantees: an answer is on disk before the page is told it was taken; a question is handed to one browser
session at a time (a lease of ``LEASE_SECONDS``, renewed when the same session asks again), an answer is taken
only for a question served to that session and not yet answered; undo rewrites the file atomically (a
temporary file renamed over it), so a reader, such as the pbrl run, sees the old or the new file, never half
of one. One store per output file: a second server on the same file is refused (an exclusive ``flock``).

The queue of a pbrl run (``<run dir>/labelling/``, written by :class:`HumanQueue`): ``meta.json`` (env id,
observation shape), ``segments/<id>.npz`` (each queued clip's observations, actions and, for synthetic answers in
tests, true rewards), ``queue.jsonl`` (``{"a", "b"}`` per requested pair, appended by the run) and
``labels.jsonl`` (the answers, appended by the page).
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from rlrun.core.config import ConfigError
from rlrun.rlhf.preference_data import LABELS, PAIR_KEYS, RANKING_KEYS, load_rankings, load_segments, \
    load_text_pairs, read_jsonl

LEASE_SECONDS = 600.0  # a question served to one session is not served to another for this long
QUEUE_DIR = "labelling"  # <pbrl run dir>/labelling/
SEGMENTS_FILE = "segments.npz"  # what a reward_model run directory holds
SOURCE_KINDS = ("segments", "text", "ranking")
FORMATS = ("a segments .npz (obs, actions, ids, env_id), a run directory with segments.npz or labelling/queue.jsonl "
           "(a pbrl run with algo.labeler=human), a text-pairs JSONL (prompt, chosen, rejected) or a rankings "
           "JSONL (prompt, responses, ranking)")


class AnswerError(ValueError):
    """An answer the store refuses; ``status`` is the HTTP status a server should answer with (404 unknown
    question, 409 not served to this session or already answered, 422 a malformed answer)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Item:
    """One question. ``id``: a string unique in its source; ``kind``: segments, text or ranking; ``data``: what the
    page shows (segments: ``a``, ``b`` ids; text and ranking: ``prompt`` and ``responses`` in display order)."""

    id: str
    kind: str
    data: dict[str, Any]


# ---- sources ------------------------------------------------------------------------------------------------

class SegmentSource:
    """Pairs of clips from a segments file: the pairs of ``pairs_from`` (a labels file, e.g. to have people relabel
    the pairs a run chose) or ``num_pairs`` random pairs (default: the segments in a seeded random order, paired
    two by two, so each clip is seen once)."""

    kind = "segments"

    def __init__(self, path: Path, num_pairs: int | None = None, pairs_from: Path | None = None, seed: int = 0):
        self.path = path
        self.segments = load_segments(path)
        self.env_id = self.segments.env_id
        self.rows = self.segments.index_of()
        if pairs_from is not None:
            pairs = [(int(r["a"]), int(r["b"])) for _, r in read_jsonl(pairs_from, ("a", "b"))]
            unknown = [p for p in pairs if p[0] not in self.rows or p[1] not in self.rows or p[0] == p[1]]
            if unknown:
                raise ConfigError(f"--pairs-from {pairs_from}: pair a={unknown[0][0]}, b={unknown[0][1]} names no two "
                                  f"distinct segments of {path}")
        else:
            ids = [int(i) for i in self.segments.ids]
            if len(ids) < 2:
                raise ConfigError(f"segments file {path} has {len(ids)} segment: expected at least 2 to compare")
            rng = random.Random(seed)
            order = rng.sample(ids, len(ids))
            pairs = [(order[k], order[k + 1]) for k in range(0, len(order) - 1, 2)]
            while num_pairs is not None and len(pairs) < num_pairs:  # more pairs than disjoint ones: random ones
                a, b = rng.sample(ids, 2)
                pairs.append((a, b))
            pairs = pairs[:num_pairs] if num_pairs is not None else pairs
        self._items = [Item(f"{a}-{b}", self.kind, {"a": a, "b": b}) for a, b in dict.fromkeys(pairs)]

    def items(self) -> list[Item]:
        return self._items

    def clip(self, segment_id: int) -> np.ndarray:
        """(L, *obs_shape) observations of one segment; KeyError if unknown."""
        return self.segments.obs[self.rows[segment_id]]

    @staticmethod
    def record(item: Item, answer: dict[str, Any]) -> dict[str, Any]:
        return {"a": item.data["a"], "b": item.data["b"], "label": answer["label"]}

    @property
    def obs_shape(self) -> tuple[int, ...]:
        return tuple(self.segments.obs.shape[2:])


class QueueSource:
    """The pairs a pbrl run with ``algo.labeler=human`` asks about (:class:`HumanQueue`), read again whenever the
    run has appended to its queue."""

    kind = "segments"

    def __init__(self, run_dir: Path):
        self.dir = run_dir / QUEUE_DIR
        try:
            meta = json.loads((self.dir / "meta.json").read_text(encoding="utf-8"))
            self.env_id, self.obs_shape = str(meta["env_id"]), tuple(int(n) for n in meta["obs_shape"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{self.dir / 'meta.json'} cannot be read ({exc}): expected the queue of a pbrl run "
                              "with algo.labeler=human") from None
        self._stamp: tuple[int, int] | None = None
        self._items: list[Item] = []

    def items(self) -> list[Item]:
        path = self.dir / "queue.jsonl"
        stat = path.stat() if path.exists() else None
        stamp = (stat.st_size, stat.st_mtime_ns) if stat else (0, 0)
        if stamp != self._stamp:
            pairs = [(int(r["a"]), int(r["b"])) for _, r in read_jsonl(path, ("a", "b"))] if stat and stat.st_size else []
            self._items = [Item(f"{a}-{b}", self.kind, {"a": a, "b": b}) for a, b in dict.fromkeys(pairs)]
            self._stamp = stamp
        return self._items

    def clip(self, segment_id: int) -> np.ndarray:
        with np.load(_clip_path(self.dir, segment_id), allow_pickle=False) as data:
            return data["obs"]

    record = staticmethod(SegmentSource.record)


class TextSource:
    """Text pairs (two responses to compare) or rankings (K responses to order), each shown in a seeded random
    order so that the file's order (chosen first, best first) does not lead the labeller."""

    def __init__(self, path: Path, kind: str, seed: int = 0):
        self.path, self.kind = path, kind
        rng = random.Random(seed)
        if kind == "text":
            records = [(p.prompt, [p.chosen, p.rejected]) for p in load_text_pairs(path)]
        else:
            records = [(r.prompt, list(r.responses)) for r in load_rankings(path)]
        self._items = []
        for number, (prompt, responses) in enumerate(records, start=1):
            shown = rng.sample(responses, len(responses))
            self._items.append(Item(f"{'p' if kind == 'text' else 'r'}{number}", kind,
                                    {"prompt": prompt, "responses": shown}))

    def items(self) -> list[Item]:
        return self._items

    @staticmethod
    def record(item: Item, answer: dict[str, Any]) -> dict[str, Any]:
        responses = item.data["responses"]
        if item.kind == "text":
            label = answer["label"]  # 1: the left (first shown) response is better
            ranking = [1, 2] if label == 1.0 else [2, 1] if label == 0.0 else [1, 1]
        else:
            ranking = answer["ranking"]
        return {"prompt": item.data["prompt"], "responses": list(responses), "ranking": ranking}


def open_source(path: str | Path, num_pairs: int | None = None, pairs_from: str | Path | None = None,
                seed: int = 0) -> Any:
    """The source a path names: a segments ``.npz``, a run directory (a pbrl queue or ``segments.npz``), a text
    pairs or a rankings JSONL (told apart by the keys of the first record).

    Raises:
        ConfigError: if the path does not exist or is none of these formats (naming the path and the formats).
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path} does not exist: expected {FORMATS}")
    if path.is_dir():
        if (path / QUEUE_DIR / "meta.json").is_file():
            return QueueSource(path)
        if (path / SEGMENTS_FILE).is_file():
            return SegmentSource(path / SEGMENTS_FILE, num_pairs, None if pairs_from is None else Path(pairs_from), seed)
        raise ConfigError(f"{path} is a directory without {SEGMENTS_FILE} or {QUEUE_DIR}/meta.json: expected {FORMATS}")
    if path.suffix == ".npz":
        return SegmentSource(path, num_pairs, None if pairs_from is None else Path(pairs_from), seed)
    try:
        with open(path, encoding="utf-8") as f:
            first = next((line for line in f if line.strip()), "")
        keys = set(json.loads(first)) if first else set()
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError) as exc:
        raise ConfigError(f"{path} cannot be read as JSONL ({exc}): expected {FORMATS}") from None
    if set(RANKING_KEYS) <= keys:
        return TextSource(path, "ranking", seed)
    if set(PAIR_KEYS) <= keys:
        return TextSource(path, "text", seed)
    raise ConfigError(f"{path} is not a labelling source (its first record has keys {sorted(keys)}): expected {FORMATS}")


def default_output(source: Any) -> Path:
    """Where answers go unless told: ``labels.jsonl`` beside the segments (``<run dir>/labelling/labels.jsonl`` for
    a pbrl queue), ``<name>.human.jsonl`` beside a text source."""
    if isinstance(source, QueueSource):
        return source.dir / "labels.jsonl"
    if isinstance(source, SegmentSource):
        return source.path.parent / "labels.jsonl"
    return source.path.with_name(source.path.stem + ".human.jsonl")


# ---- the store ------------------------------------------------------------------------------------------------

def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _append(path: Path, *records: dict[str, Any]) -> None:
    """JSON lines appended in one write, flushed and fsynced."""
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(json.dumps(record) + "\n" for record in records))
        f.flush()
        os.fsync(f.fileno())


def skipped_path(output: Path) -> Path:
    """Where a store over the answers file ``output`` keeps the skipped ("can't tell") questions."""
    return output.with_name(output.stem + ".skipped.jsonl")


def _clip_path(queue_dir: Path, segment_id: int) -> Path:
    """A queued clip of a pbrl run: ``<run dir>/labelling/segments/<id>.npz``."""
    return queue_dir / "segments" / f"{int(segment_id)}.npz"


def _rewrite(path: Path, lines: list[str]) -> None:
    """Replace ``path`` by ``lines`` atomically (write, fsync, rename)."""
    tmp = path.with_name(f".tmp_{path.name}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()] if path.exists() else []


@dataclass
class _Lease:
    session: str
    expires: float


@dataclass
class LabelStore:
    """Serves a source's questions and writes the answers (see the module docstring).

    Args:
        source: from :func:`open_source`.
        output: the answers file (appended to; answers already in it are not asked again).

    Raises:
        ConfigError: if ``output`` cannot be written, holds lines that are not answers of this kind of source (for
            instance a synthetic labeler's labels, which have no ``item``), or another store holds it.
    """

    source: Any
    output: Path
    lease_seconds: float = LEASE_SECONDS
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _leases: dict[str, _Lease] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.output = Path(self.output)
        self.skipped_path = skipped_path(self.output)
        try:
            existing = _lines(self.output)
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"answers file {self.output} cannot be read: {exc}") from None
        for number, line in enumerate(existing, start=1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            if not isinstance(record, dict) or "item" not in record:
                raise ConfigError(f"{self.output} line {number} is not an answer written by rlrun-label (no 'item' "
                                  "key; e.g. a synthetic labeler's labels): write to another file with --out")
        try:
            self.output.parent.mkdir(parents=True, exist_ok=True)
            self._lock_file = open(self.output.with_name(f".{self.output.name}.lock"), "w")
        except OSError as exc:
            raise ConfigError(f"answers file {self.output} cannot be written: {exc}") from None
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock_file.close()
            raise ConfigError(f"answers file {self.output} is in use by another labelling server: stop it, or "
                              "write to another file with --out") from None

    def close(self) -> None:
        """Release the file lock (the process exiting releases it too)."""
        self._lock_file.close()

    # -- reading the state from disk (the files are the truth: a restart loses nothing) --
    def _done(self) -> tuple[set[str], set[str]]:
        answered = {json.loads(line)["item"] for line in _lines(self.output)}
        skipped = {json.loads(line)["item"] for line in _lines(self.skipped_path)}
        return answered, skipped

    def progress(self) -> dict[str, int]:
        """``answered`` (in the output file), ``skipped`` and ``queued`` (neither yet) questions of the source."""
        with self._lock:
            answered, skipped = self._done()
            items = self.source.items()
            queued = sum(1 for item in items if item.id not in answered and item.id not in skipped)
            return {"answered": len(answered), "skipped": len(skipped), "queued": queued}

    def next_item(self, session: str) -> Item | None:
        """The question to show ``session``: the one it holds a lease on, else the first one neither answered,
        skipped nor leased to another session; None when there is none (for now: a pbrl run may queue more)."""
        with self._lock:
            answered, skipped = self._done()
            now = time.monotonic()
            items = [item for item in self.source.items() if item.id not in answered and item.id not in skipped]
            mine = next((item for item in items if (lease := self._leases.get(item.id))
                         and lease.session == session and lease.expires > now), None)
            if mine is None:
                mine = next((item for item in items if not ((lease := self._leases.get(item.id))
                                                             and lease.session != session and lease.expires > now)),
                            None)
            if mine is not None:
                for item_id in [i for i, lease in self._leases.items() if lease.session == session]:
                    del self._leases[item_id]  # one question per session at a time
                self._leases[mine.id] = _Lease(session, now + self.lease_seconds)
            return mine

    def _served_item(self, session: str, item_id: Any) -> Item:
        """The question ``item_id`` if it is leased to ``session``; AnswerError otherwise."""
        item = next((item for item in self.source.items() if item.id == item_id), None) if isinstance(item_id, str) \
            else None
        if item is None:
            raise AnswerError(404, f"item={item_id!r} is no question of this source")
        lease = self._leases.get(item.id)
        if lease is None or lease.session != session:
            raise AnswerError(409, f"item={item_id!r} was not served to this session (or another session holds it "
                                   "now): answer the question the page shows")
        return item

    def answer(self, session: str, item_id: Any, answer: dict[str, Any], labeler: Any) -> dict[str, Any]:
        """Take an answer: ``{"label": 1 | 0.5 | 0}`` for a pair (1 = left better), ``{"ranking": [K ranks]}`` for
        a ranking (rank 1 the best, equal ranks for ties). Returns the record written.

        Raises:
            AnswerError: 404 for an unknown question, 409 for one not served to ``session`` or already answered,
                422 for a label outside {0, 0.5, 1}, a ranking that is not one rank per response, or no labeler.
        """
        if not isinstance(labeler, str) or not labeler.strip():
            raise AnswerError(422, "labeler is empty: expected the labeller's name")
        with self._lock:
            item = self._served_item(session, item_id)
            answered, skipped = self._done()
            if item.id in answered or item.id in skipped:
                raise AnswerError(409, f"item={item_id!r} is answered already")
            if item.kind == "ranking":
                ranking, k = answer.get("ranking"), len(item.data["responses"])
                if (not isinstance(ranking, list) or len(ranking) != k or not all(
                        isinstance(r, int) and not isinstance(r, bool) and 1 <= r <= k for r in ranking)):
                    raise AnswerError(422, f"ranking={ranking!r} is not allowed: expected {k} integer ranks from 1 "
                                           "(the best) to {k}, equal ranks for ties".replace("{k}", str(k)))
                clean = {"ranking": ranking}
            else:
                label = answer.get("label")
                if isinstance(label, bool) or not isinstance(label, (int, float)) or float(label) not in LABELS:
                    raise AnswerError(422, f"label={label!r} is not allowed: expected 1 (left better), 0 (right "
                                           "better) or 0.5 (equally good)")
                clean = {"label": float(label)}
            record = {**self.source.record(item, clean), "labeler": labeler.strip(), "time": _now(), "item": item.id}
            _append(self.output, record)
            del self._leases[item.id]
            return record

    def skip(self, session: str, item_id: Any, labeler: Any) -> None:
        """"Can't tell": the question is not asked again and gives no label. Raises AnswerError as :meth:`answer`."""
        with self._lock:
            item = self._served_item(session, item_id)
            answered, skipped = self._done()
            if item.id in answered or item.id in skipped:
                raise AnswerError(409, f"item={item_id!r} is answered already")
            _append(self.skipped_path, {"item": item.id, "labeler": str(labeler or "").strip(), "time": _now()})
            del self._leases[item.id]

    def undo(self, session: str, labeler: Any) -> Item | None:
        """Take back ``labeler``'s latest answer or skip (after a restart too: the files say which); the question is
        leased to ``session`` again so the page shows it next. None when there is nothing to undo."""
        if not isinstance(labeler, str) or not labeler.strip():
            return None
        with self._lock:
            latest = None  # (time, file, line index)
            for path in (self.output, self.skipped_path):
                lines = _lines(path)
                for index in range(len(lines) - 1, -1, -1):
                    record = json.loads(lines[index])
                    if record.get("labeler") == labeler.strip():
                        if latest is None or record["time"] >= latest[0]:
                            latest = (record["time"], path, index, record["item"])
                        break
            if latest is None:
                return None
            _, path, index, item_id = latest
            lines = _lines(path)
            _rewrite(path, lines[:index] + lines[index + 1:])
            item = next((item for item in self.source.items() if item.id == item_id), None)
            for other in [i for i, lease in self._leases.items() if lease.session == session]:
                del self._leases[other]
            if item is not None:
                self._leases[item.id] = _Lease(session, time.monotonic() + self.lease_seconds)
            return item


# ---- the pbrl run's side --------------------------------------------------------------------------------------

class HumanQueue:
    """The pairs a pbrl run asks people about, in ``<run dir>/labelling/`` (see the module docstring): the run
    writes clips and pairs, a labelling page (``rlrun-label <run dir>``) writes ``labels.jsonl``."""

    def __init__(self, run_dir: Path, env_id: str, obs_shape: tuple[int, ...]):
        self.dir = Path(run_dir) / QUEUE_DIR
        (self.dir / "segments").mkdir(parents=True, exist_ok=True)
        meta = self.dir / "meta.json"
        if not meta.exists():
            _rewrite(meta, [json.dumps({"env_id": env_id, "obs_shape": list(obs_shape)})])
        self.labels_path = self.dir / "labels.jsonl"

    def add_segment(self, segment_id: int, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray,
                    next_obs: np.ndarray | None = None) -> None:
        """Write one clip (once; later calls for the same id are no-ops), atomically."""
        path = _clip_path(self.dir, segment_id)
        if path.exists():
            return
        arrays = {"obs": obs, "actions": actions, "rewards": rewards}
        if next_obs is not None:
            arrays["next_obs"] = next_obs
        tmp = path.with_name(f".tmp_{path.name}")
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)

    def segment(self, segment_id: int) -> dict[str, np.ndarray]:
        """The arrays of one written clip."""
        with np.load(_clip_path(self.dir, segment_id), allow_pickle=False) as data:
            return {key: data[key] for key in data.files}

    def enqueue(self, pairs: list[tuple[int, int]]) -> None:
        """Append pairs of written clips to the queue (flushed and fsynced)."""
        _append(self.dir / "queue.jsonl", *({"a": int(a), "b": int(b)} for a, b in pairs))

    def queued(self) -> list[tuple[int, int]]:
        """Every pair ever queued, in order."""
        path = self.dir / "queue.jsonl"
        return [(int(r["a"]), int(r["b"])) for r in map(json.loads, _lines(path))]

    def skipped(self) -> set[tuple[int, int]]:
        """(a, b) pairs people skipped ("can't tell"): they give no label, and a run asks other pairs instead."""
        out = set()
        for line in _lines(skipped_path(self.labels_path)):
            try:
                a, b = json.loads(line)["item"].split("-")
            except (json.JSONDecodeError, KeyError, ValueError):
                continue  # a line still being written
            out.add((int(a), int(b)))
        return out

    def answers(self) -> list[tuple[int, int, float]]:
        """(a, b, label) of every answer in ``labels.jsonl`` so far, in file order (a last line still being written
        is left for the next call)."""
        out = []
        for line in _lines(self.labels_path):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                break
            out.append((int(record["a"]), int(record["b"]), float(record["label"])))
        return out
