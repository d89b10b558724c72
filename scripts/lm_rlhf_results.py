"""The RLHF pipeline on a language model, end to end, and its results: SFT, a reward model, PPO-RLHF, DPO,
best-of-n and reward over-optimization, on the built-in sentiment task with rlrun-tiny-gpt2.

Every stage is the experiment config a user runs (``rlrun +experiment=lm/<stage>``), here with its run directory
under ``--out-dir``; then the script samples best-of-n from the SFT model, reads the runs' scalars, draws the
figures into docs/figures/ and (``--record``) writes the rows into docs/lectures.md.

Usage::

    python scripts/lm_rlhf_results.py --record                  # 993 s on 2 CPU cores (seed 1), after pretraining
    python scripts/lm_rlhf_results.py --out-dir /tmp/lm --seed 2

Results: SFT's held-out perplexity before and after; the reward model's held-out accuracy against VADER's labels;
PPO-RLHF's true score on held-out prompts against its KL to the SFT model, beside best-of-n sampling from the SFT
model (KL log n - (n - 1) / n) and DPO at several beta; a PPO run with a tiny fixed kl_coef, whose learned reward
keeps rising while the true score peaks and falls (Gao et al. 2023).
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

import numpy as np

from benchlib import compose_config, record

ROOT = Path(__file__).resolve().parents[1]
LECTURES = ROOT / "docs" / "lectures.md"
FIGURES = ROOT / "docs" / "figures"
SECTION = "## Language-model RLHF: SFT, reward model, PPO-RLHF, DPO (RLHF lecture, seeds/001)"
BEST_OF = (1, 2, 4, 8, 16, 32, 64, 128)  # n of best-of-n (KL up to 3.86 nats, near PPO's target 4)
# DPO runs (label, overrides): on the tiny model the learning rate and the epochs decide how far DPO moves from the
# SFT model far more than beta does (beta 0.05, 0.1, 0.3 at 3e-4 all ended at KL 13-15), so the points at several
# KL come from shorter and gentler runs
DPO_RUNS = (("beta 0.1", ["algo.beta=0.1"]),
            ("beta 0.3", ["algo.beta=0.3"]),
            ("beta 0.1, lr 1e-4, 1 epoch", ["algo.beta=0.1", "algo.learning_rate=1e-4", "algo.num_train_epochs=1"]),
            ("beta 0.1, lr 3e-5, 1 epoch", ["algo.beta=0.1", "algo.learning_rate=3e-5", "algo.num_train_epochs=1"]))
# Over-optimization needs a proxy that can be gamed: against the 4000-pair reward model (held-out accuracy 0.86) a
# run with kl_coef 0.001 drove VADER's score to 0.98 and kept it there (16384 responses, KL 120 nats), proxy and
# true score agreeing all the way. Gao et al. (2023) find over-optimization stronger the less data the proxy
# reward model had; a proxy from 300 pairs shows it here
OVEROPT_RM = ["algo.text.num_pairs=300"]
OVEROPT = ["algo.kl_coef=0.001", "algo.adaptive_kl=false", "algo.total_episodes=8192", "algo.eval_every=8"]
RM_ACCURACY_GOAL = 0.85


def run_stage(name: str, overrides: list[str], out: Path) -> tuple[Path, float, float]:
    """Run ``rlrun +experiment=lm/<stage> <overrides>`` into ``out/name``; returns (run dir, metric, seconds)."""
    from rlrun.cli.train import run_training

    run_dir = out / name
    started = time.perf_counter()
    metric = run_training(compose_config(overrides), run_dir)
    seconds = time.perf_counter() - started
    print(f"[lm] {name}: {metric:.4f} in {seconds:.0f} s", flush=True)
    return run_dir, metric, seconds


def best_of_n(sft: Path, reward_model: Path, seed: int, prompts: list[str], max_new_tokens: int) -> list[dict]:
    """Best-of-n from the SFT model ranked by the reward model: for each n, the mean true (VADER) score and proxy
    reward of the best of the first n of BEST_OF[-1] samples per held-out prompt."""
    import torch

    from rlrun.rlhf.lm import decode_responses, encode_prompt, load_causal_lm, resolve_model, sample
    from rlrun.rlhf.objectives import best_of_n_kl
    from rlrun.rlhf.scorers import get_scorer
    from rlrun.rlhf.text_reward import TextRewardModel

    tokenizer, model = load_causal_lm(resolve_model(str(sft), "sft"), "sft")
    model.eval()
    rm = TextRewardModel(str(reward_model), "reward_model", torch.device("cpu"))
    vader = get_scorer("vader")
    generator = torch.Generator().manual_seed(seed)
    n_max = BEST_OF[-1]
    proxy, true = np.zeros((len(prompts), n_max)), np.zeros((len(prompts), n_max))
    for k in range(n_max):
        samples = sample(model, [encode_prompt(tokenizer, p) for p in prompts], max_new_tokens,
                         tokenizer.eos_token_id, tokenizer.pad_token_id, generator=generator)
        texts = decode_responses(tokenizer, samples)
        proxy[:, k], true[:, k] = rm(prompts, texts), vader(prompts, texts)
    rows = []
    for n in BEST_OF:
        best = proxy[:, :n].argmax(axis=1)
        rows.append({"n": n, "kl": best_of_n_kl(n), "true": float(true[np.arange(len(prompts)), best].mean()),
                     "proxy": float(proxy[np.arange(len(prompts)), best].mean())})
    return rows


def curve(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    from rlrun.core.events import scalar_values

    return scalar_values(run_dir).get(tag, [])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=None, help="run directories (default outputs/lm_results/<time>)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of every run")
    parser.add_argument("--record", action="store_true", help="write the rows into docs/lectures.md and the figures")
    args = parser.parse_args(argv)
    out = args.out_dir or ROOT / "outputs" / "lm_results" / datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    common = [f"seed={args.seed}", f"torch_threads={args.threads}", "logging.progress=none", "device=cpu"]
    started = time.perf_counter()
    from rlrun.rlhf.tiny_lm import tiny_lm_path

    tiny_lm_path()  # pretrained once (about 20 minutes), cached after: not part of the stages' times
    sft, ppl_after, t_sft = run_stage("sft", ["+experiment=lm/sft", *common], out)
    ppl_before = curve(sft, "charts/heldout_perplexity")[0][1]
    rm, rm_accuracy, t_rm = run_stage("reward_model", ["+experiment=lm/reward_model", f"algo.text.model={sft}",
                                                        *common], out)
    ppo, _, t_ppo = run_stage("ppo_rlhf", ["+experiment=lm/ppo_rlhf", f"algo.model={sft}",
                                           f"algo.reward_model={rm}", *common], out)
    dpo_runs = []
    for i, (label, overrides) in enumerate(DPO_RUNS):
        run_dir, accuracy, seconds = run_stage(f"dpo_{i}", ["+experiment=lm/dpo", f"algo.model={sft}",
                                               f"algo.pairs_path={rm / 'pairs.jsonl'}", *overrides, *common], out)
        dpo_runs.append((label, run_dir, accuracy, seconds))
    small_rm, small_rm_accuracy, t_small_rm = run_stage("reward_model_300", ["+experiment=lm/reward_model",
                                                        f"algo.text.model={sft}", *OVEROPT_RM, *common], out)
    overopt, _, t_over = run_stage("overoptimization", ["+experiment=lm/ppo_rlhf", f"algo.model={sft}",
                                                        f"algo.reward_model={small_rm}", *OVEROPT, *common], out)
    t_over += t_small_rm
    from omegaconf import OmegaConf

    from rlrun.rlhf.preference_data import load_prompts
    from rlrun.rlhf.text_task import task_path

    cfg = compose_config(["+experiment=lm/ppo_rlhf"])
    heldout = [p for _, p in load_prompts(task_path(cfg, "heldout_prompts"))][:int(cfg.algo.eval_num_prompts)]
    t0 = time.perf_counter()
    bon = best_of_n(sft, rm, args.seed, heldout, int(OmegaConf.select(cfg, "algo.generation.max_new_tokens")))
    t_bon = time.perf_counter() - t0

    ppo_true, ppo_kl, ppo_reward = (curve(ppo, f"eval/{t}") for t in ("true_score", "kl", "reward"))
    over_true, over_reward, over_kl = (curve(overopt, f"eval/{t}") for t in ("true_score", "reward", "kl"))
    dpo_points = [(label, curve(d, "eval/kl")[-1][1], curve(d, "eval/true_score")[-1][1], acc, s)
                  for label, d, acc, s in dpo_runs]
    sft_true = ppo_true[0][1]
    total = time.perf_counter() - started
    for line in [f"SFT held-out perplexity {ppl_before:.2f} -> {ppl_after:.2f} ({t_sft:.0f} s)",
                 f"reward model held-out accuracy {rm_accuracy:.3f} ({t_rm:.0f} s)",
                 f"PPO-RLHF true score {sft_true:.3f} -> {ppo_true[-1][1]:.3f} at KL {ppo_kl[-1][1]:.2f} ({t_ppo:.0f} s)",
                 *[f"best-of-{r['n']}: KL {r['kl']:.2f}, true {r['true']:.3f}, proxy {r['proxy']:.3f}" for r in bon],
                 *[f"DPO {b}: KL {kl:.2f}, true {t:.3f}, held-out accuracy {a:.3f} ({s:.0f} s)"
                   for b, kl, t, a, s in dpo_points],
                 f"over-optimization: proxy {[round(v, 2) for _, v in over_reward]}",
                 f"over-optimization: true {[round(v, 3) for _, v in over_true]}",
                 f"total {total:.0f} s"]:
        print("[lm] " + line, flush=True)
    if args.record:
        figures = draw(ppo_kl, ppo_true, bon, dpo_points, over_reward, over_true, over_kl)
        write_rows(args, out, ppl_before, ppl_after, t_sft, rm_accuracy, t_rm, sft_true, ppo_true, ppo_kl, t_ppo,
                   bon, t_bon, dpo_points, over_reward, over_true, t_over, small_rm_accuracy, figures)
    return 0 if rm_accuracy >= RM_ACCURACY_GOAL else 1


def draw(ppo_kl, ppo_true, bon, dpo_points, over_reward, over_true, over_kl) -> list[Path]:
    """The reward-against-KL figure and the over-optimization figure, as PNGs in docs/figures/."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    FIGURES.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([v for _, v in ppo_kl], [v for _, v in ppo_true], "o-", label="PPO-RLHF (held-out evaluations)")
    ax.plot([r["kl"] for r in bon], [r["true"] for r in bon], "s--", label=f"best-of-n from SFT (n = 1..{BEST_OF[-1]})")
    ax.plot([p[1] for p in dpo_points], [p[2] for p in dpo_points], "^", markersize=9, label="DPO")
    for label, kl, true, *_ in dpo_points:
        ax.annotate(label, (kl, true), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set_xlabel("KL to the SFT model (nats per response)")
    ax.set_ylabel("true score (VADER compound), held-out prompts")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    paths = [FIGURES / "lm_reward_vs_kl.png"]
    fig.savefig(paths[0], dpi=120)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([v for _, v in over_kl], [v for _, v in over_reward], "o-", label="learned reward (proxy)")
    ax.set_xlabel("KL to the SFT model (nats per response)")
    ax.set_ylabel("learned reward (normalized)")
    twin = ax.twinx()
    twin.plot([v for _, v in over_kl], [v for _, v in over_true], "s-", color="tab:red", label="true score (VADER)")
    twin.set_ylabel("true score (VADER compound)")
    fig.legend(loc="upper left", bbox_to_anchor=(0.12, 0.95))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    paths.append(FIGURES / "lm_overoptimization.png")
    fig.savefig(paths[1], dpi=120)
    plt.close("all")
    return paths


def write_rows(args, out, ppl_before, ppl_after, t_sft, rm_accuracy, t_rm, sft_true, ppo_true, ppo_kl, t_ppo, bon,
               t_bon, dpo_points, over_reward, over_true, t_over, small_rm_accuracy, figures) -> None:
    """The results as rows (claim, command, reproduced, time) of a section of docs/lectures.md."""
    peak = max(over_true, key=lambda p: p[1])
    matched = min(bon, key=lambda r: abs(r["kl"] - ppo_kl[-1][1]))
    late_kl = [v for step, v in ppo_kl if step >= ppo_kl[-1][0] / 2]
    ppo_points = [(kl, true) for (_, kl), (_, true) in zip(ppo_kl, ppo_true)]

    def nearest(kl: float) -> tuple[float, float]:
        """PPO-RLHF's held-out evaluation (KL, true score) whose KL is closest to kl."""
        return min(ppo_points, key=lambda p: abs(p[0] - kl))

    rows = [
        ("Supervised fine-tuning on demonstrations lowers the held-out perplexity of the demonstrations.",
         "rlrun +experiment=lm/sft", f"held-out perplexity {ppl_before:.2f} before, {ppl_after:.2f} after", t_sft),
        ("A reward model started from the SFT model learns the labellers' comparisons: at least 0.85 held-out "
         "pairwise accuracy against VADER's labels of pairs of the SFT model's samples.",
         "rlrun +experiment=lm/reward_model", f"held-out accuracy {rm_accuracy:.3f}", t_rm),
        ("PPO against the reward model with a KL leash raises the true score of held-out prompts well above the "
         "SFT model's, the KL staying near its target (adaptive controller, target 4 nats).",
         "rlrun +experiment=lm/ppo_rlhf", f"true score {sft_true:.3f} (SFT) -> {ppo_true[-1][1]:.3f}, KL "
         f"{ppo_kl[-1][1]:.2f} nats (held-out KL over the second half of training: {min(late_kl):.2f} to "
         f"{max(late_kl):.2f}); best-of-{matched['n']} from SFT at KL {matched['kl']:.2f}: {matched['true']:.3f}",
         t_ppo),
        ("Best-of-n from the SFT model ranked by the reward model (KL = log n - (n - 1) / n).",
         "python scripts/lm_rlhf_results.py", "; ".join(f"n={r['n']}: KL {r['kl']:.2f}, true {r['true']:.3f}"
                                                         for r in bon), t_bon),
        ("DPO on the same pairs: held-out implicit-reward accuracy and true score, beside PPO-RLHF at matching KL.",
         "rlrun +experiment=lm/dpo algo.pairs_path=<reward_model run>/pairs.jsonl algo.beta=B",
         "; ".join(f"{label}: accuracy {a:.3f}, true {t:.3f} at KL {kl:.2f} (PPO-RLHF at KL "
                   f"{nearest(kl)[0]:.2f}: {nearest(kl)[1]:.3f})" for label, kl, t, a, _ in dpo_points),
         sum(p[4] for p in dpo_points)),
        ("Reward over-optimization (Gao et al. 2023): with a tiny kl_coef the learned reward keeps rising while the "
         "true score peaks and falls. The proxy is a reward model from 300 pairs: against the 4000-pair one the "
         "true score rose to 0.98 with the proxy and stayed (16384 responses, KL 120 nats), the less-data proxy "
         "is the one that can be gamed, as in Gao et al.",
         "rlrun +experiment=lm/reward_model " + " ".join(OVEROPT_RM) + "; rlrun +experiment=lm/ppo_rlhf "
         "algo.reward_model=<that run> " + " ".join(OVEROPT),
         f"proxy held-out accuracy {small_rm_accuracy:.2f}; learned reward {over_reward[0][1]:.2f} -> "
         f"{over_reward[-1][1]:.2f}; true score peaks at {peak[1]:.3f} (response {peak[0]}) and ends at "
         f"{over_true[-1][1]:.3f}", t_over),
    ]
    table = "\n".join(["| Claim | Command | Reproduced | Time |", "|---|---|---|---:|"]
                      + [f"| {c} | `{cmd}` | {r} | {t:.0f} s |" for c, cmd, r, t in rows])
    settings = (f"Seed {args.seed}, {args.threads} torch threads, run directories in `{out}`. Model: rlrun-tiny-gpt2 "
                "(pretrained by rlrun on CPython's help topics and stdlib docstrings); task: continue the first words "
                "of held-out sentences so that VADER (Hutto & Gilbert 2014) finds the continuation positive.\n\n"
                + "\n".join(f"![{p.stem}](figures/{p.name})" for p in figures))
    record(SECTION, "python scripts/lm_rlhf_results.py --record", settings, table, path=LECTURES)


if __name__ == "__main__":
    sys.exit(main())
