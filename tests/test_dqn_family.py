"""The Rainbow components of algo=dqn: sum tree, prioritized replay, n-step returns, C51's projection,
dueling and noisy layers, against hand-computed values and exact distributions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from rlrun.algos.dqn import categorical_projection
from rlrun.data.replay import PrioritizedReplayBuffer, ReplayBuffer, SumTree
from rlrun.nn.qnets import NoisyLinear, QNetwork, dueling_aggregate, make_q_network, reset_noise


# ---- sum tree ------------------------------------------------------------------------------------------------

def test_sum_tree_totals_and_inner_nodes_follow_updates():
    tree = SumTree(5)  # 8 leaves: nodes 1..7, leaves at 8..15
    assert tree.size == 8 and tree.total == 0
    tree.update(np.array([0, 1, 2, 3, 4]), np.array([1.0, 2.0, 3.0, 4.0, 5.0]))
    assert tree.total == 15
    assert tree.tree[2] == 10 and tree.tree[3] == 5  # leaves 0..3 and 4..7
    assert tree.tree[4] == 3 and tree.tree[5] == 7 and tree.tree[6] == 5
    tree.update(np.array([1, 4, 1]), np.array([9.0, 0.5, 0.0]))  # a repeated index keeps its last value
    assert tree[np.array([0, 1, 4])].tolist() == [1.0, 0.0, 0.5]
    assert tree.total == 1 + 0 + 3 + 4 + 0.5


def test_sum_tree_search_returns_the_leaf_whose_prefix_interval_holds_the_value():
    tree = SumTree(4)
    tree.update(np.arange(4), np.array([1.0, 0.0, 2.0, 3.0]))  # prefix sums 0, 1, 1, 3, 6
    values = np.array([0.0, 0.999, 1.0, 2.5, 2.999, 3.0, 5.999])
    assert tree.find(values).tolist() == [0, 0, 2, 2, 2, 3, 3]  # the empty leaf 1 is never found


def test_sum_tree_samples_in_proportion_to_priorities():
    """Chi-square goodness of fit of 200,000 searches at uniform values against p_i / sum p (fixed seed)."""
    priorities = np.array([1.0, 2.0, 3.0, 4.0, 0.0, 10.0, 0.5])
    tree = SumTree(len(priorities))
    tree.update(np.arange(len(priorities)), priorities)
    rng = np.random.default_rng(1)
    values = rng.random(200_000) * tree.total
    leaves = tree.find(values)
    np.testing.assert_array_equal(leaves, np.searchsorted(np.cumsum(priorities), values, side="right"))
    counts = np.bincount(leaves, minlength=len(priorities))
    assert counts[4] == 0
    nonzero = priorities > 0
    expected = priorities[nonzero] / priorities.sum() * len(leaves)
    assert stats.chisquare(counts[nonzero], expected).pvalue > 0.01
    # a wrong distribution (uniform over the non-empty leaves) is rejected by the same test
    uniform = np.full(nonzero.sum(), len(leaves) / nonzero.sum())
    assert stats.chisquare(counts[nonzero], uniform).pvalue < 1e-6


def vector_buffer(cls=ReplayBuffer, capacity=16, n_step=1, gamma=0.5, num_envs=1, **kw):
    return cls(capacity, (1,), np.float32, num_envs=num_envs, n_step=n_step, gamma=gamma, seed=0, **kw)


def add(rb, obs, reward, terminated=False, end=False, final=0.0):
    m = rb.num_envs
    rb.add(np.full((m, 1), obs, np.float32), np.zeros(m, np.int64), np.full(m, reward, np.float32),
           np.full(m, terminated), np.full(m, end), np.full((m, 1), final, np.float32))


def test_prioritized_sampling_follows_priorities_and_weights_follow_the_paper():
    rb = vector_buffer(PrioritizedReplayBuffer, capacity=8, alpha=0.5)
    for i in range(6):
        add(rb, i, 0.0)
    # slots 0..4 are valid (the newest, 5, has no successor yet) and enter at the maximum priority 1
    assert rb.tree[np.arange(8)].tolist() == [1, 1, 1, 1, 1, 0, 0, 0]
    rb.update_priorities(np.array([0, 1, 2, 3, 4]), np.array([0.0, 1.0, 3.0, -8.0, 15.0]))
    p = (np.array([0.0, 1, 3, 8, 15]) + rb.eps) ** 0.5  # p_i^alpha, |delta| + eps
    np.testing.assert_allclose(rb.tree[np.arange(5)], p)
    assert rb.max_priority == pytest.approx(15 + rb.eps)
    counts = np.zeros(8)
    for _ in range(2000):
        batch = rb.sample(32, beta=0.4)
        counts += np.bincount(batch.indices, minlength=8)
        # w_i = (N P(i))^-beta / max_j w_j over the batch (N = 5 valid transitions)
        w = (5 * p[batch.indices] / p.sum()) ** -0.4
        np.testing.assert_allclose(batch.weights, w / w.max(), rtol=1e-5)
    assert counts[5:].sum() == 0
    assert stats.chisquare(counts[:5], p / p.sum() * counts.sum()).pvalue > 0.01
    add(rb, 6, 0.0)  # slot 5 becomes valid at the largest priority seen so far
    assert rb.tree[np.array([5])][0] == pytest.approx((15 + rb.eps) ** 0.5)


def test_prioritized_replay_never_samples_a_slot_the_uniform_buffer_cannot(make_cfg):
    """Breakout frames, 2 envs, n = 3, the ring wrapped several times: every sampled slot is a valid one."""
    from rlrun.envs.factory import make_vec_env

    env = make_vec_env(make_cfg("env=breakout"), 2)
    rb = PrioritizedReplayBuffer(2 * 50, (4, 84, 84), np.uint8, num_envs=2, frame_stack=4, n_step=3, alpha=0.6)
    obs, rng = env.reset(seed=1), np.random.default_rng(1)
    for i in range(170):
        actions = rng.integers(0, 4, size=2)
        step = env.step(actions)
        rb.add(obs, actions, step.reward, step.terminated, step.episode_end, step.final_obs)
        obs = step.obs
        if i > 10:
            first, count = rb.valid_slots()
            valid = {(int(t), e) for t in (first + np.arange(count)) % 50 for e in range(2)}
            batch = rb.sample(64, beta=0.5)
            sampled = {(int(i) // 2, int(i) % 2) for i in batch.indices}
            assert sampled <= valid
            assert np.count_nonzero(rb.tree[np.arange(100)]) == len(valid) == rb.valid_count()
    env.close()


# ---- n-step returns ------------------------------------------------------------------------------------------

# One env's hand-made stream: (obs, reward, terminated, episode_end, final_obs).
STREAM = [
    (0, 1, False, False, 0),    # slot 0
    (1, 2, False, False, 0),    # slot 1
    (2, 4, True, False, 0),     # slot 2: a lost life (terminated for learning, the episode goes on)
    (3, 8, False, False, 0),    # slot 3
    (4, 16, False, True, 100),  # slot 4: truncated, final observation 100
    (50, 32, False, False, 0),  # slot 5: a new episode
    (51, 64, True, True, 200),  # slot 6: terminated, final observation 200
    (60, 128, False, False, 0),  # slot 7
    (61, 256, False, False, 0),  # slot 8
    (62, 512, False, False, 0),  # slot 9
    (63, 0, False, False, 0),   # slot 10
]

# n = 3, gamma = 0.5, by hand: (reward sum, terminated, discount gamma^k, successor observation)
EXPECTED = {
    0: (1 + 0.5 * 2 + 0.25 * 4, 1.0, 0.125, 3),  # cut at the life loss: no bootstrap
    1: (2 + 0.5 * 4, 1.0, 0.25, 3),
    2: (4, 1.0, 0.5, 3),
    3: (8 + 0.5 * 16, 0.0, 0.25, 100),  # cut at the truncation: bootstrap from the final observation
    4: (16, 0.0, 0.5, 100),
    5: (32 + 0.5 * 64, 1.0, 0.25, 200),  # cut at the termination
    6: (64, 1.0, 0.5, 200),
    7: (128 + 0.5 * 256 + 0.25 * 512, 0.0, 0.125, 63),  # a full 3-step return
}


@pytest.mark.parametrize("num_envs", [1, 3])
def test_n_step_targets_on_a_hand_made_episode(num_envs):
    rb = vector_buffer(n_step=3, num_envs=num_envs, capacity=16 * num_envs)
    for obs, reward, term, end, final in STREAM:
        add(rb, obs, reward, term, end, final)
    first, count = rb.valid_slots()
    assert (first, count) == (0, len(STREAM) - 3)  # the newest 3 slots lack some of their 3 successors
    t = np.repeat(np.arange(count), num_envs)
    e = np.tile(np.arange(num_envs), count)
    batch = rb.gather(t, e)
    for i, (ti, ei) in enumerate(zip(t, e)):
        reward, term, discount, successor = EXPECTED[int(ti)]
        assert batch.rewards[i] == reward, (ti, ei)
        assert batch.terminated[i] == term and batch.discounts[i] == discount, (ti, ei)
        assert batch.next_obs[i, 0] == successor and batch.obs[i, 0] == STREAM[ti][0], (ti, ei)


def test_n_step_successor_stacks_the_frames_before_a_truncation():
    """Frame stacks (K = 2): the 2-step successor of slot 3 is [frame 4, final frame 100]."""
    rb = ReplayBuffer(16, (2, 1), np.float32, frame_stack=2, n_step=2, gamma=0.5)
    previous = 0.0
    for obs, reward, term, end, final in STREAM:
        rb.add(np.array([[[previous], [obs]]], np.float32), np.zeros(1, np.int64), np.array([reward], np.float32),
               np.array([term]), np.array([end]), np.array([[[obs], [final]]], np.float32))
        previous = 0.0 if end else obs  # a new episode's stack starts zero-padded
    batch = rb.gather(np.array([3, 4, 5, 7]), np.zeros(4, np.int64))
    assert batch.next_obs[:, :, 0].tolist() == [[4, 100], [4, 100], [51, 200], [61, 62]]
    assert batch.obs[:, :, 0].tolist() == [[2, 3], [3, 4], [0, 50], [0, 60]]
    assert batch.rewards.tolist() == [16, 16, 64, 128 + 0.5 * 256]


def test_one_step_gather_keeps_the_callers_gamma():
    rb = vector_buffer(n_step=1)
    for obs, reward, term, end, final in STREAM[:4]:
        add(rb, obs, reward, term, end, final)
    batch = rb.gather(np.array([0, 2]), np.zeros(2, np.int64))
    assert batch.discounts is None and batch.rewards.tolist() == [1, 4] and batch.terminated.tolist() == [0, 1]


# ---- C51 -----------------------------------------------------------------------------------------------------

def test_categorical_projection_against_hand_computed_atoms():
    support = torch.tensor([-1.0, 0.0, 1.0])  # delta z = 1
    probs = torch.tensor([[0.2, 0.3, 0.5]] * 5)
    rewards = torch.tensor([0.5, 0.0, 2.0, -0.5, -5.0])
    discounts = torch.tensor([0.0, 1.0, 1.0, 0.5, 0.9])
    target = categorical_projection(probs, rewards, discounts, support)
    expected = torch.tensor([
        [0.0, 0.5, 0.5],     # terminal, r = 0.5: halfway between atoms 0 and 1
        [0.2, 0.3, 0.5],     # r = 0, discount 1: every atom lands on itself
        [0.0, 0.0, 1.0],     # r + z >= 1 everywhere: all mass at v_max
        [0.35, 0.65, 0.0],   # -0.5 + 0.5 z = -1, -0.5, 0: 0.2 + 0.3/2 at -1, 0.3/2 + 0.5 at 0
        [1.0, 0.0, 0.0],     # r + 0.9 z <= -4.1: all mass at v_min
    ])
    torch.testing.assert_close(target, expected)


def test_distributional_network_outputs_expected_values_of_its_atoms():
    net = QNetwork((4,), 3, [16], num_atoms=5, v_min=-2, v_max=2)
    x = torch.randn(7, 4)
    probs = net.logits(x).softmax(dim=2)
    torch.testing.assert_close(net(x), (probs * torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0])).sum(dim=2))


# ---- dueling and noisy ---------------------------------------------------------------------------------------

def test_dueling_aggregation_subtracts_the_mean_advantage():
    value = torch.tensor([[[1.0]], [[-2.0]]])
    advantage = torch.tensor([[[1.0], [2.0], [3.0]], [[0.0], [0.0], [6.0]]])
    q = dueling_aggregate(value, advantage).squeeze(2)
    assert q.tolist() == [[0.0, 1.0, 2.0], [-4.0, -4.0, 2.0]]


@pytest.mark.parametrize("obs_shape", [(4,), (4, 84, 84)])
def test_dueling_q_values_average_to_the_value_stream(obs_shape):
    net = QNetwork(obs_shape, 6, [32, 32], dueling=True)
    x = torch.randint(0, 255, (3, *obs_shape), dtype=torch.uint8) if len(obs_shape) == 3 else torch.randn(3, 4)
    h = net.encoder(x.float() if len(obs_shape) == 1 else x)
    torch.testing.assert_close(net(x).mean(dim=1), net.value(h).squeeze(1))


def test_noisy_linear_shapes_initialization_and_resampling():
    torch.manual_seed(0)
    layer = NoisyLinear(20, 5, std_init=0.5)
    assert layer.weight_mu.shape == layer.weight_sigma.shape == (5, 20)
    assert layer.bias_mu.shape == layer.bias_sigma.shape == layer.epsilon_out.shape == (5,)
    assert layer.epsilon_in.shape == (20,)
    assert torch.all(layer.weight_mu.abs() <= 20 ** -0.5)
    assert torch.allclose(layer.weight_sigma, torch.tensor(0.5 / 20 ** 0.5))
    x = torch.randn(4, 20)
    # Fortunato et al. 2018, eq. (11): W = mu + sigma * (f(e_out) f(e_in)^T) with f(e) = sign(e) sqrt|e|,
    # b = mu_b + sigma_b * f(e_out), the factors drawn from the same generator state again
    state = torch.get_rng_state()
    layer.reset_noise()
    torch.set_rng_state(state)
    e_in, e_out = torch.randn(20), torch.randn(5)
    f_in, f_out = e_in.sign() * e_in.abs().sqrt(), e_out.sign() * e_out.abs().sqrt()
    weight = layer.weight_mu + layer.weight_sigma * torch.outer(f_out, f_in)
    bias = layer.bias_mu + layer.bias_sigma * f_out
    first = layer(x)
    torch.testing.assert_close(first, x @ weight.T + bias)
    torch.testing.assert_close(layer(x), first)  # the noise is fixed between resamples
    reset_noise(layer)
    assert not torch.allclose(layer(x), first)
    layer.eval()
    torch.testing.assert_close(layer(x), x @ layer.weight_mu.T + layer.bias_mu)  # eval: mean weights


def test_every_switch_off_builds_the_plain_network_and_noisy_nets_replace_every_linear_layer():
    from rlrun.nn.networks import MLP, NatureCNN

    assert isinstance(make_q_network((4, 84, 84), 4, [512]), NatureCNN)
    assert isinstance(make_q_network((4,), 2, [64]), MLP)
    net = make_q_network((4, 84, 84), 4, [512], dueling=True, noisy=True, num_atoms=51)
    assert not [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert len([m for m in net.modules() if isinstance(m, NoisyLinear)]) == 4  # two layers in each stream
    assert net(torch.zeros(2, 4, 84, 84, dtype=torch.uint8)).shape == (2, 4)


# ---- the switches in training ----------------------------------------------------------------------------------

CARTPOLE = ("env=cartpole", "total_timesteps=2400", "algo.learning_starts=400", "algo.train_frequency=4",
            "algo.batch_size=32", "checkpoint.interval=800", "logging.log_interval=50")
SWITCHES = {
    "prioritized": ["algo.prioritized=true"],
    "n_step": ["algo.n_step=3"],
    "dueling": ["algo.dueling=true"],
    "noisy": ["algo.noisy=true"],
    "distributional": ["algo.distributional=true"],
    "rainbow": ["algo=rainbow", "algo.learning_starts=400", "algo.target_network_frequency=200"],
}


@pytest.mark.parametrize("switch", SWITCHES)
def test_each_switch_resumes_exactly(stop_and_resume, switch):
    """Stopped by SIGTERM after the checkpoint at step 1600 and resumed: the same losses at the same steps as an
    uninterrupted run (the sum tree, n-step storage and noise buffers are in the checkpoint)."""
    whole, split, ckpt = stop_and_resume([*CARTPOLE, *SWITCHES[switch]], 1600)
    assert ckpt["global_step"] == 1600
    losses = [v for _, v in whole["losses/td_loss"]]
    assert len(losses) >= 30 and np.isfinite(losses).all()
    assert split == whole
    if switch in ("prioritized", "rainbow"):
        betas = [v for _, v in whole["charts/beta"]]  # annealed from 0.4 towards 1 over the run
        assert 0.4 < betas[0] < betas[-1] <= 1.0
    if switch in ("noisy", "rainbow"):
        assert {v for _, v in whole["charts/epsilon"]} == {0.0}  # noisy nets explore instead of epsilon


def test_rainbow_on_breakout_writes_scalars_and_a_checkpoint_that_evaluates(make_cfg, tmp_path):
    from rlrun.cli.evaluate import evaluate_checkpoint
    from rlrun.cli.train import run_training
    from rlrun.core.checkpoint import latest_checkpoint
    from rlrun.core.events import read_scalars

    cfg = make_cfg("algo=rainbow", "env=breakout", "total_timesteps=400", "algo.learning_starts=200",
                   "replay.buffer_size=1000", "logging.log_interval=20")
    run_training(cfg, tmp_path / "run")
    scalars = read_scalars(tmp_path / "run")
    losses = [v for _, v, _ in scalars["losses/td_loss"]]
    assert len(losses) >= 5 and np.isfinite(losses).all()
    assert 0 < losses[0] < np.log(51) + 1  # a cross-entropy over 51 atoms, near log 51 at the start
    _, ckpt = latest_checkpoint(tmp_path / "run")
    assert ckpt["global_step"] == 400 and "epsilon_in" in "".join(ckpt["q_network"])
    assert (tmp_path / "run" / "checkpoints" / "replay_000000000400" / "priorities.npy").exists()
    result = evaluate_checkpoint(tmp_path / "run", episodes=1, seed=3)
    assert result["episodes"] == 1
