"""rlrun-label's server and store without a browser: what is asked, what is written, what is refused.

Every answer must be on disk in the format rlrun's readers take (labels for segments, rankings for text), a question
goes to one session at a time, and malformed or unserved answers get a 4xx with a message, never a crash."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")
from starlette.testclient import TestClient  # noqa: E402

from rlrun.cli.label import build_app, main  # noqa: E402
from rlrun.core.config import ConfigError  # noqa: E402
from rlrun.rlhf.labelling import LabelStore, default_output, open_source  # noqa: E402
from rlrun.rlhf.preference_data import Segments, load_labels, load_rankings, load_segments  # noqa: E402


@pytest.fixture
def pairs_file(tmp_path):
    records = [{"prompt": f"prompt {i}", "chosen": f"good answer {i}", "rejected": f"bad answer {i}"} for i in range(4)]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture
def segments_file(tmp_path):
    rng = np.random.default_rng(0)
    segments = Segments(obs=rng.normal(size=(6, 5, 4)).astype(np.float32), actions=np.zeros((6, 5), np.int64),
                        rewards=np.ones((6, 5), np.float32), ids=np.arange(10, 16), env_id="CartPole-v1")
    return segments.save(tmp_path / "segments.npz")


def client_for(path, token=None):
    source = open_source(path)
    store = LabelStore(source, default_output(source))
    return TestClient(build_app(store, token)), store


def post(client, path, **data):
    return client.post(path, content=json.dumps(data), headers={"Content-Type": "application/json"})


def test_text_pairs_become_rankings_with_ties_and_nothing_is_asked_twice(pairs_file):
    client, store = client_for(pairs_file)
    labels = {}
    for label in (1, 0, 0.5):
        item = client.get("/api/next", params={"session": "s1"}).json()["item"]
        assert item["kind"] == "text" and sorted(item["responses"])[0].startswith("bad")
        labels[item["id"]] = (label, item["responses"])
        assert post(client, "/api/answer", session="s1", item=item["id"], label=label, labeler="ann").status_code == 200
    assert client.get("/api/next", params={"session": "s1"}).json()["progress"] == \
        {"answered": 3, "skipped": 0, "queued": 1}
    written = load_rankings(store.output)  # the format algo.rankings_path reads
    lines = [json.loads(line) for line in store.output.read_text().splitlines()]
    for ranking, line in zip(written, lines):
        label, shown = labels[line["item"]]
        assert list(ranking.responses) == shown and line["labeler"] == "ann"
        assert list(ranking.ranks) == {1: [1, 2], 0: [2, 1], 0.5: [1, 1]}[label]  # left better, right better, tie
    # a restarted server over the same file asks only the fourth pair
    store.close()
    client, _ = client_for(pairs_file)
    item = client.get("/api/next", params={"session": "s9"}).json()["item"]
    assert item["id"] not in labels


def test_two_sessions_never_hold_the_same_pair_and_answers_must_be_served(segments_file):
    client, store = client_for(segments_file)
    first = client.get("/api/next", params={"session": "A"}).json()["item"]
    second = client.get("/api/next", params={"session": "B"}).json()["item"]
    assert first["id"] != second["id"]
    assert client.get("/api/next", params={"session": "A"}).json()["item"]["id"] == first["id"]  # a reload
    refused = post(client, "/api/answer", session="B", item=first["id"], label=1, labeler="bob")
    assert refused.status_code == 409 and "not served to this session" in refused.json()["error"]
    assert post(client, "/api/answer", session="A", item="99-98", label=1, labeler="ann").status_code == 404
    bad = post(client, "/api/answer", session="A", item=first["id"], label=2, labeler="ann")
    assert bad.status_code == 422 and "expected 1 (left better), 0 (right better) or 0.5" in bad.json()["error"]
    assert post(client, "/api/answer", session="A", item=first["id"], label=True, labeler="ann").status_code == 422
    assert post(client, "/api/answer", session="A", item=first["id"], label=1, labeler=" ").status_code == 422
    malformed = client.post("/api/answer", content=b"{not json", headers={"Content-Type": "application/json"})
    assert malformed.status_code == 400
    assert not store.output.exists()  # nothing refused was written
    ok = post(client, "/api/answer", session="A", item=first["id"], label=0, labeler="ann")
    assert ok.status_code == 200
    again = post(client, "/api/answer", session="A", item=first["id"], label=0, labeler="ann")
    assert again.status_code == 409
    pairs, labels = load_labels(store.output, load_segments(segments_file))  # the format algo.labels_path reads
    a, b = map(int, first["id"].split("-"))
    rows = load_segments(segments_file).index_of()
    assert pairs.tolist() == [[rows[a], rows[b]]] and labels.tolist() == [0.0]


def test_undo_and_skip_survive_a_restart(segments_file):
    client, store = client_for(segments_file)
    answered = []
    for label in (1, 0.5):
        item = client.get("/api/next", params={"session": "A"}).json()["item"]
        post(client, "/api/answer", session="A", item=item["id"], label=label, labeler="ann")
        answered.append(item["id"])
    skipped = client.get("/api/next", params={"session": "A"}).json()["item"]
    assert post(client, "/api/skip", session="A", item=skipped["id"], labeler="ann").status_code == 200
    store.close()
    client, store = client_for(segments_file)  # restart: undo still knows ann's latest (the skip), then an answer
    undone = post(client, "/api/undo", session="C", labeler="ann").json()
    assert undone["ok"] and undone["item"]["id"] == skipped["id"]
    assert client.get("/api/next", params={"session": "C"}).json()["item"]["id"] == skipped["id"]
    undone = post(client, "/api/undo", session="C", labeler="ann").json()
    assert undone["item"]["id"] == answered[1]
    lines = [json.loads(line) for line in store.output.read_text().splitlines()]
    assert [line["item"] for line in lines] == answered[:1]
    assert post(client, "/api/undo", session="C", labeler="nobody").json()["ok"] is False


def test_rankings_take_an_order_with_ties(tmp_path):
    path = tmp_path / "rankings.jsonl"
    path.write_text(json.dumps({"prompt": "p", "responses": ["x", "y", "z"], "ranking": [1, 2, 3]}) + "\n")
    client, store = client_for(path)
    item = client.get("/api/next", params={"session": "A"}).json()["item"]
    assert sorted(item["responses"]) == ["x", "y", "z"]
    assert post(client, "/api/answer", session="A", item=item["id"], ranking=[1, 4, 2], labeler="ann").status_code == 422
    assert post(client, "/api/answer", session="A", item=item["id"], ranking=[2, 1, 1], labeler="ann").status_code == 200
    (ranking,) = load_rankings(store.output)
    assert list(ranking.responses) == item["responses"] and list(ranking.ranks) == [2, 1, 1]


def test_token_paths_and_bad_sources(pairs_file, tmp_path, capsys):
    client, _ = client_for(pairs_file, token="secret")
    assert client.get("/api/next", params={"session": "A"}).status_code == 403
    assert client.get("/api/next", params={"session": "A", "token": "secret"}).status_code == 200
    assert client.get("/", params={"token": "secret"}).status_code == 200
    assert client.get("/../../etc/passwd", params={"token": "secret"}).status_code == 404
    assert client.get("/api/clip/1.png", params={"token": "secret"}).status_code == 404  # a text source has no clips
    other = tmp_path / "other.jsonl"
    other.write_text('{"question": 1}\n')
    with pytest.raises(ConfigError, match="is not a labelling source"):
        open_source(other)
    # the command line: one line and status 2 for a bad source, a remote bind without the flag, a port in use
    assert main([str(other)]) == 2 and "is not a labelling source" in capsys.readouterr().err
    assert main([str(pairs_file), "--host", "0.0.0.0"]) == 2 and "--allow-remote" in capsys.readouterr().err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        assert main([str(pairs_file), "--port", str(busy.getsockname()[1])]) == 2
        assert "cannot be bound" in capsys.readouterr().err


def test_a_synthetic_labels_file_is_not_appended_to(segments_file, capsys):
    (segments_file.parent / "labels.jsonl").write_text('{"a": 10, "b": 11, "label": 1.0, "split": "train"}\n')
    assert main([str(segments_file), "--port", "0"]) == 2
    assert "not an answer written by rlrun-label" in capsys.readouterr().err


def test_a_pbrl_queue_round_trip_with_a_skip(tmp_path):
    from rlrun.rlhf.labelling import HumanQueue

    queue = HumanQueue(tmp_path, "CartPole-v1", (4,))
    for segment in (1, 2, 3, 4):
        queue.add_segment(segment, np.full((5, 4), segment, np.float32), np.zeros(5, np.int64), np.ones(5, np.float32))
    queue.enqueue([(1, 2), (3, 4)])
    client, store = client_for(tmp_path)  # the run directory: its labelling/ queue
    item = client.get("/api/next", params={"session": "A"}).json()["item"]
    assert item["id"] == "1-2"
    assert post(client, "/api/skip", session="A", item="1-2", labeler="ann").status_code == 200
    item = client.get("/api/next", params={"session": "A"}).json()["item"]
    assert post(client, "/api/answer", session="A", item=item["id"], label=0, labeler="ann").status_code == 200
    assert queue.skipped() == {(1, 2)} and queue.answers() == [(3, 4, 0.0)]
    queue.enqueue([(2, 3)])  # the run asks more while the page is open
    assert client.get("/api/next", params={"session": "A"}).json()["item"]["id"] == "2-3"


def test_segments_of_an_env_that_cannot_render_are_refused_before_serving(tmp_path, capsys):
    path = Segments(np.zeros((2, 3, 8), np.float32), np.zeros((2, 3), np.int64), None, np.arange(2),
                    "LunarLander-v3").save(tmp_path / "segments.npz")
    assert main([str(path), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "LunarLander-v3" in err and err.count("\n") == 1  # one line
    assert not (tmp_path / "labels.jsonl").exists()
