"""The lecture's AlphaGo rows on tic-tac-toe (docs/lectures.md): self-play against a pool, the value network, search.

1. Opponents: ``algo=selfplay env=tictactoe`` with ``algo.opponent=pool``, ``latest`` and ``random`` (same games,
   seeds), each final greedy policy scored against minimax at depths 1, 2 and perfect play (score = wins + draws/2,
   ``--games`` games per opponent, half as the first player).
2. The value network: mean squared error and sign accuracy (decisive games) of v(s) against the outcomes of
   fresh games (the pool runs' final eval/value_mse and eval/value_accuracy).
3. Search: the pool run's networks with MCTS at N simulations against the raw policy (sampling its moves), score
   rising with N.
4. Perfect play: the trained networks with MCTS at ``--perfect-sims`` against minimax to the end of the game,
   ``--games`` games from each side: the losses must be 0. Both for the pool runs and for pool runs with
   AlphaGo's supervised start (``pool_sl``: ``--pretrain-games`` games of perfect minimax play learned first).

Usage::

    python scripts/selfplay_results.py --out-dir outputs/selfplay_results            # print the tables
    python scripts/selfplay_results.py --out-dir outputs/selfplay_results --record   # also docs/lectures.md
    python scripts/selfplay_results.py --quick                                       # smoke check
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import compose_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LECTURES = ROOT / "docs" / "lectures.md"
BEGIN, END = "<!-- selfplay_results:begin -->", "<!-- selfplay_results:end -->"


def train(overrides: list[str], run_dir: Path) -> float:
    from rlrun.cli.train import run_training

    return run_training(compose_config(overrides), run_dir)


def load_player(run_dir: Path, mcts: int, seed: int, greedy: bool = True):
    """The final checkpoint's player (MCTS at ``mcts`` simulations, or the raw policy)."""
    import torch

    from rlrun.nn.heads import network_evaluator, network_player
    from rlrun.core.checkpoint import find_checkpoint
    from rlrun.envs.board import BoardGame
    from rlrun.envs.mcts import MCTS
    from rlrun.nn.heads import MaskedPolicy, OutcomeValue

    from omegaconf import OmegaConf

    _, payload, _ = find_checkpoint(run_dir)
    cfg = OmegaConf.create(payload["config"])
    game = BoardGame(cfg["env"]["name"])
    sizes = list(cfg["algo"]["hidden_sizes"])
    policy, value = MaskedPolicy(game.obs_shape, game.num_actions, sizes), OutcomeValue(game.obs_shape, sizes)
    policy.load_state_dict(payload["policy"])
    value.load_state_dict(payload["value"])
    policy.eval(), value.eval()
    device = torch.device("cpu")
    if mcts == 0:
        if not greedy:
            torch.manual_seed(seed)
        return game, network_player(policy, device, greedy=greedy)
    evaluate = network_evaluator(policy, value, device)
    return game, MCTS(game, lambda s: evaluate(game, s), mcts, c_puct=float(cfg.algo.c_puct),
                      rollout_mix=float(cfg.algo.rollout_mix), seed=seed)


def score(result: dict, games: int) -> float:
    return (result["wins"] + result["draws"] / 2) / games


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out-dir", default="outputs/selfplay_results")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--total-games", type=int, default=100000)
    p.add_argument("--games", type=int, default=200, help="games per evaluation pairing")
    p.add_argument("--sims", type=int, nargs="+", default=[0, 4, 16, 64, 256])
    p.add_argument("--perfect-sims", type=int, default=256)
    p.add_argument("--pretrain-games", type=int, default=2000,
                   help="the pool_sl runs: games of perfect minimax play learned before self-play")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--record", action="store_true")
    args = p.parse_args()
    if args.quick:
        args.seeds, args.total_games, args.games, args.sims, args.perfect_sims, args.pretrain_games = [1], 640, 10, [0, 8], 8, 20
    from rlrun.envs.board import MinimaxPlayer
    from rlrun.envs.tournament import match

    out = Path(args.out_dir)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    common = ["algo=selfplay", "env=tictactoe", f"algo.total_games={args.total_games}", "algo.eval_interval=0",
              "algo.eval_games=100", "algo.elo_games=10", "torch_threads=1", "logging.progress=none"]
    lines, walls = [], {}
    # 1. opponents, scored against minimax
    scores: dict[str, list[list[float]]] = {}
    depths = [1, 2, None]
    variants = {"pool": ["algo.opponent=pool"], "latest": ["algo.opponent=latest"], "random": ["algo.opponent=random"],
                "pool_sl": ["algo.opponent=pool", f"algo.pretrain_games={args.pretrain_games}", "algo.pretrain_depth=null",
                            "algo.pretrain_epochs=20"]}
    for opponent, extra in variants.items():
        for seed in args.seeds:
            run = out / f"{opponent}_s{seed}"
            t0 = time.perf_counter()
            train([*common, *extra, f"seed={seed}"], run)
            walls[f"{opponent}_s{seed}"] = time.perf_counter() - t0
            game, player = load_player(run, 0, seed)
            row = [score(match(game, player, MinimaxPlayer(d, seed=seed), args.games), args.games) for d in depths]
            scores.setdefault(opponent, []).append(row)
            print(f"{opponent} seed {seed}: score vs minimax depth 1, 2, perfect = {row} ({walls[f'{opponent}_s{seed}']:.0f} s)",
                  flush=True)
    lines.append("| opponent during training | vs minimax depth 1 | depth 2 | perfect play | mean |")
    lines.append("|---|---:|---:|---:|---:|")
    for opponent, rows in scores.items():
        m = np.array(rows)
        lines.append(f"| {opponent} | " + " | ".join(f"{m[:, k].mean():.3f}" for k in range(3))
                     + f" | {m.mean():.3f} |")
    # 2. the value network
    from rlrun.core.events import scalar_values

    mse = [scalar_values(out / f"pool_s{s}")["eval/value_mse"][-1][1] for s in args.seeds]
    acc = [scalar_values(out / f"pool_s{s}")["eval/value_accuracy"][-1][1] for s in args.seeds]
    value_line = (f"value network (pool runs, positions of {100} fresh games of the sampling policy against random "
                  f"play): MSE {np.mean(mse):.3f}, sign accuracy on decisive games {np.mean(acc):.3f} "
                  f"(per seed {', '.join(f'{a:.3f}' for a in acc)})")
    # 3. search against the raw (sampling) policy
    run = out / f"pool_s{args.seeds[0]}"
    search_rows = []
    for n in args.sims:
        game, raw = load_player(run, 0, 7, greedy=False)
        _, searcher = load_player(run, n, 11) if n else load_player(run, 0, 11)
        result = match(game, searcher, raw, args.games)
        search_rows.append((n, score(result, args.games), result))
        print(f"MCTS {n} vs raw policy: {result}", flush=True)
    lines += ["", "| MCTS simulations (0 = greedy raw policy) | score against the raw sampling policy | W / D / L |",
              "|---:|---:|---|"]
    lines += [f"| {n} | {s:.3f} | {r['wins']} / {r['draws']} / {r['losses']} |" for n, s, r in search_rows]
    # 4. against perfect play from both sides
    lines += ["", f"| run | MCTS {args.perfect_sims} vs perfect play: W / D / L | draws as first / as second |",
              "|---|---|---|"]
    for variant in ("pool", "pool_sl"):
        for seed in args.seeds:
            game, searcher = load_player(out / f"{variant}_s{seed}", args.perfect_sims, seed)
            r = match(game, searcher, MinimaxPlayer(None, seed=seed), 2 * args.games)
            print(f"{variant} seed {seed}: MCTS {args.perfect_sims} vs perfect play: {r}", flush=True)
            lines.append(f"| {variant} seed {seed} | {r['wins']} / {r['draws']} / {r['losses']} | "
                         f"{r['first']['draws']} of {sum(r['first'].values())} / "
                         f"{r['second']['draws']} of {sum(r['second'].values())} |")
    wall = ", ".join(f"{k} {v:.0f} s" for k, v in walls.items())
    command = (f"python scripts/selfplay_results.py --out-dir {args.out_dir} --seeds {' '.join(map(str, args.seeds))} "
               f"--total-games {args.total_games} --games {args.games} --sims {' '.join(map(str, args.sims))} "
               f"--perfect-sims {args.perfect_sims}")
    text = "\n".join([f"`{command}` (2 CPU cores, torch_threads=1): tic-tac-toe, {args.total_games} self-play games "
                      f"per run, seeds {args.seeds}. Wall time per training run: {wall}.", "", *lines, "",
                      value_line])
    print(text)
    if args.record:
        doc = LECTURES.read_text(encoding="utf-8")
        block = f"{BEGIN}\n{text}\n{END}"
        if BEGIN in doc:
            doc = doc[:doc.index(BEGIN)] + block + doc[doc.index(END) + len(END):]
        else:
            doc += "\n## Self-play and tree search (AlphaGo's recipe) on tic-tac-toe\n\n" + block + "\n"
        LECTURES.write_text(doc, encoding="utf-8")
        print(f"recorded in {LECTURES}")


if __name__ == "__main__":
    main()
