"""Environments: what the algorithms step and what they are scored against.

    vector.py     VecEnv: N envs stepped together (ALE in C++ threads, gymnasium ids, NumPy CartPole)
    factory.py    validating env configs, make_vec_env(cfg, n), env_spaces(cfg), env properties
    lecture.py    the lectures' MDPs (recycling chain, exploration trap, random walk, gridworld) and exact models
    reference.py  exact models of tabular envs and reference values of a fixed policy (policy evaluation, Monte Carlo)
    render.py     rendering envs for videos
    rollout.py    playing whole episodes with a policy (evaluation, videos, demonstrations)

Importing this package registers the lecture MDPs as gymnasium ids ``rlrun/...``.
"""

from rlrun.envs import lecture

lecture.register()
