"""Self-play policy gradient with a value network, and tree search at play time: AlphaGo's recipe (Silver et al.
2016, "Mastering the game of Go with deep neural networks and tree search", Nature) on a board game that trains on a
laptop (PettingZoo's tic-tac-toe and Connect Four, :mod:`rlrun.envs.board`).

With ``pretrain_games`` > 0 the policy first learns minimax's moves by cross-entropy (AlphaGo's supervised start
from expert games; the games are written to ``demos.npz`` in rlrun's demonstrations format). Then every update
plays ``games_per_update`` games of the current policy (the learner, first player in half of them)
against an opponent chosen per game (``opponent``):

* ``pool``: a snapshot of the policy sampled uniformly from a pool of its ``pool_size`` most recent snapshots, one
  taken every ``snapshot_interval`` updates (AlphaGo's RL policy network played "a randomly selected previous
  iteration of the policy network", which stabilizes training and avoids overfitting to the current policy);
* ``latest``: the current policy itself; ``random``: uniformly random legal moves.

Both sides sample their moves from a softmax over the legal moves only (:class:`rlrun.nn.heads.MaskedPolicy`:
illegal moves have probability exactly 0). The learner's moves are scored with the game's outcome z in {+1, 0, -1}
from its own view (no discount, no intermediate reward), and the policy steps along REINFORCE's
sum_t (z - v(s_t)) grad log pi(a_t | s_t) (Williams 1992) with the value network v as baseline (``baseline=value``),
plus an entropy bonus. The value network v(s) in [-1, 1] (:class:`rlrun.nn.heads.OutcomeValue`) is fitted by TD(1)
regression: mean squared error between v(s_t) and z at the learner's positions.

Every ``eval_interval`` games the greedy policy plays ``eval_games`` games against uniform random play and against
minimax at each of ``eval_minimax_depths`` (:mod:`rlrun.envs.tournament`), logging eval/<opponent>/win, draw, loss,
and the value network's mean squared error and sign accuracy on the positions of those games (eval/value_mse,
eval/value_accuracy on decisive games). At the end it also plays the policy with MCTS (PUCT, Silver et al. 2017,
:mod:`rlrun.envs.mcts`: priors from the policy network, leaf values from the value network) at each of
``mcts_simulations`` against the same minimax opponents, and a round robin of the pool's snapshots, the final
policy, random play and minimax (``elo_games`` per pairing), whose maximum-likelihood Elo ratings go to
``elo.csv`` (results in ``eval_results.csv``). ``global_step`` counts games.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from rlrun.core.config import ConfigError, check_choice, check_int, check_number, get
from rlrun.core.registry import AlgoSpec, register
from rlrun.core.run import Run, resolve_device
from rlrun.core.state import Counters
from rlrun.data.demos import save_demos
from rlrun.envs.board import (BoardGame, MinimaxPlayer, RandomPlayer, check_minimax_depth, minimax_demos,
                              validate_board_env)
from rlrun.envs.mcts import MCTS
from rlrun.envs.tournament import elo_ratings, match, play_game, write_csv
from rlrun.nn.heads import MaskedPolicy, OutcomeValue, network_evaluator, network_player

EVAL_SEED_OFFSET = 10_000  # evaluation opponents and MCTS draw from seed + this


def validate(cfg: DictConfig) -> None:
    """Check the selfplay keys and that env is a board game; raises ConfigError."""
    validate_board_env(cfg)
    a = "algo."
    for key in ("total_games", "games_per_update", "pool_size", "snapshot_interval", "eval_games", "elo_games"):
        check_int(cfg, a + key, low=1)
    check_int(cfg, a + "eval_interval", low=0)
    check_int(cfg, a + "pretrain_games", low=0)
    check_int(cfg, a + "pretrain_epochs", low=1)
    if int(get(cfg, a + "pretrain_games")) > 0:
        check_minimax_depth(cfg.env.name, get(cfg, a + "pretrain_depth"), key=a + "pretrain_depth")
    for key in ("learning_rate", "value_learning_rate", "max_grad_norm", "c_puct"):
        check_number(cfg, a + key, low=0, low_open=True)
    check_number(cfg, a + "ent_coef", low=0)
    check_number(cfg, a + "rollout_mix", low=0, high=1)
    check_choice(cfg, a + "baseline", ["value", "none"])
    check_choice(cfg, a + "opponent", ["pool", "latest", "random"])
    for key, low in (("eval_minimax_depths", 1), ("mcts_simulations", 0)):
        values = get(cfg, a + key)
        if not isinstance(values, (list, tuple)) and not hasattr(values, "__len__"):
            raise ConfigError(f"{a}{key}={values!r} is not allowed: expected a list")
        for value in values:
            if key == "eval_minimax_depths" and value is None:
                check_minimax_depth(cfg.env.name, None)
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{a}{key} holds {value!r}, which is not allowed: expected integers >= {low}"
                                  + (" (simulations; 0 = the raw policy)" if low == 0 else ""))
            if key == "eval_minimax_depths":
                check_minimax_depth(cfg.env.name, value)


class PolicyPool:
    """Snapshots of earlier policies to play against (Silver et al. 2016); the oldest is dropped beyond ``size``.
    Its state dict holds every snapshot, so a resumed run plays the same opponents."""

    def __init__(self, size: int):
        self.size, self.members = size, []

    def add(self, policy: torch.nn.Module) -> None:
        self.members.append({k: v.detach().clone() for k, v in policy.state_dict().items()})
        del self.members[:-self.size]

    def state_dict(self) -> dict:
        return {"members": self.members}

    def load_state_dict(self, state: dict) -> None:
        self.members = [dict(member) for member in state["members"]]


def play_for_learning(game: BoardGame, policy: MaskedPolicy, opponent, learner_first: bool,
                      device: torch.device) -> tuple[list, list, list, float]:
    """One game, both sides sampling; returns the learner's (observations, legal masks, moves) and the outcome from
    its view. ``opponent`` is a policy network or a function (game, state) -> move."""
    state, obs_list, legal_list, moves = game.initial_state(), [], [], []
    learner = 0 if learner_first else 1
    while game.outcome(state) is None:
        mine = game.to_play(state) == learner
        actor = policy if mine else opponent
        if isinstance(actor, MaskedPolicy):
            obs, legal = game.observation(state), game.legal_mask(state)
            with torch.no_grad():
                move = int(actor.distribution(torch.as_tensor(obs, device=device)[None],
                                              torch.as_tensor(legal, device=device)[None]).sample())
            if mine:
                obs_list.append(obs), legal_list.append(legal), moves.append(move)
        else:
            move = actor(game, state)
        state = game.next_state(state, move)
    outcome = game.outcome(state)
    return obs_list, legal_list, moves, outcome if learner_first else -outcome


def evaluate_players(game: BoardGame, player, cfg: DictConfig, seed: int, prefix: str = "",
                     games: int | None = None) -> dict[str, float]:
    """Win/draw/loss rates of ``player`` over ``games`` games (default ``algo.eval_games``) against random play
    and each minimax depth of the config."""
    out, games = {}, int(cfg.algo.eval_games) if games is None else games
    opponents = {"random": RandomPlayer(seed)}
    for depth in cfg.algo.eval_minimax_depths:
        opponents[f"minimax_{'full' if depth is None else depth}"] = MinimaxPlayer(depth, seed=seed)
    for name, opponent in opponents.items():
        result = match(game, player, opponent, games)
        for key in ("wins", "draws", "losses"):
            out[f"eval/{prefix}{name}/{key[:-1] if key != 'losses' else 'loss'}"] = result[key] / games
    return out


def train(cfg: DictConfig, run: Run) -> float:
    """Self-play REINFORCE with a value baseline; returns the final greedy policy's score against random play
    (wins + draws / 2 over ``eval_games`` games)."""
    algo, device = cfg.algo, resolve_device(cfg.device)
    game = BoardGame(cfg.env.name)
    policy = MaskedPolicy(game.obs_shape, game.num_actions, list(algo.hidden_sizes)).to(device)
    value = OutcomeValue(game.obs_shape, list(algo.hidden_sizes)).to(device)
    opponent_net = copy.deepcopy(policy).requires_grad_(False)
    policy_opt = torch.optim.Adam(policy.parameters(), lr=float(algo.learning_rate))
    value_opt = torch.optim.Adam(value.parameters(), lr=float(algo.value_learning_rate))
    pool, rng = PolicyPool(int(algo.pool_size)), np.random.default_rng(int(cfg.seed))
    per_update, total = int(algo.games_per_update), int(algo.total_games)
    run.set_total(total)

    def random_move(game: BoardGame, state) -> int:
        return int(rng.choice(np.flatnonzero(game.legal_mask(state))))

    # STATE: what a checkpoint holds; a resumed run continues after the checkpoint's game
    counters = Counters(updates=0)
    run.track(policy=policy, value=value, policy_optimizer=policy_opt, value_optimizer=value_opt, pool=pool,
              opponent_rng=rng, counters=counters)
    global_step = run.start_step
    if global_step == 0 and int(algo.pretrain_games) > 0:  # the supervised start, before the first snapshot
        run.log(0, pretrain(game, policy, cfg, device, run.dir))
    if not pool.members:
        pool.add(policy)

    while global_step < total:
        # ROLLOUTS: games against opponents drawn per game; the learner is first in every other game
        obs, legal, moves, returns, outcomes = [], [], [], [], []
        for g in range(per_update):
            if algo.opponent == "pool":
                opponent_net.load_state_dict(pool.members[int(rng.integers(len(pool.members)))])
                opponent = opponent_net
            else:
                opponent = policy if algo.opponent == "latest" else random_move
            o, m, a, z = play_for_learning(game, policy, opponent, learner_first=(global_step + g) % 2 == 0,
                                           device=device)
            obs, legal, moves = obs + o, legal + m, moves + a
            returns += [z] * len(a)
            outcomes.append(z)
        global_step += per_update

        # ALGO LOGIC: REINFORCE with the value baseline, TD(1) regression of the value network on the outcomes
        obs_t = torch.as_tensor(np.stack(obs), device=device)
        legal_t = torch.as_tensor(np.stack(legal), device=device)
        moves_t = torch.as_tensor(moves, device=device)
        z = torch.as_tensor(returns, dtype=torch.float32, device=device)
        v = value(obs_t)
        advantage = z - v.detach() if algo.baseline == "value" else z
        dist = policy.distribution(obs_t, legal_t)
        entropy = dist.entropy().mean()
        policy_loss = -(advantage * dist.log_prob(moves_t)).mean() - float(algo.ent_coef) * entropy
        value_loss = F.mse_loss(v, z)
        for optimizer, loss, net in ((policy_opt, policy_loss, policy), (value_opt, value_loss, value)):
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), float(algo.max_grad_norm))
            optimizer.step()
        counters.updates += 1
        if counters.updates % int(algo.snapshot_interval) == 0:
            pool.add(policy)
        results = np.array(outcomes)
        scalars = {"charts/train_win": float((results > 0).mean()), "charts/train_draw": float((results == 0).mean()),
                   "charts/pool_size": len(pool.members), "charts/updates": counters.updates,
                   "losses/policy_loss": policy_loss.item(), "losses/value_loss": value_loss.item(),
                   "losses/entropy": entropy.item()}
        interval = int(algo.eval_interval)
        if interval and global_step // interval > (global_step - per_update) // interval:
            scalars.update(evaluate_now(game, policy, value, cfg, device))
        run.log(global_step, scalars)
        if run.end_iteration(global_step):
            break

    if run.should_stop:
        run.finish(global_step)
        return float("nan")
    final = evaluate_now(game, policy, value, cfg, device)
    final.update(final_tournament(game, policy, value, pool, cfg, device, run.dir, final))
    run.log(global_step, final)
    run.finish(global_step)
    return final["eval/random/win"] + final["eval/random/draw"] / 2


def pretrain(game: BoardGame, policy: MaskedPolicy, cfg: DictConfig, device: torch.device,
             run_dir: Path) -> dict[str, float]:
    """Supervised start (Silver et al. 2016's SL policy network, here from minimax's games): ``pretrain_games`` games
    of minimax at ``pretrain_depth`` against itself, written to ``<run dir>/demos.npz`` (rlrun's demonstrations
    format, which algo=bc reads too), then ``pretrain_epochs`` epochs of cross-entropy on their moves (batches of 256,
    the policy's Adam settings); returns losses/pretrain_loss and charts/pretrain_accuracy of the last epoch."""
    algo = cfg.algo
    demos = minimax_demos(game, int(algo.pretrain_games), algo.pretrain_depth, int(cfg.seed))
    save_demos(demos, run_dir / "demos.npz")
    obs, moves = torch.as_tensor(demos.obs, device=device), torch.as_tensor(demos.actions, device=device)
    optimizer = torch.optim.Adam(policy.parameters(), lr=float(algo.learning_rate))
    generator = torch.Generator().manual_seed(int(cfg.seed))
    for _ in range(int(algo.pretrain_epochs)):
        losses, hits = [], 0
        for batch in torch.randperm(len(moves), generator=generator).split(256):
            logits = policy.logits(obs[batch])
            loss = F.cross_entropy(logits, moves[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            hits += int((logits.argmax(-1) == moves[batch]).sum())
    return {"losses/pretrain_loss": float(np.mean(losses)), "charts/pretrain_accuracy": hits / len(moves)}


def evaluate_now(game: BoardGame, policy: MaskedPolicy, value: OutcomeValue, cfg: DictConfig,
                 device: torch.device) -> dict[str, float]:
    """The greedy policy against random play and minimax, and the value network on the positions it met."""
    seed = int(cfg.seed) + EVAL_SEED_OFFSET
    policy.eval()
    scalars = evaluate_players(game, network_player(policy, device), cfg, seed)
    obs, z = [], []  # value network on fresh positions: the sampling policy against random play
    rng = np.random.default_rng(seed)
    for g in range(int(cfg.algo.eval_games)):
        o, _, _, outcome = play_for_learning(game, policy, lambda gm, s: int(rng.choice(np.flatnonzero(gm.legal_mask(s)))),
                                             g % 2 == 0, device)
        obs += o
        z += [outcome] * len(o)
    with torch.no_grad():
        v = value(torch.as_tensor(np.stack(obs), device=device)).cpu().numpy()
    z = np.array(z, np.float32)
    scalars["eval/value_mse"] = float(((v - z) ** 2).mean())
    decisive = z != 0
    scalars["eval/value_accuracy"] = float((np.sign(v[decisive]) == z[decisive]).mean()) if decisive.any() else float("nan")
    policy.train()
    return scalars


def final_tournament(game: BoardGame, policy: MaskedPolicy, value: OutcomeValue, pool: PolicyPool, cfg: DictConfig,
                     device: torch.device, run_dir: Path, raw: dict[str, float]) -> dict[str, float]:
    """MCTS at each simulation count against the evaluation opponents, and the Elo round robin; writes
    eval_results.csv (the raw policy's rates ``raw`` and MCTS's) and elo.csv."""
    algo, seed = cfg.algo, int(cfg.seed) + EVAL_SEED_OFFSET
    scalars, rows = {}, []
    evaluator = network_evaluator(policy, value, device)
    for n in algo.mcts_simulations:
        if int(n) == 0:
            continue
        search = MCTS(game, lambda s: evaluator(game, s), int(n), c_puct=float(algo.c_puct),
                      rollout_mix=float(algo.rollout_mix), seed=seed)
        scalars.update(evaluate_players(game, search, cfg, seed, prefix=f"mcts_{int(n)}/"))
    for key, value_ in [*raw.items(), *scalars.items()]:
        parts = key.split("/")  # eval/<opponent>/<outcome> (the raw policy) or eval/mcts_<n>/<opponent>/<outcome>
        if len(parts) == 3 and parts[1] not in ("value_mse", "value_accuracy"):
            parts = ["eval", "policy", *parts[1:]]
        if len(parts) == 4:
            rows.append({"player": parts[1], "opponent": parts[2], "outcome": parts[3], "rate": value_})
    players = {}
    for i, member in enumerate(pool.members):
        snapshot = copy.deepcopy(policy)
        snapshot.load_state_dict(member)
        players[f"snapshot_{i}"] = network_player(snapshot.eval(), device)
    players["final"] = network_player(policy.eval(), device)
    players["random"] = RandomPlayer(seed)
    for depth in algo.eval_minimax_depths:
        players[f"minimax_{'full' if depth is None else depth}"] = MinimaxPlayer(depth, seed=seed)
    names = list(players)
    points, games = np.zeros((len(names), len(names))), np.zeros((len(names), len(names)))
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            result = match(game, players[names[i]], players[names[j]], int(algo.elo_games))
            points[i, j] = result["wins"] + result["draws"] / 2
            points[j, i] = result["losses"] + result["draws"] / 2
            games[i, j] = games[j, i] = int(algo.elo_games)
    ratings = elo_ratings(names, points, games, anchor="random")
    write_csv(run_dir / "elo.csv", [{"player": n, "elo": round(ratings[n], 1)} for n in names])
    write_csv(run_dir / "eval_results.csv", rows)
    scalars["eval/elo_final"] = ratings["final"]
    policy.train()
    return scalars


def board_eval(cfg: DictConfig, state: dict, device: torch.device, mcts_simulations: int, games: int, seed: int,
               video_dir: Path | None) -> dict[str, float]:
    """rlrun-eval of a selfplay checkpoint: its greedy policy (with MCTS at ``mcts_simulations`` > 0, priors and leaf
    values from its networks) plays ``games`` games against random play and each ``eval_minimax_depths`` opponent;
    returns eval/<opponent>/win, draw, loss. With ``video_dir``, one game against the first minimax opponent is
    written there as game_0.mp4 (frames from PettingZoo's renderer, one move per half second)."""
    game = BoardGame(cfg.env.name)
    policy = MaskedPolicy(game.obs_shape, game.num_actions, list(cfg.algo.hidden_sizes)).to(device)
    value = OutcomeValue(game.obs_shape, list(cfg.algo.hidden_sizes)).to(device)
    for name, net in (("policy", policy), ("value", value)):
        net.load_state_dict(state[name])
        net.eval()
    if mcts_simulations > 0:
        evaluator = network_evaluator(policy, value, device)
        player = MCTS(game, lambda s: evaluator(game, s), mcts_simulations, c_puct=float(cfg.algo.c_puct),
                      rollout_mix=float(cfg.algo.rollout_mix), seed=seed)
    else:
        player = network_player(policy, device)
    scalars = evaluate_players(game, player, cfg, seed, games=games)
    if video_dir is not None:
        import imageio.v2 as imageio

        depth = next(iter(cfg.algo.eval_minimax_depths), 1)
        record: list = []
        play_game(game, player, MinimaxPlayer(depth, seed=seed), record=record)
        video_dir.mkdir(parents=True, exist_ok=True)
        states = [state_ for state_, _ in record] + [game.next_state(*record[-1])]  # record: (state, move) pairs
        with imageio.get_writer(video_dir / "game_0.mp4", fps=2, macro_block_size=1) as writer:
            for state_ in states:
                writer.append_data(game.render(state_))
    return scalars


register(AlgoSpec("selfplay", validate, train, metric="score against random play (win 1, draw 1/2)", task="board",
                  board_eval=board_eval))
