"""What algorithms learn from: the replay buffer (replay.py), on-policy rollout storage and GAE (rollout.py),
whole episodes and their returns (episodes.py), and expert demonstrations (demos.py)."""
