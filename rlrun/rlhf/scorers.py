"""Named "true" scorers of text responses, and preference labels from their scores.

A scorer plays the part of the people whose judgments RLHF learns: it maps (prompts, responses) to one float
per response, and :func:`scorer_labels` turns the scores of two responses into a preference label, exactly or
as a Bradley-Terry sample. The language-model tasks use them as the ground truth that a learned reward model
and the fine-tuned policy are measured against.

    vader   the compound sentiment score of the response alone, in [-1, 1], from VADER (Hutto and Gilbert
            2014, "VADER: A Parsimonious Rule-based Model for Sentiment Analysis of Social Media Text",
            ICWSM; the PyPI package vaderSentiment): the sum of the valences of the lexicon's words, adjusted
            by its rules (negation, boosters, "but", capitals, "!"), normalised as x / sqrt(x**2 + 15).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from rlrun.core.config import ConfigError
from rlrun.rlhf.preferences import SyntheticLabeler

Scorer = Callable[[list[str], list[str]], np.ndarray]

_analyzer = None  # the one VADER SentimentIntensityAnalyzer of this process (loading its lexicon takes ~0.1 s)


def _vader_analyzer():
    global _analyzer
    if _analyzer is None:
        try:
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
        except ImportError as error:
            raise ConfigError("the vader scorer needs the vaderSentiment package: "
                              "pip install -e \".[text]\"") from error
        _analyzer = SentimentIntensityAnalyzer()
    return _analyzer


def vader(prompts: list[str], responses: list[str]) -> np.ndarray:
    """VADER's compound score of each response alone (the prompt is ignored): (N,) float64 in [-1, 1], 0 for
    text without sentiment words. VADER rounds it to 4 decimals."""
    analyzer = _vader_analyzer()
    return np.array([analyzer.polarity_scores(response)["compound"] for response in responses], dtype=np.float64)


SCORERS: dict[str, Scorer] = {"vader": vader}  # the scorer names a config may use


def get_scorer(name: str, key: str = "scorer") -> Scorer:
    """The scorer called ``name``: a function (prompts, responses) -> (N,) float64 scores, N = len(responses).

    Raises:
        ConfigError: an unknown name (the message names ``key``, the value and the allowed names), or a
            scorer whose package is missing (``pip install -e ".[text]"``); the package is imported here, so
            the error comes before anything is trained.
    """
    if name not in SCORERS:
        raise ConfigError(f"{key}={name!r} is not allowed: expected one of {', '.join(sorted(SCORERS))}")
    if name == "vader":
        _vader_analyzer()
    return SCORERS[name]


def scorer_labels(scores_a: np.ndarray, scores_b: np.ndarray, rng: np.random.Generator | None = None,
                  temperature: float = 0.0) -> np.ndarray:
    """Preference labels of response a over response b from their (P,) scores: (P,) float64 in {0, 0.5, 1}.

    With temperature 0 the label is 1.0 where a scores higher, 0.0 where lower and 0.5 for a tie, without
    randomness. With temperature > 0 it is a Bradley-Terry sample (Bradley and Terry 1952): 1 with probability
    sigmoid((a - b) / temperature), drawn from ``rng``; equal scores still give 0.5, the label's expectation.
    The sampling is rlrun.rlhf.preferences.SyntheticLabeler's, drawing from ``rng``.

    Raises:
        ValueError: shapes that differ, a negative temperature, or temperature > 0 without ``rng``.
    """
    scores_a, scores_b = np.asarray(scores_a, np.float64), np.asarray(scores_b, np.float64)
    if scores_a.shape != scores_b.shape:
        raise ValueError(f"scorer_labels: scores of shapes {scores_a.shape} and {scores_b.shape}: expected equal")
    if temperature < 0:
        raise ValueError(f"scorer_labels: temperature={temperature!r} is not allowed: expected >= 0")
    if temperature == 0:
        return np.where(scores_a > scores_b, 1.0, np.where(scores_a < scores_b, 0.0, 0.5))
    if rng is None:
        raise ValueError("scorer_labels: temperature > 0 samples labels: pass a numpy Generator as rng")
    labeler = SyntheticLabeler("bradley_terry", temperature=temperature)
    labeler.rng = rng  # draw from the caller's generator, so that its state carries the randomness
    return labeler(scores_a, scores_b).astype(np.float64)
