"""algo=selfplay on tic-tac-toe: masked moves, a short run that logs, checkpoints and resumes exactly, rlrun-eval with
MCTS, and one clear error for each bad setting."""

from __future__ import annotations

import json
import re
import subprocess

import numpy as np
import pytest
import torch

from rlrun.cli.evaluate import evaluate_board
from rlrun.cli.train import run_training
from rlrun.core.config import ConfigError
from rlrun.envs.board import BoardGame
from rlrun.nn.heads import MaskedPolicy

SHORT = ["algo=selfplay", "env=tictactoe", "algo.total_games=192", "algo.games_per_update=16", "algo.eval_interval=96",
         "algo.eval_games=6", "algo.elo_games=2", "algo.snapshot_interval=2", "algo.pool_size=3",
         "algo.eval_minimax_depths=[1]", "algo.mcts_simulations=[0,4]", "checkpoint.interval=64", "seed=3"]


def without_timing(scalars):
    return {tag: values for tag, values in scalars.items() if not tag.startswith("perf/") and tag != "charts/SPS"}


def test_masked_policy_never_plays_an_illegal_move():
    game = BoardGame("tictactoe")
    state = game.initial_state()
    for move in (0, 4, 8, 2, 6, 3, 5):  # two squares left: 1 and 7
        state = game.next_state(state, move)
    legal = game.legal_mask(state)
    assert np.flatnonzero(legal).tolist() == [1, 7]
    torch.manual_seed(0)
    policy = MaskedPolicy(game.obs_shape, game.num_actions, [16])
    with torch.no_grad():  # push the logits hard towards an illegal square: masking must still win
        policy.logits[-1].net[-1].bias.copy_(torch.tensor([50.0] * 9))
        policy.logits[-1].net[-1].bias[1] = -50.0
    obs = torch.as_tensor(game.observation(state))[None].repeat(2000, 1, 1, 1)
    dist = policy.distribution(obs, torch.as_tensor(legal)[None].repeat(2000, 1))
    moves = dist.sample()
    assert set(moves.tolist()) <= {1, 7} and (dist.probs[:, ~torch.as_tensor(legal)] == 0).all()
    with pytest.raises(ValueError, match="without a legal move"):
        policy.distribution(obs[:1], torch.zeros(1, 9, dtype=torch.bool))


def test_short_selfplay_run_logs_checkpoints_and_resumes_exactly(stop_and_resume, tmp_path):
    whole, split, ckpt = stop_and_resume(SHORT, stop_at=64)
    assert ckpt["global_step"] == 64 and len(ckpt["pool"]["members"]) >= 2  # the opponent pool is in the checkpoint
    assert without_timing(whole) == without_timing(split)
    for tag in ("losses/policy_loss", "losses/value_loss", "charts/train_win", "eval/random/win",
                "eval/minimax_1/draw", "eval/value_mse", "eval/mcts_4/minimax_1/win", "eval/elo_final"):
        assert tag in whole, tag
    elo = (tmp_path / "whole" / "elo.csv").read_text().splitlines()
    assert elo[0] == "player,elo" and any(line.startswith("random,0.0") for line in elo)
    assert (tmp_path / "whole" / "eval_results.csv").is_file()


def test_rlrun_eval_plays_a_checkpoint_with_mcts(make_cfg, tmp_path, cli_argv):
    run_training(make_cfg(*SHORT[:-2], "algo.mcts_simulations=[0]", "algo.total_games=32"), tmp_path / "run")
    result = evaluate_board(tmp_path / "run", games=4, mcts_simulations=8)
    assert set(result["rates"]) >= {"eval/random/win", "eval/minimax_1/loss"}
    assert all(0 <= v <= 1 for v in result["rates"].values())
    assert json.loads((tmp_path / "run" / "eval" / "step_000000000032_mcts8.json").read_text())["games"] == 4
    bad = subprocess.run(cli_argv("rlrun-eval", tmp_path / "run", "--mcts-simulations", "-1"), capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "--mcts-simulations=-1 is not allowed" in bad.stderr


@pytest.mark.parametrize("change, expected", [
    (["env=cartpole"], "algo=selfplay"),
    (["algo.pool_size=0"], "algo.pool_size=0 is not allowed: expected an integer >= 1"),
    (["algo.mcts_simulations=[-1]"], "algo.mcts_simulations holds -1"),
    (["env=connect_four", "algo.eval_minimax_depths=[20]"], "20"),
    (["algo.opponent=self"], "algo.opponent='self' is not allowed"),
])
def test_bad_settings_are_one_error_before_anything_runs(make_cfg, tmp_path, change, expected):
    with pytest.raises(ConfigError, match=re.escape(expected)):
        run_training(make_cfg(*SHORT, *change), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_board_game_is_refused_by_a_single_agent_algorithm(make_cfg, tmp_path):
    with pytest.raises(ConfigError, match="board game"):
        run_training(make_cfg("algo=ppo", "env=tictactoe"), tmp_path / "run")


def test_supervised_start_learns_minimax_moves_from_demonstrations(make_cfg, tmp_path):
    from rlrun.core.events import scalar_values
    from rlrun.data.demos import load_demos

    run_training(make_cfg(*SHORT, "algo.total_games=16", "algo.pretrain_games=40", "algo.pretrain_depth=null",
                          "algo.pretrain_epochs=30", "algo.mcts_simulations=[0]"), tmp_path / "run")
    demos = load_demos(tmp_path / "run" / "demos.npz")
    assert demos.num_episodes == 40 and demos.obs.shape[1:] == (3, 3, 2)
    # perfect play against itself always draws: every episode's outcome rewards are 0 and a game lasts 9 moves
    assert (demos.episode_lengths == 9).all() and (demos.rewards == 0).all()
    scalars = scalar_values(tmp_path / "run")
    # chance: a uniformly random legal move (the empty squares, where neither plane has a stone) is the expert's one
    # with probability 1 / (empty squares); the pretrained policy must do clearly better (ties among equally good
    # expert moves cap what any learner can reach)
    chance = float(np.mean(1.0 / (demos.obs.sum(axis=-1) == 0).reshape(len(demos.obs), -1).sum(axis=1)))
    assert 0.25 < chance < 0.4
    assert scalars["charts/pretrain_accuracy"][0][1] > chance + 0.15
