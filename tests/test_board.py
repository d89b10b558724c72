"""Board games (rlrun.envs.board): the rules agree with PettingZoo's own envs move by move, illegal moves are refused,
minimax is perfect on tic-tac-toe and finds forced wins, and board envs are refused by the other algorithms."""

from __future__ import annotations

import numpy as np
import pytest
from pettingzoo.classic.connect_four import connect_four as pz_connect_four
from pettingzoo.classic.tictactoe import tictactoe as pz_tictactoe

from rlrun.cli.train import validate
from rlrun.core.config import ConfigError
from rlrun.envs.board import (
    BoardGame,
    MinimaxPlayer,
    RandomPlayer,
    check_minimax_depth,
    connect_four_heuristic,
    minimax_value,
    validate_board_env,
)
from rlrun.envs.factory import validate_env

PETTINGZOO = {"tictactoe": pz_tictactoe, "connect_four": pz_connect_four}


@pytest.fixture(scope="module")
def ttt() -> BoardGame:
    return BoardGame("tictactoe")


@pytest.fixture(scope="module")
def c4() -> BoardGame:
    return BoardGame("connect_four")


def play(game: BoardGame, moves: list[int]) -> tuple:
    """The state after ``moves`` from the start."""
    state = game.initial_state()
    for move in moves:
        state = game.next_state(state, move)
    return state


def play_game(game: BoardGame, first, second) -> float:
    """One game; the outcome from the first player's view."""
    state, players = game.initial_state(), (first, second)
    while game.outcome(state) is None:
        state = game.next_state(state, players[game.to_play(state)](game, state))
    return game.outcome(state)


@pytest.mark.parametrize("name", ["tictactoe", "connect_four"])
def test_masks_observations_and_outcomes_agree_with_pettingzoo_over_200_random_games(name):
    game, env, rng = BoardGame(name), PETTINGZOO[name].env(), np.random.default_rng(0)
    first = env.possible_agents[0]
    outcomes = set()
    for episode in range(200):
        env.reset(seed=episode)
        state = game.initial_state()
        assert state == play(game, []) and game.to_play(state) == 0
        while game.outcome(state) is None:
            agent = env.agent_selection
            observed = env.observe(agent)
            assert game.to_play(state) == env.possible_agents.index(agent)
            np.testing.assert_array_equal(game.legal_mask(state), observed["action_mask"].astype(bool))
            assert game.legal_actions(state) == list(np.flatnonzero(observed["action_mask"]))
            obs = game.observation(state)
            assert obs.shape == game.obs_shape and obs.dtype == np.float32
            np.testing.assert_array_equal(obs, observed["observation"])
            action = int(rng.choice(np.flatnonzero(observed["action_mask"])))
            env.step(action)
            state = game.next_state(state, action)
            board = env.unwrapped.board
            assert state[0] == tuple(board.squares if name == "tictactoe" else board)
            assert (game.outcome(state) is not None) == env.terminations[agent]
        assert game.outcome(state) == env.rewards[first] == -env.rewards[env.possible_agents[1]]
        outcomes.add(game.outcome(state))
        # at the end: PettingZoo's observation of the next player; no legal move (PettingZoo still lists empty cells)
        np.testing.assert_array_equal(game.observation(state), env.observe(env.agent_selection)["observation"])
        assert not game.legal_mask(state).any() and game.legal_actions(state) == []
        assert game.to_play(state) == env.possible_agents.index(env.agent_selection)
    assert outcomes == {1.0, -1.0, 0.0} if name == "tictactoe" else outcomes >= {1.0, -1.0}


def test_game_shapes_and_render_match_pettingzoo(ttt, c4):
    assert (ttt.num_actions, ttt.obs_shape, ttt.max_moves, ttt.pettingzoo_id) == (9, (3, 3, 2), 9, "tictactoe_v3")
    assert (c4.num_actions, c4.obs_shape, c4.max_moves, c4.pettingzoo_id) == (7, (6, 7, 2), 42, "connect_four_v3")
    for game, moves, kwargs in [(ttt, [4, 0, 8], dict(screen_height=300)), (c4, [3, 3, 2], dict(screen_scaling=4))]:
        env = PETTINGZOO[game.name].env(render_mode="rgb_array", **kwargs)
        env.reset()
        for move in moves:
            env.step(move)
        frame = game.render(play(game, moves))
        assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
        np.testing.assert_array_equal(frame, env.render())
    assert ttt.render(ttt.initial_state()).shape == (300, 300, 3) and c4.render(c4.initial_state()).shape == (344, 396, 3)


def test_states_are_hashable_and_observations_are_from_the_view_of_the_player_to_move(ttt, c4):
    state = play(ttt, [4, 0])  # X (first) in the centre, O (second) in square 0; X to move
    assert hash(state) == hash(play(ttt, [4, 0])) and state != play(ttt, [0, 4])
    obs = ttt.observation(state)
    assert obs[1, 1, 0] == 1 and obs[0, 0, 1] == 1 and obs.sum() == 2  # plane 0: X's (to move), plane 1: O's
    obs = ttt.observation(ttt.next_state(state, 8))  # O to move: square 8 is X's, plane 1
    assert obs[2, 2, 1] == 1 and obs[0, 0, 0] == 1 and obs[1, 1, 1] == 1
    state = play(c4, [3, 3])
    assert state[0][5 * 7 + 3] == 1 and state[0][4 * 7 + 3] == 2  # gravity: the bottom row is row 5
    assert c4.observation(state)[5, 3, 0] == 1 and c4.observation(state)[4, 3, 1] == 1


def test_an_illegal_move_raises_a_value_error_naming_it(ttt, c4):
    state = play(ttt, [4])
    for bad in (4, 9, -1):
        with pytest.raises(ValueError, match=f"action {bad} is illegal here: the legal actions are"):
            ttt.next_state(state, bad)
    with pytest.raises(ValueError, match="action 2.5 is not allowed"):
        ttt.next_state(state, 2.5)
    won = play(ttt, [0, 1, 3, 4, 6])  # X: 0 3 6, the top row
    assert ttt.outcome(won) == 1.0
    with pytest.raises(ValueError, match="action 8 is not allowed: the game is over"):
        ttt.next_state(won, 8)
    full = play(c4, [0] * 6)
    assert not c4.legal_mask(full)[0] and c4.legal_actions(full) == [1, 2, 3, 4, 5, 6]
    with pytest.raises(ValueError, match=r"action 0 is illegal here: the legal actions are \[1, 2, 3, 4, 5, 6\]"):
        c4.next_state(full, 0)
    assert c4.next_state(full, np.int64(1)) == c4.next_state(full, 1)  # NumPy integers are actions too
    for player in (RandomPlayer(0), MinimaxPlayer(None, 0)):
        with pytest.raises(ValueError, match="the game is over"):
            player(ttt, won)
    with pytest.raises(ConfigError, match="game='chess' is not allowed: expected a board game, one of tictactoe, "
                                          "connect_four"):
        BoardGame("chess")


def test_minimax_value_of_tictactoe_is_a_draw(ttt):
    assert minimax_value(ttt, ttt.initial_state()) == 0.0
    assert minimax_value(ttt, play(ttt, [0, 1])) == 1.0  # O on an edge next to X's corner loses
    assert minimax_value(ttt, play(ttt, [0, 1, 3, 4, 6])) == 1.0  # a finished game: its outcome
    with pytest.raises(ValueError, match="depth=0 is not allowed"):
        minimax_value(ttt, ttt.initial_state(), depth=0)


def test_perfect_minimax_never_loses_to_itself_and_beats_random_play(ttt):
    for seed in range(10):  # 20 games: each seed's player as first and as second
        a, b = MinimaxPlayer(None, seed), MinimaxPlayer(None, 100 + seed)
        assert play_game(ttt, a, b) == 0.0 and play_game(ttt, b, a) == 0.0
    perfect, games = MinimaxPlayer(None, 7), 50
    as_first = [play_game(ttt, perfect, RandomPlayer(seed)) for seed in range(games)]
    as_second = [-play_game(ttt, RandomPlayer(1000 + seed), perfect) for seed in range(games)]
    assert min(as_first) >= 0 and min(as_second) >= 0  # never loses
    assert as_first.count(1.0) > games * 0.8 and as_second.count(1.0) > games / 2  # and wins most


def test_ties_are_broken_at_random_with_the_players_own_seed(ttt):
    openings = {MinimaxPlayer(None, seed)(ttt, ttt.initial_state()) for seed in range(30)}
    assert len(openings) == 9  # every first move draws: each is played by some seed
    moves = [MinimaxPlayer(None, 3)(ttt, ttt.initial_state()) for _ in range(3)]
    assert len(set(moves)) == 1  # the same seed, the same choice


@pytest.mark.parametrize("depth", [None, 3, 5])
def test_forced_wins_in_one_and_two_are_found_in_tictactoe(ttt, depth):
    win_in_one = play(ttt, [0, 1, 3, 4])  # X: 0 3, O: 1 4; X to move wins at 6 (O threatens 7)
    win_in_two = play(ttt, [0, 1, 4, 8])  # X: 0 4, O: 1 8; X to move forks at 3 or 6
    lose_in_one = play(ttt, [0, 3, 1, 4, 8])  # O to move wins at 5 (3 4 5)
    assert minimax_value(ttt, win_in_one, depth=1) == 1.0 and minimax_value(ttt, win_in_two, depth=1) == 0.0
    assert minimax_value(ttt, win_in_two, depth=3) == 1.0 and minimax_value(ttt, lose_in_one, depth=1) == -1.0
    choices = {seed: MinimaxPlayer(depth, seed) for seed in range(12)}
    assert {p(ttt, win_in_one) for p in choices.values()} == {6}
    assert {p(ttt, win_in_two) for p in choices.values()} == {3, 6}
    assert {p(ttt, lose_in_one) for p in choices.values()} == {5}
    quick = play(ttt, [0, 1, 4, 2])  # X wins now at 8, or later by the fork at 3: the quicker win is taken
    slow_loss = play(ttt, [0, 1, 4])  # O is lost: blocking at 8 loses later than anything else
    assert {p(ttt, quick) for p in choices.values()} == {8}
    assert {p(ttt, slow_loss) for p in choices.values()} == {8}


@pytest.mark.parametrize("depth", [3, 4, 6])
def test_forced_wins_in_one_and_two_are_found_in_connect_four(c4, depth):
    win_in_one = play(c4, [0, 0, 1, 1, 2, 2])  # first: bottom row 0 1 2; second stacked on them; 3 wins
    win_in_two = play(c4, [2, 2, 3, 3])  # first: bottom row 2 3, open both ways: 1 or 4 makes an open three
    assert minimax_value(c4, win_in_one, depth=1) == 1.0
    assert minimax_value(c4, win_in_two, depth=1) == 0.0 and minimax_value(c4, win_in_two, depth=3) == 1.0
    assert minimax_value(c4, play(c4, [2, 2, 3, 3, 1]), depth=2) == 1.0  # the second player cannot stop it
    for heuristic in (True, False):
        choices = [MinimaxPlayer(depth, seed, heuristic=heuristic) for seed in range(6)]
        assert {p(c4, win_in_one) for p in choices} == {3}
        assert {p(c4, win_in_two) for p in choices} == {1, 4}


def test_connect_four_heuristic_counts_open_threes(c4):
    assert connect_four_heuristic(c4.initial_state()) == 0
    three = play(c4, [1, 1, 2, 2, 3])  # first player: bottom 1 2 3 (windows 0-3 and 1-4 open); second to move
    assert connect_four_heuristic(three) == -2
    assert connect_four_heuristic(c4.next_state(three, 0)) == 1  # blocked on one side: the first player to move
    assert connect_four_heuristic(c4.next_state(three, 3)) == 0  # the second's row 4: 1 2 3, open both ways too


def test_check_minimax_depth_refuses_searches_that_would_not_finish(c4):
    check_minimax_depth("tictactoe", None)
    check_minimax_depth("tictactoe", 9)
    check_minimax_depth("connect_four", 6)
    with pytest.raises(ConfigError, match=r"algo.eval_minimax_depth=20 is not allowed: expected an integer from 1 "
                                          r"to 6 for connect_four: alpha-beta"):
        check_minimax_depth("connect_four", 20, key="algo.eval_minimax_depth")
    for bad in (None, 7, 0, "4"):
        with pytest.raises(ConfigError, match=f"depth={bad!r} is not allowed"):
            check_minimax_depth("connect_four", bad)
    with pytest.raises(ConfigError, match="depth=0 is not allowed: expected an integer >= 1 or null"):
        check_minimax_depth("tictactoe", 0)
    with pytest.raises(ConfigError, match="game='go' is not allowed"):
        check_minimax_depth("go", 3)
    with pytest.raises(ConfigError, match="depth=20 is not allowed"):  # the player checks before it searches
        MinimaxPlayer(20, 0)(c4, c4.initial_state())


@pytest.mark.parametrize("name", ["tictactoe", "connect_four"])
def test_a_board_env_composes_and_other_algorithms_refuse_it(make_cfg, name):
    cfg = make_cfg("algo=ppo", f"env={name}")
    assert (cfg.env.name, cfg.env.family, cfg.env.id) == (name, "board", f"{name}_v3")
    message = (f"env='{name}' is not allowed: expected an environment for algo=ppo: a two-player board game "
               "(env.family=board) is for algo=selfplay")
    for check in (validate_env, validate):
        with pytest.raises(ConfigError) as err:
            check(cfg)
        assert str(err.value) == message
    assert validate_board_env(cfg) == name


def test_validate_board_env_refuses_single_agent_envs_and_unknown_games(make_cfg):
    with pytest.raises(ConfigError) as err:
        validate_board_env(make_cfg("algo=ppo", "env=cartpole"))
    assert str(err.value) == ("env='cartpole' is not allowed: expected a two-player board game (env.family=board) "
                              "for algo=ppo, one of tictactoe, connect_four; env.family=gym is a single-agent "
                              "environment")
    with pytest.raises(ConfigError, match="env='sentiment' is not allowed: .* env.family=text is a text task"):
        validate_board_env(make_cfg("algo=ppo", "env=sentiment"))
    with pytest.raises(ConfigError, match="env.name='chess' is not allowed: expected one of tictactoe, connect_four"):
        validate_board_env(make_cfg("algo=ppo", "env=tictactoe", "env.name=chess"))
    with pytest.raises(ConfigError, match="env.id='connect_four_v3' is not allowed: expected tictactoe_v3"):
        validate_board_env(make_cfg("algo=ppo", "env=tictactoe", "env.id=connect_four_v3"))
