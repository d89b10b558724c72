"""The algorithms, one module each, read top to bottom like CleanRL's scripts.

Each module ends with ``register(AlgoSpec(name, validate, train, make_policy, ...))``
(rlrun.core.registry): what ``algo=<name>`` runs, how its config is checked, how its checkpoints play
and what its final metric is. The imports below are the registry's whole list; adding an algorithm
is one module here and one line below (docs/architecture.md).
"""

from rlrun.algos import (bc, dagger, dpo, dqn, maxent_irl, pbrl, ppo, ppo_rlhf, q_learning, reinforce, reward_model,
                         selfplay, sft, td, value_iteration)

__all__ = ["bc", "dagger", "dpo", "dqn", "maxent_irl", "pbrl", "ppo", "ppo_rlhf", "q_learning", "reinforce",
           "reward_model", "selfplay", "sft", "td", "value_iteration"]
