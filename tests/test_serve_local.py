"""demo --human's collection loop: a real server on loopback, a 'person' ranking over HTTP."""

import json
import threading

import httpx

from rlhfkit.collect.annotate.serve_local import collect_rankings


def _candidates(path, n=3):
    with open(path, "w") as f:
        for i in range(n):
            f.write(
                json.dumps(
                    {
                        "prompt": f"Explain topic {i} in simple terms.",
                        "responses": [
                            {"id": "a", "text": f"good answer {i}"},
                            {"id": "b", "text": f"bad answer {i}"},
                        ],
                    }
                )
                + "\n"
            )


def test_collect_rankings_waits_for_people_and_returns_their_rankings(tmp_path):
    cands = tmp_path / "candidates.jsonl"
    _candidates(cands)
    messages: list[str] = []

    def person(url: str) -> None:
        base, token = url.split("/login#token=")

        def work():
            with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as c:
                while True:
                    r = c.get("/api/next")
                    if r.status_code == 204:
                        return
                    item = r.json()
                    text = {x["id"]: x["text"] for x in item["responses"]}
                    best = "a" if text["a"].startswith("good") else "b"
                    other = "b" if best == "a" else "a"
                    assert (
                        c.post(
                            "/api/rankings",
                            json={"item_id": item["item_id"], "ranking": [best, other]},
                        ).status_code
                        == 201
                    )

        threading.Thread(target=work, daemon=True).start()

    rankings = collect_rankings(
        tmp_path / "ann.db",
        cands,
        say=messages.append,
        poll_seconds=0.1,
        timeout_seconds=60,
        on_ready=person,
    )
    assert len(rankings) == 3
    assert all(r.ranking == ["a", "b"] for r in rankings)
    assert any("/login#token=" in m for m in messages)


def test_collect_rankings_timeout_keeps_what_was_ranked(tmp_path):
    cands = tmp_path / "candidates.jsonl"
    _candidates(cands, n=2)
    messages: list[str] = []
    rankings = collect_rankings(
        tmp_path / "ann.db", cands, say=messages.append, poll_seconds=0.05, timeout_seconds=0.3
    )
    assert rankings == []
    assert any("stopped waiting" in m for m in messages)
