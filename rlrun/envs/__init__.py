"""Environments: what the algorithms step and what they are scored against.

    vector.py     VecEnv: N envs stepped together (ALE in C++ threads, gymnasium ids, NumPy CartPole)
    factory.py    validating env configs, make_vec_env(cfg, n), env_spaces(cfg), env properties
    lecture.py    the lectures' MDPs (recycling chain, exploration trap, random walk, gridworld) and exact models
    reference.py  exact models of tabular envs and reference values of a fixed policy (policy evaluation, Monte Carlo)
    render.py     rendering envs for videos, and a stored segment's frames from its observations (SegmentRenderer)
    rollout.py    playing whole episodes with a policy (evaluation, videos, demonstrations)
    board.py      two-player board games from PettingZoo classic (tic-tac-toe, Connect Four) as pure functions of a
                  state, random and alpha-beta minimax players
    mcts.py       PUCT Monte-Carlo tree search over a board game (AlphaGo Zero / AlphaZero)
    tournament.py games, matches from both sides, maximum-likelihood Elo ratings, CSV tables

Importing this package registers the lecture MDPs as gymnasium ids ``rlrun/...``.
"""

from rlrun.envs import lecture

lecture.register()
