"""Playing board games between players, matches with alternating sides, and maximum-likelihood Elo ratings.

A player is any callable ``player(game, state) -> action`` (rlrun.envs.board's RandomPlayer and
MinimaxPlayer, rlrun.envs.mcts's MCTS). Results are points: a win 1, a draw 0.5, a loss 0.

Elo (Elo 1978) as a Bradley-Terry model (Bradley and Terry 1952) on the 400 log10 scale:
P(i beats j) = 1 / (1 + 10^((R_j - R_i) / 400)), with a draw counted as half a win for each side (as
BayesElo's and Ordo's simplest model). :func:`elo_ratings` maximizes the likelihood of the points table by
Newton's method (the log-likelihood is concave in the ratings) and fixes one player's rating at 0.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from rlrun.envs.board import BoardGame, Player

ELO_SCALE = 400.0 / math.log(10.0)  # Elo points per natural-log unit of the Bradley-Terry strength
PRIOR_DRAWS = 1e-3  # virtual drawn games added between every pair of players (see elo_ratings)


def play_game(game: BoardGame, first: Player, second: Player, record: list | None = None) -> float:
    """Play one game from ``game.initial_state()``; return its outcome from ``first``'s view (+1, 0, -1).

    With ``record`` a list, every move is appended to it as ``(state, action)``, the state being the one the
    move was chosen in. ValueError (from ``game.next_state``) if a player returns an illegal move.
    """
    state = game.initial_state()
    players = (first, second)
    for _ in range(game.max_moves + 1):
        outcome = game.outcome(state)
        if outcome is not None:
            return float(outcome)
        action = int(players[game.to_play(state)](game, state))
        if record is not None:
            record.append((state, action))
        state = game.next_state(state, action)
    raise RuntimeError(f"{game.name}: the game did not end within max_moves={game.max_moves}")


def _tally() -> dict[str, int]:
    return {"wins": 0, "draws": 0, "losses": 0}


def match(game: BoardGame, a: Player, b: Player, games: int) -> dict[str, Any]:
    """Play ``games`` games between ``a`` and ``b``: ``a`` moves first in ceil(games / 2) of them (games 0, 2,
    4, ...) and second in the others.

    Returns ``{"games", "wins", "draws", "losses", "score", "first": {...}, "second": {...}}``, all from
    ``a``'s view: ``score`` = (wins + draws / 2) / games, and ``"first"`` / ``"second"`` the wins, draws and
    losses of the games in which ``a`` moved first / second.
    """
    if not isinstance(games, (int, np.integer)) or isinstance(games, bool) or games < 1:
        raise ValueError(f"match games={games!r} is not allowed: expected an integer >= 1")
    total, side = _tally(), {"first": _tally(), "second": _tally()}
    for g in range(int(games)):
        a_first = g % 2 == 0
        outcome = play_game(game, a, b) if a_first else -play_game(game, b, a)
        key = "wins" if outcome > 0 else "losses" if outcome < 0 else "draws"
        total[key] += 1
        side["first" if a_first else "second"][key] += 1
    return {"games": int(games), **total, "score": (total["wins"] + 0.5 * total["draws"]) / games, **side}


def _check_table(names: list[str], results: np.ndarray, games: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    n = len(names)
    if len(set(names)) != n or n < 2:
        raise ValueError(f"elo: expected at least two distinct player names, got {names}")
    results = np.asarray(results, dtype=np.float64)
    if results.shape != (n, n):
        raise ValueError(f"elo: results has shape {results.shape}, expected ({n}, {n}) for {n} players")
    if not np.all(np.isfinite(results)) or np.any(results < 0):
        raise ValueError("elo: results must be finite points >= 0 (a win 1, a draw 0.5)")
    if games is None:
        games = results + results.T
    games = np.asarray(games, dtype=np.float64)
    if games.shape != (n, n) or not np.allclose(games, games.T) or np.any(games < 0):
        raise ValueError(f"elo: games must be a symmetric ({n}, {n}) matrix of counts >= 0")
    if not np.allclose(results + results.T, games, atol=1e-9):
        bad = np.argwhere(~np.isclose(results + results.T, games, atol=1e-9))[0]
        i, j = int(bad[0]), int(bad[1])
        raise ValueError(f"elo: {names[i]} and {names[j]} scored {results[i, j]:g} + {results[j, i]:g} points in "
                         f"{games[i, j]:g} games; the points of a pair must add up to its games")
    return results, games


def elo_ratings(names: list[str], results: np.ndarray, games: np.ndarray | None = None,
                anchor: str | None = None, prior_draws: float = PRIOR_DRAWS) -> dict[str, float]:
    """Maximum-likelihood Elo ratings from a table of results.

    Args:
        names: the players.
        results: results[i, j] = points of player i against player j (a win 1, a draw 0.5); the diagonal
            is ignored.
        games: games[i, j] = games between i and j (symmetric); by default results + results.T, which it
            must equal anyway since every game hands out one point.
        anchor: the player whose rating is fixed at 0 (default: the first name).
        prior_draws: a tiny regularization: every pair of players (whether they met or not) gets this many
            virtual drawn games. It keeps every rating finite when a player won or lost everything (the
            unregularized maximum is then at infinity) and ties together players that never met, pulling
            them toward equal ratings; with 1e-3 it moves a rating difference backed by a few real games by
            well under 1 Elo (A scoring 3 of 4 against B: 190.79 instead of 400 log10 3 = 190.85), and a
            player who won all of 10 games against another ends about 1720 Elo above it, not infinitely.

    The ratings maximize sum_{i != j} s_ij log p_ij with p_ij = 1 / (1 + exp(r_j - r_i)), R = 400 r / ln 10,
    s = results + prior_draws / 2 off the diagonal; at the maximum every player's points equal its expected
    points. Fitted by Newton's method with step halving (the objective is concave, and strictly concave
    once the anchor is fixed and prior_draws > 0).
    """
    results, games = _check_table(names, results, games)
    if not (isinstance(prior_draws, (int, float)) and math.isfinite(prior_draws) and prior_draws >= 0):
        raise ValueError(f"elo: prior_draws={prior_draws!r} is not allowed: expected a number >= 0")
    n = len(names)
    anchor = names[0] if anchor is None else anchor
    if anchor not in names:
        raise ValueError(f"elo: the anchor {anchor!r} is not one of the players {names}")
    off = ~np.eye(n, dtype=bool)
    s = np.where(off, results + prior_draws / 2.0, 0.0)
    m = np.where(off, games + prior_draws, 0.0)
    keep = np.array([name != anchor for name in names])  # the free ratings
    r = np.zeros(n)

    def log_likelihood(r: np.ndarray) -> float:
        d = r[:, None] - r[None, :]
        return float(-(s * np.logaddexp(0.0, -d)).sum())  # log sigmoid(d) = -log(1 + e^-d)

    current = log_likelihood(r)
    for _ in range(200):
        p = 1.0 / (1.0 + np.exp(r[None, :] - r[:, None]))  # p[i, j] = P(i beats j)
        gradient = (s - m * p).sum(axis=1)
        w = m * p * (1.0 - p)
        hessian = w - np.diag(w.sum(axis=1))
        g, h = gradient[keep], hessian[np.ix_(keep, keep)]
        if np.max(np.abs(g)) < 1e-10:
            break
        try:
            step = np.linalg.solve(h, -g)
        except np.linalg.LinAlgError:
            raise ValueError("elo: the ratings are not determined (a player has no games and prior_draws=0)") \
                from None
        t = 1.0
        while True:
            trial = r.copy()
            trial[keep] += t * step
            value = log_likelihood(trial)
            if value >= current - 1e-12 or t < 1e-8:
                break
            t /= 2
        r, current = trial, value
    if not np.all(np.isfinite(r)):
        raise ValueError("elo: the ratings diverged; use prior_draws > 0 when a player won or lost everything")
    return {name: float(ELO_SCALE * rating) for name, rating in zip(names, r)}


def elo_table(names: list[str], results: np.ndarray, games: np.ndarray | None = None,
              anchor: str | None = None, prior_draws: float = PRIOR_DRAWS) -> list[dict[str, Any]]:
    """One row per player, best first: rank, player, elo, games, points, score (points / games), and one
    column ``vs <name>`` per opponent with "points/games" against it ("" against itself or one it never met)."""
    results, games = _check_table(names, results, games)
    ratings = elo_ratings(names, results, games, anchor=anchor, prior_draws=prior_draws)
    order = sorted(range(len(names)), key=lambda i: -ratings[names[i]])
    rows = []
    for rank, i in enumerate(order, start=1):
        played = float(games[i].sum() - games[i, i])
        points = float(results[i].sum() - results[i, i])
        row: dict[str, Any] = {"rank": rank, "player": names[i], "elo": round(ratings[names[i]], 1),
                               "games": int(played) if played.is_integer() else played, "points": points,
                               "score": round(points / played, 4) if played else ""}
        for j, other in enumerate(names):
            row[f"vs {other}"] = "" if i == j or games[i, j] == 0 else f"{results[i, j]:g}/{games[i, j]:g}"
        rows.append(row)
    return rows


def write_csv(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    """Write ``rows`` as a CSV file with a header; the columns are the keys in the order first seen (a row
    without a key leaves its cell empty). Returns the path."""
    path = Path(path)
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    return path
