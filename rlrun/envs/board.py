"""Two-player board games (tic-tac-toe, Connect Four) as pure functions of a hashable state, and players for them.

The rules are PettingZoo's classic envs (Terry et al. 2021, "PettingZoo: Gym for multi-agent reinforcement
learning", NeurIPS; ``tictactoe_v3`` and ``connect_four_v3``): a BoardGame keeps one scratch PettingZoo object per
game, loads a State into it, plays the move there and reads the board and the result back, so legal moves, the
winner and draws are PettingZoo's own (tic-tac-toe: ``pettingzoo.classic.tictactoe.board.Board``; Connect Four: the
raw env's ``step``, which drops the piece and calls its ``check_for_winner``). Observations and frames are built as
PettingZoo's ``observe`` and ``rgb_array`` render build them.

    BoardGame(name)          initial_state, to_play, legal_mask, legal_actions, next_state, outcome, observation, render
    RandomPlayer(seed)       a uniformly random legal move
    MinimaxPlayer(depth, seed)   alpha-beta search (Knuth & Moore 1975) with a transposition cache
    minimax_value(game, state, depth)   the game value under perfect play (to ``depth`` plies)
    check_minimax_depth(game_name, depth)   ConfigError for a search depth that would not finish in reasonable time
    validate_board_env(cfg)  the env keys of algo=selfplay

A State is ``(board, to_play, outcome)``: ``board`` a tuple of ints in PettingZoo's own layout (0 empty, 1 the first
player's stone, 2 the second's; tic-tac-toe: the 9 squares in PettingZoo's numbering, Connect Four: the 6x7 grid
row-major, row 0 at the top), ``to_play`` 0 or 1, and ``outcome`` None while the game goes on, else +1.0 (the first
player won), -1.0 (the second won) or 0.0 (a draw), kept in the state so that ``outcome`` costs nothing. It is
immutable and hashable: MCTS and minimax key their caches on it.
"""

from __future__ import annotations

import operator
from typing import Protocol

import numpy as np
from omegaconf import DictConfig
from pettingzoo.classic.connect_four import connect_four as pz_connect_four
from pettingzoo.classic.tictactoe import board as pz_tictactoe_board
from pettingzoo.classic.tictactoe import tictactoe as pz_tictactoe

from rlrun.core.config import check_choice, fail, get
from rlrun.data.demos import Demos

State = tuple  # (board: tuple[int, ...], to_play: 0 | 1, outcome: float | None); see the module docstring

GAMES = {"tictactoe": "tictactoe_v3", "connect_four": "connect_four_v3"}  # rlrun's name -> PettingZoo's env name

# The deepest search check_minimax_depth allows (None: to the end of the game). Minimax here is pure Python over
# PettingZoo's rules (about 25 us per Connect Four move): depth 6 takes about 0.2 s per move (0.35 s in the middle
# game), depth 8 about 1.5 s (2 s), and each further ply 2 to 3 times more, so a match of games at depth 8 or more
# takes many minutes; the whole game (42 plies) is far out of reach.
MAX_MINIMAX_DEPTH = {"tictactoe": None, "connect_four": 6}

_WIN = 1000  # a won end's score: _WIN + empty cells left (a quicker win scores higher); heuristics stay below _WIN
_INF = 10**9
_EXACT, _LOWER, _UPPER = 0, 1, 2  # what a cached score is: the exact value, a lower bound or an upper bound
_CACHE_LIMIT = 2_000_000  # a MinimaxPlayer's cache is cleared when it grows beyond this many entries
_RENDER_TICTACTOE_HEIGHT = 300  # tic-tac-toe frames are 300x300 (PettingZoo's screen_height; its default is 1000)
_RENDER_CONNECT_FOUR_SCALING = 4  # Connect Four frames are 344x396 (PettingZoo's screen_scaling; default 9)


def _check_game_name(name: str, key: str = "game") -> None:
    if name not in GAMES:
        fail(key, name, "a board game, one of " + ", ".join(GAMES))


class BoardGame:
    """A two-player, zero-sum, alternating-move board game from PettingZoo classic, as a pure-function model.

    Attributes:
        name: ``"tictactoe"`` or ``"connect_four"``.
        pettingzoo_id: PettingZoo's env name, ``"tictactoe_v3"`` or ``"connect_four_v3"``.
        num_actions: 9 (tic-tac-toe squares, PettingZoo's numbering: columns top to bottom, 0 3 6 / 1 4 7 / 2 5 8)
            or 7 (Connect Four columns, left to right).
        obs_shape: (3, 3, 2) or (6, 7, 2): PettingZoo's observation planes.
        max_moves: 9 or 42, the longest game in plies.

    Methods are pure functions of a State (the scratch PettingZoo object inside is reloaded on every call), so one
    BoardGame may serve many searches; it is not thread-safe.

    Raises:
        ConfigError: for an unknown ``name``, naming it and the games allowed.
    """

    def __init__(self, name: str) -> None:
        _check_game_name(name)
        self.name = name
        self.pettingzoo_id = GAMES[name]
        if name == "tictactoe":
            self.num_actions, self.obs_shape, self.max_moves = 9, (3, 3, 2), 9
            self._board = pz_tictactoe_board.Board()  # PettingZoo's rules: play_turn and game_status
        else:
            self.num_actions, self.obs_shape, self.max_moves = 7, (6, 7, 2), 42
            self._env = pz_connect_four.raw_env()  # PettingZoo's rules: step (gravity, winner, draw)
            self._env.reset()
        self._cells = self.obs_shape[0] * self.obs_shape[1]
        self._render_env = None  # built on the first render

    def __repr__(self) -> str:
        return f"BoardGame({self.name!r})"

    def initial_state(self) -> State:
        """The empty board, the first player to move."""
        return ((0,) * self._cells, 0, None)

    def to_play(self, state: State) -> int:
        """0 if the first player is to move, 1 if the second (at the end: the player who would move next)."""
        return state[1]

    def outcome(self, state: State) -> float | None:
        """None while the game goes on; else +1.0 (the first player won), -1.0 (the second won) or 0.0 (a draw)."""
        return state[2]

    def legal_actions(self, state: State) -> list[int]:
        """The legal actions in increasing order; empty when the game is over."""
        if state[2] is not None:
            return []
        board = state[0]  # tic-tac-toe: an empty square; Connect Four: a column whose top cell (row 0) is empty
        return [a for a in range(self.num_actions) if board[a] == 0]

    def legal_mask(self, state: State) -> np.ndarray:
        """(num_actions,) bool: True where the action is legal; all False when the game is over (PettingZoo's own
        mask still lists empty cells after a win)."""
        if state[2] is not None:
            return np.zeros(self.num_actions, dtype=bool)
        return np.array(state[0][: self.num_actions]) == 0

    def next_state(self, state: State, action: int) -> State:
        """The state after the player to move plays ``action``, by PettingZoo's rules.

        Raises:
            ValueError: naming the action, if it is not an integer in [0, num_actions), not legal here (an occupied
                square, a full column) or the game is already over.
        """
        board, player, outcome = state
        try:
            action = operator.index(action)
        except TypeError:
            raise ValueError(f"action {action!r} is not allowed: expected an integer in [0, {self.num_actions})")
        if outcome is not None:
            raise ValueError(f"action {action} is not allowed: the game is over (outcome {outcome:+g})")
        if not 0 <= action < self.num_actions or board[action] != 0:
            raise ValueError(f"action {action} is illegal here: the legal actions are {self.legal_actions(state)}")
        if self.name == "tictactoe":
            rules = self._board
            rules.squares = list(board)
            rules.play_turn(player, action)
            status = rules.game_status()
            if status == pz_tictactoe_board.TTT_GAME_NOT_OVER:
                outcome = None
            elif status == pz_tictactoe_board.TTT_TIE:
                outcome = 0.0
            else:
                outcome = 1.0 if status == pz_tictactoe_board.TTT_PLAYER1_WIN else -1.0
            return (tuple(rules.squares), 1 - player, outcome)
        env = self._env
        env.reset()
        env.board = list(board)
        if player == 1:
            env.agent_selection = env._agent_selector.next()
        env.step(action)
        if env.terminations["player_0"]:
            outcome = float(env.rewards["player_0"])  # +1 the first player won, -1 lost, 0 a draw
        return (tuple(env.board), 1 - player, outcome)

    def observation(self, state: State) -> np.ndarray:
        """``obs_shape`` float32 of 0/1 from the view of the player to move, as PettingZoo's ``observe``: plane 0
        their stones, plane 1 the opponent's (tic-tac-toe: ``board.reshape(3, 3)`` of the square numbers, so
        ``obs[i, j]`` is square ``3 i + j``)."""
        cells = np.array(state[0], dtype=np.int8).reshape(self.obs_shape[:2])
        obs = np.empty(self.obs_shape, dtype=np.float32)
        obs[..., 0] = cells == state[1] + 1
        obs[..., 1] = cells == 2 - state[1]
        return obs

    def render(self, state: State) -> np.ndarray:
        """(H, W, 3) uint8: PettingZoo's ``rgb_array`` frame of the board (tic-tac-toe 300x300, Connect Four
        344x396). Needs pygame (which PettingZoo imports); no display is opened."""
        env = self._render_env
        if env is None:
            if self.name == "tictactoe":
                env = pz_tictactoe.raw_env(render_mode="rgb_array", screen_height=_RENDER_TICTACTOE_HEIGHT)
            else:
                env = pz_connect_four.raw_env(render_mode="rgb_array", screen_scaling=_RENDER_CONNECT_FOUR_SCALING)
            env.reset()
            self._render_env = env
        if self.name == "tictactoe":
            env.board.squares = list(state[0])
        else:
            env.board = list(state[0])
        return np.ascontiguousarray(env.render(), dtype=np.uint8)


class Player(Protocol):
    """Anything that picks a move: ``player(game, state)`` -> a legal action of a state that is not over."""

    def __call__(self, game: BoardGame, state: State) -> int: ...


class RandomPlayer:
    """A uniformly random legal move, from its own generator (``np.random.default_rng(seed)``)."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def __repr__(self) -> str:
        return "RandomPlayer()"

    def __call__(self, game: BoardGame, state: State) -> int:
        legal = game.legal_actions(state)
        if not legal:
            raise ValueError("the game is over: there is no move to choose")
        return int(legal[self.rng.integers(len(legal))])


# Moves tried in this order (the centre first): better moves early let alpha-beta prune more.
_MOVE_ORDER = {"tictactoe": (4, 0, 2, 6, 8, 1, 3, 5, 7), "connect_four": (3, 2, 4, 1, 5, 0, 6)}
_CONNECT_FOUR_WINDOWS = tuple(  # the 69 lines of four cells of the 6x7 grid (row-major indices), for the heuristic
    tuple((r + i * dr) * 7 + c + i * dc for i in range(4))
    for dr, dc in ((0, 1), (1, 0), (1, 1), (-1, 1))
    for r in range(6) for c in range(7)
    if 0 <= r + 3 * dr < 6 and c + 3 * dc < 7
)


def connect_four_heuristic(state: State) -> int:
    """Open threes of the player to move minus the opponent's: lines of four cells holding three of one player's
    stones and an empty cell (an integer in [-69, 69], below any won end's score)."""
    board, player = state[0], state[1]
    mine, theirs = player + 1, 2 - player
    score = 0
    for window in _CONNECT_FOUR_WINDOWS:
        cells = [board[i] for i in window]
        if cells.count(0) == 1:
            if cells.count(mine) == 3:
                score += 1
            elif cells.count(theirs) == 3:
                score -= 1
    return score


def _negamax(game: BoardGame, state: State, depth: int, alpha: int, beta: int, cache: dict,
             heuristic: bool) -> int:
    """The alpha-beta score of ``state`` from the view of the player to move (fail-soft negamax; Knuth & Moore
    1975). A won end scores ``_WIN + empty cells`` for the winner (so quicker wins and slower losses are
    preferred), a draw 0, a leaf at the depth limit 0 or the Connect Four heuristic. ``cache`` maps
    ``(state, plies searched)`` to (kind, score), where kind says whether the score is exact or a bound."""
    board, player, outcome = state
    empty = board.count(0)
    if outcome is not None:
        return 0 if outcome == 0 else int(outcome if player == 0 else -outcome) * (_WIN + empty)
    depth = min(depth, empty)  # no game lasts longer than its empty cells: deeper searches are the same search
    if depth == 0:
        return connect_four_heuristic(state) if heuristic and game.name == "connect_four" else 0
    key = (state, depth)
    hit = cache.get(key)
    if hit is not None:
        kind, score = hit
        if kind == _EXACT:
            return score
        if kind == _LOWER:
            alpha = max(alpha, score)
        else:
            beta = min(beta, score)
        if alpha >= beta:
            return score
    alpha0, best = alpha, -_INF
    for action in _MOVE_ORDER[game.name]:
        if board[action] != 0:
            continue
        score = -_negamax(game, game.next_state(state, action), depth - 1, -beta, -alpha, cache, heuristic)
        if score > best:
            best = score
            if score > alpha:
                alpha = score
                if alpha >= beta:
                    break
    cache[key] = (_UPPER if best <= alpha0 else _LOWER if best >= beta else _EXACT, best)
    return best


def _best_moves(game: BoardGame, state: State, depth: int | None, cache: dict, heuristic: bool) -> tuple[int, list]:
    """(best score, every action that reaches it) at the root, from the view of the player to move. Each move is
    searched with the window (best - 1, inf), so moves as good as the best get exact scores and worse ones fail
    low (scores are integers)."""
    if state[2] is not None:
        raise ValueError("the game is over: there is no move to choose")
    depth = game.max_moves if depth is None else depth
    best, ties = -_INF, []
    for action in game.legal_actions(state):
        score = -_negamax(game, game.next_state(state, action), depth - 1, -_INF, -(best - 1), cache, heuristic)
        if score > best:
            best, ties = score, [action]
        elif score == best:
            ties.append(action)
    return best, ties


def _check_depth_arg(depth: int | None) -> None:
    if depth is not None and (not isinstance(depth, int) or isinstance(depth, bool) or depth < 1):
        raise ValueError(f"depth={depth!r} is not allowed: expected an integer >= 1 or None (to the end)")


def minimax_value(game: BoardGame, state: State, depth: int | None = None) -> float:
    """The value of ``state`` under perfect play of both sides, from the first player's view: +1.0 (the first player
    wins), -1.0 (the second wins) or 0.0 (a draw, or no forced result within ``depth`` plies).

    Alpha-beta minimax (Knuth & Moore 1975, "An analysis of alpha-beta pruning", Artificial Intelligence 6) with
    a transposition cache of its own; leaves at the depth limit count 0 (no heuristic). Tic-tac-toe from the empty
    board: 0.0 (a draw), in about 0.01 s.

    Raises:
        ValueError: for a depth that is not None or an integer >= 1.
    """
    _check_depth_arg(depth)
    if state[2] is not None:
        return float(state[2])
    score = _negamax(game, state, game.max_moves if depth is None else depth, -_INF, _INF, {}, False)
    sign = (score > 0) - (score < 0)
    return float(sign if state[1] == 0 else -sign)


class MinimaxPlayer:
    """Alpha-beta minimax to ``depth`` plies (None: to the end of the game).

    Among equally good moves it picks uniformly at random with its own generator (``np.random.default_rng(seed)``),
    so games against it vary. Won ends score more the quicker they come, so it takes the quickest win and, when
    lost, the slowest loss. Leaves at the depth limit score 0, or on Connect Four with ``heuristic`` the open
    threes of the player to move minus the opponent's (:func:`connect_four_heuristic`, always below a win). A
    transposition cache keyed on (state, plies searched) is kept across moves and games (cleared past 2 million
    entries). ``MinimaxPlayer(None)`` plays tic-tac-toe perfectly.

    Args:
        depth: plies to search (>= 1), or None for the whole game.
        seed: seed of the tie-breaking generator.
        heuristic: score Connect Four leaves at the depth limit by open threes (else 0).
        check_depth: on the first move of each game, refuse a depth beyond :data:`MAX_MINIMAX_DEPTH` with
            :func:`check_minimax_depth` (a ConfigError) instead of searching for hours.

    Raises:
        ValueError: for a depth that is not None or an integer >= 1; on a call, if the game is over.
        ConfigError: on a call, for a depth too deep for the game (with ``check_depth``).
    """

    def __init__(self, depth: int | None = None, seed: int = 0, heuristic: bool = True,
                 check_depth: bool = True) -> None:
        _check_depth_arg(depth)
        self.depth, self.heuristic, self.check_depth = depth, heuristic, check_depth
        self.rng = np.random.default_rng(seed)
        self.cache: dict = {}
        self._checked: set[str] = set()

    def __repr__(self) -> str:
        return f"MinimaxPlayer(depth={self.depth})"

    def values(self, game: BoardGame, state: State) -> tuple[int, list[int]]:
        """(the best score from the view of the player to move, the actions that reach it). Scores: a win
        ``1000 + empty cells at its end``, a loss the negative, a draw or an unresolved leaf 0 (or the heuristic)."""
        if self.check_depth and game.name not in self._checked:
            check_minimax_depth(game.name, self.depth)
            self._checked.add(game.name)
        if len(self.cache) > _CACHE_LIMIT:
            self.cache.clear()
        return _best_moves(game, state, self.depth, self.cache, self.heuristic)

    def __call__(self, game: BoardGame, state: State) -> int:
        _, ties = self.values(game, state)
        return int(ties[self.rng.integers(len(ties))])


def check_minimax_depth(game_name: str, depth: int | None, key: str = "depth") -> None:
    """Refuse a minimax depth that would not finish in reasonable time.

    Tic-tac-toe: any depth >= 1 or None (the whole game takes about 0.01 s). Connect Four: 1 to 6 (see
    :data:`MAX_MINIMAX_DEPTH`: depth 6 takes about 0.2 s per move, and each further ply 2 to 3 times more).

    Raises:
        ConfigError: naming ``key`` (e.g. ``algo.eval_minimax_depth``), the depth and what is allowed; or an
            unknown game.
    """
    _check_game_name(game_name)
    limit = MAX_MINIMAX_DEPTH[game_name]
    if depth is None and limit is None:
        return
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1 or (limit is not None and depth > limit):
        if limit is None:
            fail(key, depth, "an integer >= 1 or null (to the end of the game)")
        fail(key, depth, f"an integer from 1 to {limit} for {game_name}: alpha-beta over PettingZoo's rules in "
             f"pure Python takes about 0.2 s per move at depth {limit} and 2 to 3 times more per further ply, so "
             "games would take minutes each (the whole game is far out of reach)")


def validate_board_env(cfg: DictConfig) -> str:
    """Check the env keys of a board-game algorithm (algo=selfplay): ``env.family`` is ``board``, ``env.name`` a
    known game and ``env.id`` its PettingZoo env. Builds nothing; returns the game's name.

    Raises:
        ConfigError: for a single-agent env or a text task (naming the env and the games allowed), an unknown
            game or a mismatched id.
    """
    family = get(cfg, "env.family")
    if family != "board":
        what = "a text task" if family == "text" else "a single-agent environment"
        fail("env", get(cfg, "env.name"), f"a two-player board game (env.family=board) for "
             f"algo={get(cfg, 'algo.name')}, one of {', '.join(GAMES)}; env.family={family} is {what}")
    name = check_choice(cfg, "env.name", list(GAMES))
    env_id = get(cfg, "env.id")
    if env_id != GAMES[name]:
        fail("env.id", env_id, f"{GAMES[name]} for env.name={name} (the PettingZoo env whose rules it is)")
    return name



def minimax_demos(game: BoardGame, games: int, depth: int | None, seed: int) -> Demos:
    """Demonstrations for a supervised start (Silver et al. 2016 first trained the policy network on expert games):
    ``games`` games of :class:`MinimaxPlayer` (``depth``, seeded random tie-breaking, so games differ) against
    itself, every move of both sides as one step, in rlrun's demonstrations format (:mod:`rlrun.data.demos`: obs
    (N, *obs_shape) float32 from the mover's view, actions (N,) int64, rewards (N,) the game's outcome for the
    mover at its last move and 0 before, one episode per game).

    Raises:
        ConfigError: if ``depth`` is beyond :func:`check_minimax_depth`'s limit.
    """
    check_minimax_depth(game.name, depth)
    players = (MinimaxPlayer(depth, seed=seed), MinimaxPlayer(depth, seed=seed + 1))
    obs, actions, rewards, lengths = [], [], [], []
    for _ in range(games):
        state, movers, n = game.initial_state(), [], 0
        while game.outcome(state) is None:
            player = game.to_play(state)
            move = players[player](game, state)
            obs.append(game.observation(state))
            actions.append(move)
            rewards.append(0.0)
            movers.append(player)
            state = game.next_state(state, move)
            n += 1
        outcome = game.outcome(state)
        for back, player in enumerate(movers[::-1][:2]):  # each side's last move carries its result
            rewards[-1 - back] = outcome if player == 0 else -outcome
        lengths.append(n)
    return Demos(game.pettingzoo_id, np.stack(obs).astype(np.float32), np.array(actions, np.int64),
                 np.array(rewards, np.float32), np.array(lengths, np.int64), action_n=game.num_actions,
                 source=f"minimax depth {depth} self-play, seed {seed}")
