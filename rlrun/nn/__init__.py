"""Networks: the Nature CNN, MLPs and one-hot encoding (networks.py), policy and value heads (heads.py),
running normalization of observations and rewards (normalize.py) and the optimizer factory (optim.py)."""
