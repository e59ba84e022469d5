"""The ranking page against hostile data and a flaky network, in real Chromium (issue #20, finding 6).

- Response ids ``__proto__``, ``constructor``, ``toString``, ``hasOwnProperty`` (import accepts any
  string id): render() used to look ranks up in a plain object, and threw.
- An annotator named ``constructor``: the admin page read ``Object.prototype.constructor`` as their
  agreement.
- A submission whose 201 is lost on the way back: the page sends a client request id and retries
  with the same one; the server answers with the ranking it saved, and there is exactly one.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest

from test_annotate_browser import ARGS, CHROMIUM, SHOTS, free_port

pytestmark = pytest.mark.browser

PROTO_IDS = ["__proto__", "constructor", "toString", "hasOwnProperty"]


@pytest.fixture(scope="module")
def server():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")
    import uvicorn

    from rlhfkit.collect.annotate.app import create_app
    from rlhfkit.collect.annotate.store import Store

    tmp = Path(tempfile.mkdtemp(prefix="rlhfkit-hostile-"))
    cands = tmp / "c.jsonl"
    rs = [{"id": rid, "text": f"The response whose id is {rid}."} for rid in PROTO_IDS]
    cands.write_text(json.dumps({"prompt": "Rank these.", "responses": rs}) + "\n")
    store = Store(tmp / "ann.db")
    store.init()
    store.import_candidates(cands)
    tokens = {"ann": store.add_annotator("constructor"), "admin": store.add_annotator("__proto__")}
    store.add_annotator("toString", is_admin=True)
    app = create_app(tmp / "ann.db", overlap=1, secret=b"k" * 48)
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not srv.started:
        assert time.time() < deadline, "server did not start"
        time.sleep(0.05)
    yield {"url": f"http://127.0.0.1:{port}", "store": store, **tokens}
    srv.should_exit = True
    thread.join(timeout=10)
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def context(server):
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        ctx = browser.new_context(viewport={"width": 1280, "height": 860})
        try:
            yield ctx
        finally:
            ctx.close()
            browser.close()


def test_prototype_named_ids_and_a_lost_answer(server, context):
    url, store = server["url"], server["store"]
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    posts: list[dict] = []

    def lose_first_answer(route):
        posts.append(json.loads(route.request.post_data))
        if len(posts) == 1:
            route.fetch()  # the server gets it and saves the ranking ...
            route.abort("connectionreset")  # ... and its 201 never reaches the page
        else:
            route.continue_()

    page.route("**/api/rankings", lose_first_answer)
    page.goto(f"{url}/login#token={server['ann']}")
    page.wait_for_url(f"{url}/")
    page.wait_for_selector("#task:not([hidden]) #responses .card")
    shown = page.eval_on_selector_all("#responses .card", "cs => cs.map(c => c.dataset.id)")
    assert sorted(shown) == sorted(PROTO_IDS)
    for key in ["1", "2", "=", "3", "4"]:
        page.keyboard.press(key)
    badges = page.eval_on_selector_all(
        "#responses .card .badge", "bs => bs.map(b => b.textContent)"
    )
    assert badges == ["1st", "2nd (tie)", "2nd (tie)", "3rd"], (badges, errors)
    page.screenshot(path=str(SHOTS / "08-prototype-ids.png"), full_page=True)
    page.keyboard.press("Enter")
    page.wait_for_selector("#done:not([hidden])")
    assert errors == []

    # two POSTs with one request id; the retry was answered "saved"; one ranking in the database
    assert len(posts) == 2 and posts[0] == posts[1] and len(posts[0]["request_id"]) == 32
    assert page.locator("#status").text_content() in ("Saved.", "")
    (item,) = store.rankings_by_item()
    assert len(item["rankings"]) == 1
    assert item["rankings"][0]["ranking"] == [shown[0], [shown[1], shown[2]], shown[3]]
    page.close()


def test_admin_page_with_prototype_named_annotators(server, context):
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    admin = server["store"].add_annotator("hasOwnProperty", is_admin=True)
    page.goto(f"{server['url']}/login#token={admin}")
    page.wait_for_url(f"{server['url']}/")
    page.goto(f"{server['url']}/admin")
    page.wait_for_selector("#annotators tbody tr td")
    rows = page.eval_on_selector_all(
        "#annotators tbody tr",
        "rs => rs.map(r => [r.cells[0].textContent, r.cells[5].textContent])",
    )
    by_name = dict(rows)
    # nobody overlapped with anybody: no agreement for anyone, not Object.prototype's members
    assert by_name["constructor"] == "—" and by_name["__proto__"] == "—", rows
    assert by_name["toString (admin)"] == "—" and by_name["hasOwnProperty (admin)"] == "—"
    assert errors == []
    page.close()
