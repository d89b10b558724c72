"""rlrun-label in a real browser: headless Chromium from the system packages, driven by Selenium.

Labels 10 pairs of CartPole clips by clicking and by keys, undoes one, kills the server (SIGKILL) in the middle and
restarts it, and checks the answers file line by line. Skipped, with the reason, where no browser is installed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import label_browser as lb  # noqa: E402

from rlrun.rlhf.preference_data import Segments, load_labels, load_segments  # noqa: E402

pytestmark = pytest.mark.skipif(lb.browser_missing() is not None, reason=str(lb.browser_missing()))
pytest.importorskip("starlette")


def cartpole_segments(path: Path, count: int = 24, length: int = 20) -> Path:
    """Clips of real CartPole play with random actions."""
    import gymnasium as gym

    env = gym.make("CartPole-v1")
    rng = np.random.default_rng(0)
    obs_all, actions_all = [], []
    obs, _ = env.reset(seed=0)
    while len(obs_all) < count:
        clip_obs, clip_actions = [], []
        for _ in range(length):
            action = int(rng.integers(2))
            clip_obs.append(obs)
            clip_actions.append(action)
            obs, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                obs, _ = env.reset()
        obs_all.append(clip_obs)
        actions_all.append(clip_actions)
    return Segments(np.array(obs_all, np.float32), np.array(actions_all, np.int64), None, np.arange(100, 100 + count),
                    "CartPole-v1").save(path)


def test_label_ten_pairs_by_clicks_and_keys_undo_and_survive_a_killed_server(tmp_path):
    source = cartpole_segments(tmp_path / "segments.npz")
    out = tmp_path / "labels.jsonl"
    server, url = lb.start_server(source)
    driver = lb.open_browser()
    other = None
    try:
        given = {}  # item id -> the label the page was given for it
        first = lb.open_page(driver, url, "tester")
        lb.wait(driver, lb.clips_playing, what="both clips to play")
        assert driver.find_element("id", "leftclip").get_attribute("width") == \
            driver.find_element("id", "rightclip").get_attribute("width")
        other = lb.open_browser()  # a second labeller at the same time gets another pair
        assert lb.open_page(other, url, "second") != first
        other.quit()
        other = None
        for label in (1.0, 0.0, 0.5, 1.0, 0.0):  # five by clicking
            given[lb.answer(driver, label, by="click")] = label
        assert len(out.read_text().splitlines()) == 5  # on disk before the page moved on
        lb.kill(server)  # no chance to flush anything more
        assert len(out.read_text().splitlines()) == 5
        server, url = lb.start_server(source)
        lb.open_page(driver, url, "tester")
        for label in (0.5, 1.0, 0.0, 1.0):  # four by keys
            given[lb.answer(driver, label, by="key")] = label
        undone = lb.undo(driver, by="key")
        assert undone == list(given)[-1]  # the latest answer comes back
        del given[undone]
        assert len(out.read_text().splitlines()) == 8
        for label in (0.5, 0.0):  # the undone pair again, then one more: 10 answers
            given[lb.answer(driver, label, by="key")] = label
        assert undone in given and given[undone] == 0.5
        assert lb.progress(driver).startswith("10 answered")
    finally:
        for d in (driver, other):
            if d is not None:
                d.quit()
        lb.kill(server)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 10 and len({line["item"] for line in lines}) == 10
    for line in lines:  # every line: the pair, the label given on the page, the labeller and a time
        assert set(line) == {"a", "b", "label", "labeler", "time", "item"}
        assert line["item"] == f"{line['a']}-{line['b']}" and line["label"] == given[line["item"]]
        assert line["labeler"] == "tester"
    pairs, labels = load_labels(out, load_segments(source))  # what algo.labels_path reads
    assert len(pairs) == 10 and labels.tolist() == [given[line["item"]] for line in lines]


def test_rank_three_answers_by_keys_with_a_tie(tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    from rlrun.rlhf.preference_data import load_rankings

    path = tmp_path / "rankings.jsonl"
    path.write_text(json.dumps({"prompt": "Say something kind.", "responses": ["You did well.", "Go away.", "Thanks!"],
                                "ranking": [1, 3, 2]}) + "\n")
    server, url = lb.start_server(path)
    driver = lb.open_browser()
    try:
        lb.open_page(driver, url, "ranker")
        shown = [li.text.split("\n")[-1] for li in driver.find_elements("css selector", "#ranking li .text")]
        # select the last answer, move it to the top (Shift+Up twice), then tie the new second one with it (T)
        keys = ActionChains(driver)
        for key in (Keys.ARROW_DOWN, Keys.ARROW_DOWN):
            keys.send_keys(key)
        keys.key_down(Keys.SHIFT).send_keys(Keys.ARROW_UP).send_keys(Keys.ARROW_UP).key_up(Keys.SHIFT)
        keys.send_keys(Keys.ARROW_DOWN).send_keys("t").send_keys(Keys.ENTER).perform()
        lb.wait(driver, lambda d: lb.shown_item(d) == "", what="the ranking to be taken")
    finally:
        driver.quit()
        lb.kill(server)
    (ranking,) = load_rankings(tmp_path / "rankings.human.jsonl")
    assert list(ranking.responses) == shown  # in the order the page showed them
    # shown order [x, y, z] became [z, x, y] with x tied to z: ranks z=1, x=1, y=3
    assert dict(zip(ranking.responses, ranking.ranks)) == {shown[2]: 1, shown[0]: 1, shown[1]: 3}
