"""PUCT Monte-Carlo tree search over a :class:`~rlrun.envs.board.BoardGame` (AlphaGo Zero, AlphaZero).

Silver et al. 2017 ("Mastering the game of Go without human knowledge", Nature) and Silver et al. 2018
("A general reinforcement learning algorithm that masters chess, shogi, and Go through self-play",
Science). One simulation walks from the root to a leaf, evaluates the leaf and backs the value up:

selection
    a = argmax_a  Q(s, a) + c_puct * P(s, a) * sqrt(N(s)) / (1 + N(s, a)),   N(s) = sum_b N(s, b),
    over the legal moves of s. Q(s, a) = W(s, a) / N(s, a) is the mean value of the move from the view of
    the player to move at s. *First-play urgency*: an unvisited move has Q = 0 (AlphaGo Zero's choice; with
    values in [-1, 1] it counts an untried move as a draw; Leela Zero's "parent Q minus a reduction" or a
    pessimistic -1 are not used). At a node's first selection N(s) = 0 makes every exploration term 0; the
    search then takes the move of highest prior (the limit of the formula for N(s) -> 0+, as
    alpha-zero-general's sqrt(N(s) + 1e-8)). Ties in the score go to the lowest action index, so that a
    search is reproducible and can be worked by hand.
expansion
    the evaluator gives priors over all actions and a value; the priors are masked to the legal moves and
    renormalized (uniform over the legal moves if every legal prior is 0). At the root, for training,
    P = (1 - epsilon) P + epsilon Dir(alpha) over the legal moves (AlphaZero: epsilon = 0.25, alpha = 0.3 for
    chess, 0.03 for Go; roughly 10 / (typical number of legal moves)).
evaluation
    a terminal leaf is scored exactly from ``game.outcome`` (+1 win, -1 loss, 0 draw for the player who
    moved into it). Otherwise the leaf value is the evaluator's v, or with ``rollout_mix`` = lambda > 0
    AlphaGo's (Silver et al. 2016) mixture (1 - lambda) v + lambda z, where z is the result of one
    uniformly random playout to the end of the game; lambda = 1 with :func:`uniform_evaluator` is plain
    Monte-Carlo tree search with PUCT instead of UCB1.
backup
    negamax: along the path each edge adds the value from the view of the player to move at its node
    (the leaf's value if the same player is to move there, its negation otherwise).

The tree is *not* reused between moves: each :meth:`MCTS.search` builds a fresh tree from its root state
(one node per path, no transpositions), so every search gets its own Dirichlet noise (AlphaZero adds noise
at every root) and the result depends only on the state and the generator, not on earlier searches.
Reusing the subtree of the move played would save up to a factor of about the branching factor's share of
the simulations at the cost of that independence.
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING, Callable

import numpy as np

from rlrun.core.config import ConfigError

if TYPE_CHECKING:
    from rlrun.envs.board import BoardGame, State

Evaluator = Callable[["State"], "tuple[np.ndarray, float]"]
"""state -> (priors over all ``game.num_actions`` actions, value in [-1, 1] from the view of the player to move)."""


def uniform_evaluator(game: BoardGame) -> Evaluator:
    """Uniform priors and value 0: with ``rollout_mix=1`` MCTS becomes pure Monte-Carlo tree search."""
    priors = np.full(game.num_actions, 1.0 / game.num_actions)

    def evaluate(state: State) -> tuple[np.ndarray, float]:
        return priors, 0.0

    return evaluate


class _Node:
    """A position in the tree. Per legal move k (the action ``legal[k]``): prior P, visits N, value sum W
    (from the view of ``player``, the player to move here) and the child, created when first selected."""

    __slots__ = ("state", "player", "terminal", "value", "legal", "prior", "visits", "value_sum", "children",
                 "total", "expanded")

    def __init__(self, state: State, player: int, terminal: bool, value: float = 0.0) -> None:
        self.state, self.player, self.terminal, self.value = state, player, terminal, value
        self.expanded = False
        self.total = 0  # N(s) = sum_b N(s, b)
        self.legal: list[int] = []
        self.prior: list[float] = []
        self.visits: list[int] = []
        self.value_sum: list[float] = []
        self.children: list[_Node | None] = []


def _check(ok: bool, key: str, value: object, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"MCTS {key}={value!r} is not allowed: expected {allowed}")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
        and math.isfinite(float(value))


class MCTS:
    """PUCT search (Silver et al. 2017, AlphaGo Zero; Silver et al. 2018, AlphaZero); also a Player.

    Args:
        game: the rules.
        evaluate: :data:`Evaluator`, called once per expanded (non-terminal) node.
        num_simulations: simulations per search (>= 1).
        c_puct: exploration constant (> 0).
        dirichlet_alpha: concentration of the root noise; None for no noise (evaluation play).
        dirichlet_epsilon: weight of the root noise, in [0, 1].
        rollout_mix: AlphaGo's lambda in [0, 1]: leaf value = (1 - lambda) v + lambda z_rollout.
        seed: seeds the rollouts, the noise and the tie-breaks of the move choice; successive searches
            draw from the same generators, so a sequence of searches is reproducible, one alone is not.

    After a search, :attr:`root_value` holds the mean backed-up value at the root (from the view of the
    player to move there) and :attr:`root_q` the Q of each action (0 for illegal or unvisited moves).
    """

    def __init__(self, game: BoardGame, evaluate: Evaluator, num_simulations: int, c_puct: float = 1.5,
                 dirichlet_alpha: float | None = None, dirichlet_epsilon: float = 0.25,
                 rollout_mix: float = 0.0, seed: int = 0) -> None:
        _check(isinstance(num_simulations, (int, np.integer)) and not isinstance(num_simulations, bool)
               and num_simulations >= 1, "num_simulations", num_simulations, "an integer >= 1")
        _check(_is_number(c_puct) and c_puct > 0, "c_puct", c_puct, "a number > 0")
        _check(dirichlet_alpha is None or (_is_number(dirichlet_alpha) and dirichlet_alpha > 0),
               "dirichlet_alpha", dirichlet_alpha, "a number > 0 or None (no root noise)")
        _check(_is_number(dirichlet_epsilon) and 0 <= dirichlet_epsilon <= 1, "dirichlet_epsilon",
               dirichlet_epsilon, "a number in [0, 1]")
        _check(_is_number(rollout_mix) and 0 <= rollout_mix <= 1, "rollout_mix", rollout_mix,
               "a number in [0, 1]")
        self.game, self.evaluate = game, evaluate
        self.num_simulations, self.c_puct = int(num_simulations), float(c_puct)
        self.dirichlet_alpha = None if dirichlet_alpha is None else float(dirichlet_alpha)
        self.dirichlet_epsilon, self.rollout_mix = float(dirichlet_epsilon), float(rollout_mix)
        self.rng = np.random.default_rng(seed)
        self._random = random.Random(seed)  # rollouts: Python's generator is several times faster per draw
        self.root_value = 0.0
        self.root_q = np.zeros(game.num_actions)

    # ---- the search -------------------------------------------------------------------------------------
    def search(self, state: State) -> np.ndarray:
        """Run ``num_simulations`` simulations from ``state``; return the root's visit counts, shape
        (num_actions,) float, 0 for illegal moves. ValueError if the game is over at ``state``."""
        game = self.game
        if game.outcome(state) is not None:
            raise ValueError(f"MCTS: the game is over at this state (outcome {game.outcome(state)}), "
                             "there is no move to search")
        root = _Node(state, game.to_play(state), False)
        self._expand(root)
        if self.dirichlet_alpha is not None and self.dirichlet_epsilon > 0:
            noise = self.rng.dirichlet([self.dirichlet_alpha] * len(root.legal))
            eps = self.dirichlet_epsilon
            root.prior = [(1 - eps) * p + eps * float(n) for p, n in zip(root.prior, noise)]
        for _ in range(self.num_simulations):
            self._simulate(root)
        counts = np.zeros(game.num_actions)
        q = np.zeros(game.num_actions)
        for k, action in enumerate(root.legal):
            counts[action] = root.visits[k]
            if root.visits[k]:
                q[action] = root.value_sum[k] / root.visits[k]
        self.root_q = q
        self.root_value = float(sum(root.value_sum) / root.total)
        return counts

    def _simulate(self, root: _Node) -> None:
        node, path = root, []
        while True:
            if node.terminal:
                leaf_player, value = node.player, node.value
                break
            if not node.expanded:
                leaf_player, value = node.player, self._expand(node)
                break
            k = self._select(node)
            path.append((node, k))
            child = node.children[k]
            if child is None:
                child = node.children[k] = self._child(node, node.legal[k])
            node = child
        for parent, k in path:  # negamax backup
            parent.visits[k] += 1
            parent.total += 1
            parent.value_sum[k] += value if parent.player == leaf_player else -value

    def _select(self, node: _Node) -> int:
        prior, visits, value_sum = node.prior, node.visits, node.value_sum
        if node.total == 0:  # every exploration term is 0: the highest prior (first of equals)
            return prior.index(max(prior))
        scale = self.c_puct * math.sqrt(node.total)
        best_k, best, k = 0, -math.inf, 0
        for p, n, w in zip(prior, visits, value_sum):
            score = (w / n + scale * p / (1 + n)) if n else scale * p  # Q = 0 for an unvisited move
            if score > best:
                best_k, best = k, score
            k += 1
        return best_k

    def _child(self, parent: _Node, action: int) -> _Node:
        game = self.game
        state = game.next_state(parent.state, action)
        outcome = game.outcome(state)
        if outcome is not None:
            # scored for the player who moved into it; the backup compares players, so store it as theirs
            return _Node(state, parent.player, True, float(outcome) if parent.player == 0 else -float(outcome))
        return _Node(state, game.to_play(state), False)

    def _expand(self, node: _Node) -> float:
        """Set the node's legal moves and priors; return its value from the view of its player to move."""
        game = self.game
        priors, value = self.evaluate(node.state)
        legal = np.flatnonzero(game.legal_mask(node.state))
        p = np.asarray(priors, dtype=np.float64)
        if p.shape != (game.num_actions,):
            raise ValueError(f"MCTS: the evaluator gave priors of shape {p.shape}, expected ({game.num_actions},)")
        p = p[legal]
        if not np.all(np.isfinite(p)) or np.any(p < 0):
            raise ValueError(f"MCTS: the evaluator gave priors that are negative or not finite: {p.tolist()}")
        total = p.sum()
        p = p / total if total > 0 else np.full(len(legal), 1.0 / len(legal))
        value = float(value)
        if not -1.0 - 1e-6 <= value <= 1.0 + 1e-6:
            raise ValueError(f"MCTS: the evaluator gave the value {value}, expected a number in [-1, 1]")
        node.legal, node.prior = legal.tolist(), p.tolist()
        node.visits, node.value_sum = [0] * len(legal), [0.0] * len(legal)
        node.children = [None] * len(legal)
        node.expanded = True
        if self.rollout_mix > 0:
            value = (1 - self.rollout_mix) * value + self.rollout_mix * self._rollout(node.state, node.player)
        return value

    def _rollout(self, state: State, player: int) -> float:
        """The result of a uniformly random playout from ``state``, from ``player``'s view."""
        game, choose = self.game, self._random.choice
        outcome = game.outcome(state)
        while outcome is None:
            state = game.next_state(state, choose(np.flatnonzero(game.legal_mask(state)).tolist()))
            outcome = game.outcome(state)
        return float(outcome) if player == 0 else -float(outcome)

    # ---- the results ------------------------------------------------------------------------------------
    def visit_counts(self, state: State) -> np.ndarray:
        """Search from ``state`` and return the root's visit counts (num_actions,) float."""
        return self.search(state)

    def policy(self, state: State, temperature: float = 0.0) -> np.ndarray:
        """Search from ``state``; the visit-count distribution N(s, a)^(1/T) / sum_b N(s, b)^(1/T)
        (AlphaGo Zero's pi), or for T = 0 the one-hot of the most visited move (ties broken by the rng)."""
        if not (_is_number(temperature) and temperature >= 0):
            raise ValueError(f"MCTS temperature={temperature!r} is not allowed: expected a number >= 0")
        return self._distribution(self.search(state), float(temperature))

    def _distribution(self, counts: np.ndarray, temperature: float) -> np.ndarray:
        if temperature == 0:
            best = np.flatnonzero(counts == counts.max())
            pi = np.zeros_like(counts)
            pi[best[self.rng.integers(len(best))] if len(best) > 1 else best[0]] = 1.0
            return pi
        scaled = (counts / counts.max()) ** (1.0 / temperature)  # divided first: no overflow for small T
        return scaled / scaled.sum()

    def __call__(self, game: BoardGame, state: State) -> int:
        """A Player: the most visited move of a search from ``state`` (ties broken by the rng)."""
        if game is not self.game and getattr(game, "name", None) != getattr(self.game, "name", None):
            raise ValueError(f"MCTS was built for {self.game.name!r}, asked to play {game.name!r}")
        return int(np.argmax(self._distribution(self.search(state), 0.0)))
