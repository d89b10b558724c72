"""A recorded labelling session: Hopper clips labelled through rlrun-label's page in a real browser, and the reward
model trained from the page's answers against the same labels written directly.

1. ``rlrun algo=reward_model env=hopper`` collects clips with a random policy and labels pairs of them with the
   synthetic labeler (the higher true return is preferred), writing ``segments.npz`` and ``labels.jsonl``.
2. ``rlrun-label <segments.npz> --pairs-from <labels.jsonl>`` serves the same pairs; headless Chromium, driven
   by Selenium (scripts/label_browser.py), answers each one as the synthetic labeler would (from the clips' true
   returns), alternating clicks and keys, as a person at the page would. A screenshot of the page is saved.
3. Two reward models are trained on the same segments with the same seed: one from the page's answers, one from
   the labels written directly. The page must not distort what was said: the answers must agree pair by pair and
   the held-out accuracies must be equal.

Usage::

    python scripts/label_session.py --out-dir outputs/label_session            # the session, printed
    python scripts/label_session.py --out-dir outputs/label_session --record   # also docs/labelling.md
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import label_browser as lb  # noqa: E402
from benchlib import compose_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "labelling.md"
SCREENSHOT = ROOT / "docs" / "figures" / "label_page.png"
SEED = 1
COLLECT = ["algo=reward_model", "env=hopper", "algo.num_segments=160", "algo.num_labels=120",
           "algo.segment_length=25", f"seed={SEED}", "torch_threads=2", "logging.progress=none"]


def train(overrides: list[str], run_dir: Path) -> float:
    from rlrun.cli.train import run_training

    return run_training(compose_config(overrides), run_dir)


def label_through_page(segments_path: Path, pairs_from: Path, out: Path, screenshot: Path | None) -> dict:
    """Answer every pair of ``pairs_from`` through the page; returns timings and counts."""
    from rlrun.rlhf.preference_data import load_segments

    segments = load_segments(segments_path)
    returns = dict(zip(segments.ids.tolist(), segments.true_returns().tolist()))
    server, url = lb.start_server(segments_path, "--pairs-from", str(pairs_from), "--out", str(out))
    driver = lb.open_browser()
    answered, started = 0, time.perf_counter()
    try:
        item = lb.open_page(driver, url, "synthetic-through-page")
        while item:
            a, b = map(int, item.split("-"))
            label = 1.0 if returns[a] > returns[b] else 0.0 if returns[a] < returns[b] else 0.5
            if answered == 0 and screenshot is not None:
                lb.wait(driver, lb.clips_playing, what="both clips to play")
                time.sleep(0.3)
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                driver.save_screenshot(str(screenshot))
            lb.answer(driver, label, by="click" if answered % 2 == 0 else "key")
            answered += 1
            item = lb.shown_item(driver)
        seconds = time.perf_counter() - started
    finally:
        driver.quit()
        lb.kill(server)
    return {"answered": answered, "seconds": seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out-dir", default="outputs/label_session")
    p.add_argument("--record", action="store_true", help=f"write {DOC.relative_to(ROOT)} and the screenshot")
    args = p.parse_args()
    if (why := lb.browser_missing()) is not None:
        raise SystemExit(f"no browser to drive: {why}")
    out = Path(args.out_dir)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    train(COLLECT, out / "collected")
    segments, direct = out / "collected" / "segments.npz", out / "collected" / "labels.jsonl"
    collect_s = time.perf_counter() - t0
    page_labels = out / "page_labels.jsonl"
    session = label_through_page(segments, direct, page_labels, SCREENSHOT if args.record else out / "page.png")
    written = [json.loads(line) for line in direct.read_text().splitlines()]
    said = [json.loads(line) for line in page_labels.read_text().splitlines()]
    agree = sum(w["a"] == s["a"] and w["b"] == s["b"] and w["label"] == s["label"] for w, s in zip(written, said))
    fit = ["algo=reward_model", "env=hopper", f"algo.segments_path={segments}", f"seed={SEED}", "torch_threads=2",
           "logging.progress=none"]
    t1 = time.perf_counter()
    acc_page = train([*fit, f"algo.labels_path={page_labels}"], out / "from_page")
    acc_direct = train([*fit, f"algo.labels_path={direct}"], out / "direct")
    fit_s = time.perf_counter() - t1
    rows = [("pairs labelled through the page", f"{session['answered']} of {len(written)}"),
            ("answers equal to the labels written directly (pair, order, label)", f"{agree} of {len(written)}"),
            ("page session: seconds, seconds per answer", f"{session['seconds']:.1f}, "
                                                          f"{session['seconds'] / max(session['answered'], 1):.2f}"),
            ("reward model from the page's answers: held-out accuracy", f"{acc_page:.3f}"),
            ("reward model from the labels written directly: held-out accuracy", f"{acc_direct:.3f}"),
            ("collecting (s), fitting both reward models (s)", f"{collect_s:.0f}, {fit_s:.0f}")]
    table = "| | |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)
    print(table)
    if args.record:
        command = "python scripts/label_session.py --out-dir " + args.out_dir + " --record"
        DOC.write_text(DOC_TEXT.format(command=command, collect=" ".join(COLLECT), table=table,
                                       screenshot=SCREENSHOT.relative_to(DOC.parent)), encoding="utf-8")
        print(f"recorded in {DOC}")


DOC_TEXT = """# Labelling with people: rlrun-label

`rlrun-label` serves a page on 127.0.0.1 on which people compare two clips of an agent (Christiano et al. 2017:
left better, right better, equally good, can't tell), two answers to a prompt, or order K answers (Ouyang et al.
2022). Every answer is appended to a JSONL file and fsynced before the page shows the next question, in the format
`algo.labels_path` (clips) or `algo.rankings_path` (text) reads. Install the extra with `pip install -e ".[label]"`.

```bash
rlrun-label outputs/<reward_model run>/segments.npz            # pairs of clips (every clip once, paired at random)
rlrun-label outputs/<run>/segments.npz --pairs-from outputs/<run>/labels.jsonl   # exactly these pairs
rlrun-label outputs/<pbrl run>                                 # a pbrl run with algo.labeler=human
rlrun-label pairs.jsonl                                        # prompt/chosen/rejected: which answer is better
rlrun-label rankings.jsonl                                     # prompt/responses/ranking: order K answers
```

![the page]({screenshot})

Keys: `←` left better, `→` right better, `=` equally good, `S` can't tell, `U` undo; for rankings `↑`/`↓` select,
`Shift`+`↑`/`↓` move, `T` ties with the one above, `Enter` submits (or drag). The labeller's name is recorded
with each answer. Two browsers never get the same question at the same time; a killed server or browser loses at
most the answer in flight; a restarted page asks nothing that was answered or skipped. `--host` other than
loopback needs `--allow-remote`, and every request then needs the random token printed in the URL.

## A recorded session (the page must not distort what people say)

`{command}`: Hopper clips of 25 steps from a random policy (`rlrun {collect}`), labelled first by the synthetic
labeler written directly to `labels.jsonl`, then the same pairs through the page in headless Chromium (Selenium,
the system's chromium-driver), answered as the synthetic labeler would, alternating clicks and keys. Two reward
models are then fitted with the same seed on the same segments: from the page's answers and from the labels
written directly.

{table}
"""


if __name__ == "__main__":
    main()
