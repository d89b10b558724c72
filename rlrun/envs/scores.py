"""Published scores that put a run's final return in context, printed as a run's last line.

Sources: random and human play on Atari from Mnih et al. 2015 ("Human-level control through deep
reinforcement learning", Nature, Extended Data Table 2); full-length results from CleanRL's benchmark tables
(Huang et al. 2022, JMLR; the dqn_atari / dqn / ppo_atari rows, mean over 3 seeds); solved thresholds from
gymnasium's ``reward_threshold``.
"""

from __future__ import annotations

# env id -> (what a trivial player scores, its source)
BASELINES = {
    "breakout": "random play scores 1.7 and a human 31.8 (Mnih et al. 2015)",
    "pong": "random play scores -20.7 and a human 9.3 (Mnih et al. 2015)",
    "CartPole-v1": "random play lasts about 22 steps; 475 counts as solved (gymnasium)",
    "Acrobot-v1": "random play scores -500 (no swing-up in time); -100 counts as solved (gymnasium)",
}

# (algo, env id) -> what the full-length run reaches
FULL_RUNS = {
    ("dqn", "breakout"): "the full 10M-step DQN run scores 366.9 in CleanRL's table",
    ("dqn", "pong"): "the full 10M-step DQN run scores 20.25 in CleanRL's table",
    ("ppo", "breakout"): "the full 10M-frame PPO run scores 414.7 in CleanRL's table",
    ("ppo", "pong"): "the full 10M-frame PPO run scores 20.36 in CleanRL's table",
    ("dqn", "CartPole-v1"): "DQN scores 488.7 after 500k steps in CleanRL's table",
    ("dqn", "Acrobot-v1"): "DQN scores -91.5 after 500k steps in CleanRL's table",
    ("ppo", "CartPole-v1"): "PPO scores 490.0 after 500k steps in CleanRL's table",
    ("ppo", "Acrobot-v1"): "PPO scores -86.4 after 500k steps in CleanRL's table",
}


def score_context(algo: str, env_id: str) -> str | None:
    """One sentence of published scores for a run of ``algo`` on ``env_id`` (an ALE ROM name or a gymnasium
    id), e.g. "for scale: random play scores 1.7 and a human 31.8 (Mnih et al. 2015); the full 10M-step DQN
    run scores 366.9 in CleanRL's table"; None for a pair with nothing published here."""
    parts = [text for text in (BASELINES.get(env_id), FULL_RUNS.get((algo, env_id))) if text]
    return "for scale: " + "; ".join(parts) if parts else None
