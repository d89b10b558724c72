"""PUCT search (rlrun.envs.mcts) and tournaments (rlrun.envs.tournament): a search worked by hand on a two-move
game, forced wins and blocks on real tic-tac-toe and Connect Four, bad arguments, maximum-likelihood Elo against
closed forms and an independent optimizer, matches that count sides, and the CSV table."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from scipy.optimize import minimize

from rlrun.core.config import ConfigError
from rlrun.envs.board import BoardGame, RandomPlayer
from rlrun.envs.mcts import MCTS, uniform_evaluator
from rlrun.envs.tournament import elo_ratings, elo_table, match, play_game, write_csv


class TwoMoveGame:
    """The first player picks 0 or 1, then the second picks 0 or 1, and the game ends with ``table[(a, b)]`` (from
    the first player's view). A state is the tuple of moves so far."""

    name, num_actions, max_moves = "two_move", 2, 2

    def __init__(self, table: dict[tuple[int, int], float]) -> None:
        self.table = table

    def initial_state(self) -> tuple:
        return ()

    def to_play(self, state: tuple) -> int:
        return len(state) % 2

    def outcome(self, state: tuple) -> float | None:
        return self.table[state] if len(state) == 2 else None

    def legal_mask(self, state: tuple) -> np.ndarray:
        return np.full(2, len(state) < 2)

    def next_state(self, state: tuple, action: int) -> tuple:
        if len(state) == 2 or action not in (0, 1):
            raise ValueError(f"action {action} is illegal here")
        return state + (int(action),)


# (0, 0): the first player wins; (0, 1): a draw; (1, *): the second player wins. Value of the root: 0 (play 0, then 1).
HAND_GAME = {(0, 0): 1.0, (0, 1): 0.0, (1, 0): -1.0, (1, 1): -1.0}


def search(game, sims: int, **kwargs) -> MCTS:
    mcts = MCTS(game, uniform_evaluator(game), num_simulations=sims, c_puct=1.0, **kwargs)
    mcts.counts = mcts.search(game.initial_state())
    return mcts


# The search by hand: uniform priors P = 0.5, evaluator value 0, c_puct = 1, no noise, no rollouts.
# score(a) = Q(a) + sqrt(N) * 0.5 / (1 + N(a)), N = sum of the node's visits; unvisited Q = 0; ties -> lowest action.
# sim 1: root N=0: every exploration term is 0 -> highest prior, tie -> a=0; expand (0,): v=0.
#        root N=(1,0) W=(0,0)
# sim 2: root N=1: a0 0 + 1*0.5/2 = 0.25, a1 0 + 1*0.5/1 = 0.5 -> a=1; expand (1,): v=0.
#        root N=(1,1) W=(0,0)
# sim 3: root N=2: a0 = a1 = sqrt2*0.5/2 = 0.354 -> tie -> a=0; node (0,) N=0 -> b=0; (0,0) ends +1 for the first
#        player = -1 for the second, who moved into it. node (0,): N=(1,0) W=(-1,0); root: W(0) += +1.
#        root N=(2,1) W=(1,0)
# sim 4: root N=3: a0 1/2 + sqrt3*0.5/3 = 0.789, a1 0 + sqrt3*0.5/2 = 0.433 -> a=0; node (0,) N=1:
#        b0 -1 + 0.5/2 = -0.75, b1 0 + 0.5/1 = 0.5 -> b=1: (0,1) a draw, value 0. node (0,): N=(1,1) W=(-1,0).
#        root N=(3,1) W=(1,0)
# sim 5: root N=4: a0 1/3 + 2*0.5/4 = 0.583, a1 0 + 2*0.5/2 = 0.5 -> a=0; node (0,) N=2: b0 -1 + sqrt2*0.5/2 = -0.646,
#        b1 0 + sqrt2*0.5/2 = 0.354 -> b=1: value 0. node (0,): N=(1,2) W=(-1,0).  root N=(4,1) W=(1,0)
# sim 6: root N=5: a0 1/4 + sqrt5*0.5/5 = 0.474, a1 0 + sqrt5*0.5/2 = 0.559 -> a=1; node (1,) N=0 -> b=0: (1,0) ends
#        -1 for the first player = +1 for the second. node (1,): N=(1,0) W=(1,0); root: W(1) += -1.
#        root N=(4,2) W=(1,-1): Q = (0.25, -0.5), root value (1 - 1) / 6 = 0.
HAND_COUNTS = {1: (1, 0), 2: (1, 1), 3: (2, 1), 4: (3, 1), 5: (4, 1), 6: (4, 2)}
HAND_Q = {1: (0, 0), 2: (0, 0), 3: (0.5, 0), 4: (1 / 3, 0), 5: (0.25, 0), 6: (0.25, -0.5)}


@pytest.mark.parametrize("sims", sorted(HAND_COUNTS))
def test_puct_selection_and_negamax_backup_match_the_search_worked_by_hand(sims):
    mcts = search(TwoMoveGame(HAND_GAME), sims)
    np.testing.assert_array_equal(mcts.counts, HAND_COUNTS[sims])
    np.testing.assert_allclose(mcts.root_q, HAND_Q[sims], atol=1e-12)
    assert mcts.root_value == pytest.approx(sum(q * n for q, n in zip(HAND_Q[sims], HAND_COUNTS[sims])) / sims)


def test_the_priors_lead_the_first_visits_and_illegal_priors_are_masked_out():
    # priors (0.2, 0.8), value 0: sim 1 takes the highest prior, a=1, and expands (1,): W(1) = 0;
    # sim 2: a0 0 + 1*0.2/1 = 0.2, a1 0 + 1*0.8/2 = 0.4 -> a=1, then in (1,) the highest prior b=1: (1,1) ends -1 for
    # the first player, W(1) = -1, Q(1) = -0.5;
    # sim 3: a0 0 + sqrt2*0.2/1 = 0.283, a1 -0.5 + sqrt2*0.8/3 = -0.123 -> a=0. Counts (1, 2), Q = (0, -0.5).
    game = TwoMoveGame(HAND_GAME)
    mcts = MCTS(game, lambda state: (np.array([0.2, 0.8]), 0.0), num_simulations=3, c_puct=1.0)
    np.testing.assert_array_equal(mcts.search(()), (1, 2))
    np.testing.assert_allclose(mcts.root_q, (0, -0.5))
    # the evaluator's value is for the player to move at the leaf: +0.5 at (1,) is +0.5 for the second player,
    # so the first player's Q(1) after one simulation is -0.5
    mcts = MCTS(game, lambda state: (np.array([0.2, 0.8]), 0.5), num_simulations=1, c_puct=1.0)
    np.testing.assert_array_equal(mcts.search(()), (0, 1))
    assert mcts.root_q[1] == pytest.approx(-0.5) and mcts.root_value == pytest.approx(-0.5)
    # illegal entries are ignored: a prior on a third, non-existent action would be a shape error, but priors on
    # illegal moves of a real game are dropped and the rest renormalized (tic-tac-toe below)
    ttt = BoardGame("tictactoe")
    after = ttt.next_state(ttt.initial_state(), 4)
    huge_on_center = np.array([0, 0, 0, 0, 1e6, 0, 0, 0, 1.0])
    counts = MCTS(ttt, lambda state: (huge_on_center, 0.0), num_simulations=1).search(after)
    assert counts[8] == 1 and counts[4] == 0
    # all legal priors 0 -> uniform (the first visit goes to the lowest action)
    zeros = MCTS(game, lambda state: (np.zeros(2), 0.0), num_simulations=1, c_puct=1.0)
    np.testing.assert_array_equal(zeros.search(()), (1, 0))
    with pytest.raises(ValueError, match="shape"):
        MCTS(game, lambda state: (np.ones(3), 0.0), num_simulations=1).search(())
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        MCTS(game, lambda state: (np.ones(2), 2.0), num_simulations=1).search(())


def test_rollouts_mix_into_the_leaf_value_as_alphagos_lambda():
    # one simulation, led by the priors to a=1; every playout from (1,) ends -1 for the first player, i.e. z = +1 for
    # the second player to move there: with v = 0 and lambda = 0.5 the leaf is worth 0.5 * 0 + 0.5 * 1 = 0.5 to the
    # second player, Q(1) = -0.5 to the first; with lambda = 1 it is z alone.
    game = TwoMoveGame(HAND_GAME)
    for mix, q in ((0.5, -0.5), (1.0, -1.0), (0.0, 0.0)):
        mcts = MCTS(game, lambda state: (np.array([0.2, 0.8]), 0.0), num_simulations=1, rollout_mix=mix)
        mcts.search(())
        assert mcts.root_q[1] == pytest.approx(q)


def test_dirichlet_noise_changes_the_root_priors_only_for_training():
    game = BoardGame("tictactoe")
    plain = MCTS(game, uniform_evaluator(game), 50, seed=1).search(game.initial_state())
    same = MCTS(game, uniform_evaluator(game), 50, dirichlet_alpha=0.3, dirichlet_epsilon=0.0, seed=1)
    np.testing.assert_array_equal(same.search(game.initial_state()), plain)
    noisy = MCTS(game, uniform_evaluator(game), 50, dirichlet_alpha=0.3, seed=1).search(game.initial_state())
    assert noisy.sum() == 50 and not np.array_equal(noisy, plain)


def test_policy_temperatures_and_a_finished_game():
    game = TwoMoveGame(HAND_GAME)
    mcts = MCTS(game, uniform_evaluator(game), 6, c_puct=1.0)
    np.testing.assert_array_equal(mcts.policy((), temperature=0.0), (1, 0))
    np.testing.assert_allclose(mcts.policy((), temperature=1.0), (4 / 6, 2 / 6))
    np.testing.assert_allclose(mcts.policy((), temperature=0.5), (16 / 20, 4 / 20))
    assert mcts(game, ()) == 0
    with pytest.raises(ValueError, match="game is over"):
        mcts.search((0, 0))


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_simulations=0), r"num_simulations=0 is not allowed: expected an integer >= 1"),
    (dict(num_simulations=2.5), r"num_simulations=2.5 is not allowed"),
    (dict(c_puct=0.0), r"c_puct=0.0 is not allowed: expected a number > 0"),
    (dict(c_puct=-1), r"c_puct=-1 is not allowed"),
    (dict(dirichlet_alpha=0.0), r"dirichlet_alpha=0.0 is not allowed"),
    (dict(dirichlet_epsilon=1.5), r"dirichlet_epsilon=1.5 is not allowed"),
    (dict(rollout_mix=-0.1), r"rollout_mix=-0.1 is not allowed: expected a number in \[0, 1\]"),
])
def test_bad_search_settings_are_refused_naming_the_setting(kwargs, message):
    game = TwoMoveGame(HAND_GAME)
    with pytest.raises(ConfigError, match=message):
        MCTS(game, uniform_evaluator(game), **{"num_simulations": 10, **kwargs})


# ---- real games --------------------------------------------------------------------------------------------------

def play(game: BoardGame, moves: list[int]):
    state = game.initial_state()
    for action in moves:
        state = game.next_state(state, action)
    return state


def mover_wins(game: BoardGame, state, mover: int) -> bool:
    return game.outcome(state) == (1.0 if mover == 0 else -1.0)


def winning_moves(game: BoardGame, state) -> set[int]:
    """The moves that win at once."""
    mover = game.to_play(state)
    return {a for a in np.flatnonzero(game.legal_mask(state)) if mover_wins(game, game.next_state(state, a), mover)}


def not_losing_at_once(game: BoardGame, state) -> set[int]:
    """The moves after which the opponent cannot win at once."""
    afters = {a: game.next_state(state, a) for a in np.flatnonzero(game.legal_mask(state))}
    return {a for a, after in afters.items() if game.outcome(after) is not None or not winning_moves(game, after)}


def forks(game: BoardGame, state) -> set[int]:
    """The moves that are not an immediate win but after which every reply lets the mover win at once."""
    found = set()
    for a in np.flatnonzero(game.legal_mask(state)):
        after = game.next_state(state, a)
        replies = np.flatnonzero(game.legal_mask(after))
        if game.outcome(after) is None and all(
                game.outcome(game.next_state(after, r)) is None and winning_moves(game, game.next_state(after, r))
                for r in replies):
            found.add(int(a))
    return found


# positions by their moves; tic-tac-toe squares are PettingZoo's (0 3 6 / 1 4 7 / 2 5 8: the eight lines are the same
# index triples as in row-major order), Connect Four actions are columns.
POSITIONS = [
    # X 0 1, O 3 4, X to move: win at 2 rather than block O's line at 5
    ("tictactoe", [0, 3, 1, 4], "win in one", {2}, 200),
    # X 0 1 8, O 3 4, O to move: win at 5 rather than block X at 2 (the second player's view)
    ("tictactoe", [0, 3, 1, 4, 8], "win in one", {5}, 200),
    # X 0 1, O 4, O to move: only 2 stops X's line
    ("tictactoe", [0, 4, 1], "block", {2}, 400),
    # X 0 4, O 1 8, X to move: 3 (threats 6 and 5) or 6 (threats 3 and 2) makes two threats at once
    ("tictactoe", [0, 1, 4, 8], "win in two", {3, 6}, 1000),
    # Connect Four: X three high in column 0, O three high in column 1, X to move: win in column 0
    ("connect_four", [0, 1, 0, 1, 0, 1], "win in one", {0}, 300),
    # X three high in column 0, O to move: only column 0 stops it
    ("connect_four", [0, 1, 0, 1, 0], "block", {0}, 500),
    # X at the bottom of columns 2 and 3 (O on top of both), X to move: column 1 or 4 makes an open three
    ("connect_four", [2, 2, 3, 3], "win in two", {1, 4}, 2000),
]


@pytest.mark.parametrize("name, moves, kind, answers, sims", POSITIONS,
                         ids=[f"{p[0]}-{p[2].replace(' ', '-')}-{''.join(map(str, p[1]))}" for p in POSITIONS])
def test_mcts_with_rollouts_finds_forced_wins_and_blocks(name, moves, kind, answers, sims):
    game = BoardGame(name)
    state = play(game, moves)
    # the position is what its comment says, by the rules alone
    if kind == "win in one":
        assert winning_moves(game, state) == answers
    elif kind == "block":
        assert not winning_moves(game, state) and not_losing_at_once(game, state) == answers
    else:
        assert not winning_moves(game, state) and not_losing_at_once(game, state) == set(
            np.flatnonzero(game.legal_mask(state))) and forks(game, state) == answers
    for seed in range(2):
        mcts = MCTS(game, uniform_evaluator(game), num_simulations=sims, rollout_mix=1.0, seed=seed)
        assert mcts(game, state) in answers


# ---- tournaments -------------------------------------------------------------------------------------------------

# one move each; whoever alone picks 1 ("claim") wins, equal picks draw
CLAIM_GAME = {(0, 0): 0.0, (0, 1): -1.0, (1, 0): 1.0, (1, 1): 0.0}


def claimer(game, state):
    return 1


def conceder(game, state):
    return 0


def claims_when_first(game, state):
    return 1 if game.to_play(state) == 0 else 0


def test_play_game_records_the_moves_and_scores_from_the_first_players_view():
    game = TwoMoveGame(CLAIM_GAME)
    record = []
    assert play_game(game, claimer, conceder, record) == 1.0
    assert record == [((), 1), ((1,), 0)]
    assert play_game(game, conceder, claimer) == -1.0
    with pytest.raises(ValueError, match="illegal"):
        play_game(game, lambda g, s: 5, conceder)


def test_match_alternates_sides_and_counts_them():
    game = TwoMoveGame(CLAIM_GAME)
    always = match(game, claimer, conceder, 5)  # claimer first in games 0, 2, 4
    assert always == {"games": 5, "wins": 5, "draws": 0, "losses": 0, "score": 1.0,
                      "first": {"wins": 3, "draws": 0, "losses": 0}, "second": {"wins": 2, "draws": 0, "losses": 0}}
    never = match(game, conceder, claimer, 4)
    assert (never["wins"], never["draws"], never["losses"], never["score"]) == (0, 0, 4, 0.0)
    assert never["first"] == never["second"] == {"wins": 0, "draws": 0, "losses": 2}
    sided = match(game, claims_when_first, conceder, 5)  # wins when first, draws when second
    assert sided["first"] == {"wins": 3, "draws": 0, "losses": 0}
    assert sided["second"] == {"wins": 0, "draws": 2, "losses": 0}
    assert sided["score"] == pytest.approx(4 / 5)
    with pytest.raises(ValueError, match="games=0"):
        match(game, claimer, conceder, 0)


def test_mcts_never_loses_a_tictactoe_match_to_a_random_player():
    game = BoardGame("tictactoe")
    # (pure MCTS with random playouts is not perfect: with 300 simulations it lost 1 of 20 games to a random player,
    # with 1000 none, and drew 9 of 10 against perfect minimax)
    mcts = MCTS(game, uniform_evaluator(game), num_simulations=1000, rollout_mix=1.0, seed=0)
    result = match(game, mcts, RandomPlayer(seed=0), 4)
    assert result["losses"] == 0 and result["wins"] >= 3
    assert result["first"]["wins"] + result["first"]["draws"] + result["first"]["losses"] == 2


# ---- Elo ---------------------------------------------------------------------------------------------------------

def test_two_players_a_scores_3_of_4_gives_400_log10_3():
    ratings = elo_ratings(["A", "B"], np.array([[0.0, 3.0], [1.0, 0.0]]))
    assert ratings["A"] == 0.0
    assert ratings["A"] - ratings["B"] == pytest.approx(400 * math.log10(3), abs=0.5)  # 190.85
    # the same with draws: 2 wins, 2 draws, 0 losses is also 3 of 4
    assert elo_ratings(["A", "B"], np.array([[0.0, 3.0], [1.0, 0.0]]), games=np.array([[0, 4], [4, 0]]),
                       anchor="B")["A"] == pytest.approx(190.85, abs=0.5)


def test_three_players_consistent_with_bradley_terry_have_the_closed_form_ratings():
    # strengths 4 : 2 : 1 -> P(A>B) = 2/3, P(A>C) = 4/5, P(B>C) = 2/3; a table that scores exactly these (A 2 of 3
    # against B, 4 of 5 against C, B 2 of 3 against C) satisfies the likelihood equations (each player's points equal
    # its expected points), so the maximum is R_B - R_A = 400 log10(2/4) = -120.41 and R_C - R_A = 400 log10(1/4)
    results = np.array([[0, 2, 4], [1, 0, 2], [1, 1, 0]], dtype=float)
    ratings = elo_ratings(["A", "B", "C"], results)
    assert ratings["B"] == pytest.approx(400 * math.log10(0.5), abs=0.5)
    assert ratings["C"] == pytest.approx(400 * math.log10(0.25), abs=0.5)
    exact = elo_ratings(["A", "B", "C"], results, prior_draws=0.0)
    assert exact["B"] == pytest.approx(-120.412, abs=1e-3) and exact["C"] == pytest.approx(-240.824, abs=1e-3)
    shifted = elo_ratings(["A", "B", "C"], results, anchor="C")
    assert shifted["A"] - shifted["B"] == pytest.approx(ratings["A"] - ratings["B"], abs=1e-9)


def test_elo_is_the_likelihood_maximum_of_an_independent_optimizer():
    names = ["P", "Q", "R", "S"]
    results = np.array([[0, 3.5, 2, 1], [1.5, 0, 4, 0], [3, 2, 0, 2.5], [0, 1, 0.5, 0]])  # draws, one pair unplayed
    ratings = elo_ratings(names, results, prior_draws=0.01)
    games = results + results.T
    s = np.where(np.eye(4, dtype=bool), 0.0, results + 0.005)

    def negative_log_likelihood(free):
        elo = np.concatenate([[0.0], free])
        d = (elo[:, None] - elo[None, :]) * math.log(10) / 400
        return float((s * np.logaddexp(0.0, -d)).sum())

    best = minimize(negative_log_likelihood, np.zeros(3), method="BFGS", options={"gtol": 1e-10})
    np.testing.assert_allclose([ratings[n] for n in names[1:]], best.x, atol=0.05)
    # at the maximum every player's points equal its expected points
    elo = np.array([ratings[n] for n in names])
    p = 1 / (1 + 10 ** ((elo[None, :] - elo[:, None]) / 400))
    np.testing.assert_allclose(s.sum(1), (np.where(np.eye(4, dtype=bool), 0, games + 0.01) * p).sum(1), atol=1e-8)


def test_a_player_who_won_everything_gets_a_finite_rating_and_bad_tables_are_refused():
    ratings = elo_ratings(["A", "B", "C"], np.array([[0, 10, 10], [0, 0, 5], [0, 5, 0]], dtype=float))
    assert math.isfinite(ratings["A"]) and ratings["A"] - max(ratings["B"], ratings["C"]) > 1000
    assert ratings["B"] == pytest.approx(ratings["C"], abs=1e-6)
    with pytest.raises(ValueError, match="must add up to its games"):
        elo_ratings(["A", "B"], np.array([[0, 3.0], [1.0, 0]]), games=np.array([[0, 5], [5, 0]]))
    with pytest.raises(ValueError, match="shape"):
        elo_ratings(["A", "B", "C"], np.zeros((2, 2)))
    with pytest.raises(ValueError, match="anchor 'Z'"):
        elo_ratings(["A", "B"], np.array([[0, 1.0], [1.0, 0]]), anchor="Z")


def test_the_elo_table_is_written_as_csv(tmp_path):
    rows = elo_table(["A", "B", "C"], np.array([[0, 2, 4], [1, 0, 2], [1, 1, 0]], dtype=float))
    path = write_csv(tmp_path / "out" / "elo.csv", rows)
    with path.open(newline="") as f:
        read = list(csv.DictReader(f))
    assert [r["player"] for r in read] == ["A", "B", "C"] and [r["rank"] for r in read] == ["1", "2", "3"]
    assert list(read[0]) == ["rank", "player", "elo", "games", "points", "score", "vs A", "vs B", "vs C"]
    assert read[0]["elo"] == "0.0" and float(read[2]["elo"]) == pytest.approx(-240.8, abs=0.5)
    assert (read[0]["games"], read[0]["points"], read[0]["vs A"], read[0]["vs C"]) == ("8", "6.0", "", "4/5")
