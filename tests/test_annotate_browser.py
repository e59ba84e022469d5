"""The ranking page in a real browser: Debian's Chromium driven by Playwright, against a real
uvicorn server on loopback. Screenshots go to test-artifacts/annotate/ (look at them)."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "annotate"

XSS_SCRIPT = "<script>window.__pwned = 1</script> plain words after the tag"
XSS_IMG = '<img src=x onerror="window.__pwned = 2">'
CODE = "Here is code:\n\ndef add(a, b):\n    return a + b\n\n  indented line kept"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")

    from rlhfkit.collect.annotate.app import create_app
    from rlhfkit.collect.annotate.store import Store

    tmp = Path(tempfile.mkdtemp(prefix="rlhfkit-browser-"))
    cands = tmp / "c.jsonl"
    records = [
        {
            "prompt": "Which answer is safest?\nSecond line of the prompt.",
            "responses": [
                {"id": "plain", "text": "A plain, sensible answer.\nWith a second line."},
                {"id": "script", "text": XSS_SCRIPT},
                {"id": "img", "text": XSS_IMG},
                {"id": "code", "text": CODE},
            ],
        }
    ]
    for i in range(2, 7):
        records.append(
            {
                "prompt": f"Explain topic {i} in simple terms.",
                "responses": [
                    {"id": f"t{i}-{j}", "text": f"Answer {j} about topic {i}. " * (2 + j)}
                    for j in range(3)
                ],
            }
        )
    cands.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    store = Store(tmp / "ann.db")
    store.init()
    store.import_candidates(cands)
    alice = store.add_annotator("alice")
    admin = store.add_annotator("owner", is_admin=True)
    app = create_app(tmp / "ann.db", overlap=1, secret=b"k" * 48)
    with serve_in_thread(app) as url:
        yield {"url": url, "store": store, "alice": alice, "admin": admin, "tmp": tmp}
    shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def serve_in_thread(app):
    """Serve ``app`` with uvicorn on a free loopback port in a thread; yields the base URL."""
    import uvicorn

    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not srv.started:
        assert time.time() < deadline, "server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser_context(server):
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    profile = Path(tempfile.mkdtemp(prefix="rlhfkit-chromium-"))
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            args=ARGS,
            headless=True,
            viewport={"width": 1280, "height": 860},
        )
        try:
            yield ctx
        finally:
            ctx.close()
            shutil.rmtree(profile, ignore_errors=True)


def shown_ids(page) -> list[str]:
    return page.eval_on_selector_all("#responses .card", "cards => cards.map(c => c.dataset.id)")


def wait_item(page, previous: int | None = None) -> int:
    page.wait_for_selector("#task:not([hidden]) #responses .card")
    if previous is not None:
        page.wait_for_function(
            "prev => !document.getElementById('item-label').textContent.endsWith(' ' + prev)",
            arg=previous,
        )
    return int(page.text_content("#item-label").split()[-1])


def rankings(store) -> dict[int, list]:
    return {it["item_id"]: it["rankings"][0]["ranking"] for it in store.rankings_by_item()}


def test_annotator_session_in_browser(server, browser_context):
    store, url = server["store"], server["url"]
    page = browser_context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    # 1. log in with the link: token in the fragment, which is then dropped from the address bar
    page.goto(f"{url}/login#token={server['alice']}")
    page.wait_for_url(f"{url}/")
    assert "token" not in page.url
    item = wait_item(page)
    assert item == 1

    # 2. untrusted output is shown as text, nothing in it runs
    texts = page.eval_on_selector_all(
        "#responses .response-text", "els => els.map(e => e.textContent)"
    )
    assert XSS_SCRIPT in texts and XSS_IMG in texts and CODE in texts
    assert page.evaluate("window.__pwned") is None
    assert page.locator("#responses img, #responses script").count() == 0
    assert page.text_content("#prompt") == "Which answer is safest?\nSecond line of the prompt."
    # newlines and indentation survive (pre-wrap), so code stays readable
    code_box = page.locator("#responses .card", has_text="def add").locator(".response-text")
    assert code_box.evaluate("e => getComputedStyle(e).whiteSpace") == "pre-wrap"
    page.screenshot(path=str(SHOTS / "01-item-laptop.png"), full_page=True)

    # 3. rank with the keyboard, with a tie: 2 then "=" 3 ties them for first; then 1, then 4
    ids = shown_ids(page)
    for key in ["2", "=", "3", "1", "4"]:
        page.keyboard.press(key)
    tiers = page.eval_on_selector_all(
        "#tiers .tier[data-rank]:not(.new-tier)",
        "ts => ts.map(t => t.querySelectorAll('.chip').length)",
    )
    assert tiers == [2, 1, 1]
    assert "(tie)" in page.text_content(f'#responses .card[data-id="{ids[1]}"] .badge')
    page.screenshot(path=str(SHOTS / "02-ranked-with-tie.png"), full_page=True)
    # Backspace undoes the last placement; place it again
    page.keyboard.press("Backspace")
    assert page.is_disabled("#submit")
    page.keyboard.press("4")
    page.keyboard.press("Enter")
    item2 = wait_item(page, previous=item)
    assert rankings(store)[1] == [[ids[1], ids[2]], ids[0], ids[3]]
    assert page.evaluate("window.__pwned") is None

    # 4. drag and drop: 3 to first, 1 below it, then 2 dropped into the gap before the first rank
    ids = shown_ids(page)
    new_tier = "#tiers .new-tier"
    page.drag_and_drop(f'#responses .card[data-id="{ids[2]}"]', new_tier)
    page.drag_and_drop(f'#responses .card[data-id="{ids[0]}"]', new_tier)
    page.drag_and_drop(f'#responses .card[data-id="{ids[1]}"]', "#tiers .gap >> nth=0")
    chips = page.eval_on_selector_all("#tiers .chip", "cs => cs.map(c => c.dataset.id)")
    assert chips == [ids[1], ids[2], ids[0]]
    # and a chip dragged onto an existing rank joins it as a tie
    page.drag_and_drop(f'#tiers .chip[data-id="{ids[0]}"]', '#tiers .tier[data-rank="2"]')
    page.screenshot(path=str(SHOTS / "03-drag-and-drop.png"), full_page=True)
    page.click("#submit")
    item3 = wait_item(page, previous=item2)
    assert rankings(store)[item2] == [ids[1], [ids[2], ids[0]]]

    # 5. skip with a reason (S, choose "prompt unclear" with 3, Enter)
    page.keyboard.press("s")
    page.wait_for_selector("#skip-dialog[open]")
    page.screenshot(path=str(SHOTS / "04-skip-dialog.png"))
    page.keyboard.press("3")
    page.keyboard.press("Enter")
    item4 = wait_item(page, previous=item3)
    with store.read() as conn:
        row = conn.execute(
            "SELECT status, skip_reason FROM assignments WHERE item_id = ?", (item3,)
        ).fetchone()
    assert (row["status"], row["skip_reason"]) == ("skipped", "prompt unclear")

    # 6. flag (F, "broken" with 2, Enter); the item stays and can still be ranked
    page.keyboard.press("f")
    page.wait_for_selector("#flag-dialog[open]")
    page.keyboard.press("2")
    page.keyboard.press("Enter")
    page.wait_for_function(
        "() => document.getElementById('status').textContent.includes('Flagged')"
    )
    assert "Flagged as broken" in page.text_content("#status")
    with store.read() as conn:
        flags = conn.execute("SELECT item_id, reason FROM flags").fetchall()
    assert [tuple(f) for f in flags] == [(item4, "broken")]
    assert int(page.text_content("#item-label").split()[-1]) == item4

    # 7. progress: 2 done, and the bar moved
    page.wait_for_function(
        "() => document.getElementById('progress-text').textContent.startsWith('2 done')"
    )
    assert "1 skipped" in page.text_content("#progress-text")
    width = page.eval_on_selector("#progress-fill", "e => parseFloat(e.style.width)")
    assert 0 < width < 100

    # 8. phone width: one column, nothing wider than the screen
    page.set_viewport_size({"width": 390, "height": 844})
    page.wait_for_timeout(200)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    lefts = page.eval_on_selector_all(
        "#responses .card", "cs => cs.map(c => c.getBoundingClientRect().left)"
    )
    assert len(set(round(x) for x in lefts)) == 1
    page.screenshot(path=str(SHOTS / "05-phone.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 860})

    # 9. finish everything: the "all done" state
    for _ in range(10):
        if page.is_visible("#done"):
            break
        current = int(page.text_content("#item-label").split()[-1])
        for k in range(1, len(shown_ids(page)) + 1):
            page.keyboard.press(str(k))
        page.keyboard.press("Enter")
        page.wait_for_function(
            "prev => !document.getElementById('done').hidden || !document.getElementById('item-label').textContent.endsWith(' ' + prev)",
            arg=current,
        )
    page.wait_for_selector("#done:not([hidden])")
    page.wait_for_function(
        "() => document.getElementById('progress-text').textContent.includes('0 left')"
    )
    page.screenshot(path=str(SHOTS / "06-all-done.png"))

    assert dialogs == [] and errors == []
    assert page.evaluate("window.__pwned") is None
    page.close()


def test_admin_page_in_browser(server, browser_context):
    url = server["url"]
    page = browser_context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{url}/login#token={server['admin']}")
    page.wait_for_url(f"{url}/")
    page.goto(f"{url}/admin")
    page.wait_for_selector("#annotators tbody tr td")
    rows = page.eval_on_selector_all(
        "#annotators tbody tr",
        "rs => rs.map(r => r.cells[0].textContent + ':' + r.cells[1].textContent)",
    )
    assert "alice:" + str(len(rankings(server["store"]))) in rows
    assert "Krippendorff" in page.text_content("#summary")
    href = page.get_attribute("#ex-link", "href")
    page.select_option("#ex-format", "pairs")
    assert page.get_attribute("#ex-link", "href") != href and "format=pairs" in page.get_attribute(
        "#ex-link", "href"
    )
    with page.expect_download() as dl:
        page.click("#ex-link")
    lines = Path(dl.value.path()).read_text(encoding="utf-8").splitlines()
    assert lines and set(json.loads(lines[0])) == {"prompt", "chosen", "rejected"}
    page.screenshot(path=str(SHOTS / "07-admin.png"), full_page=True)
    assert errors == []
    page.close()


def test_annotator_cannot_open_admin_page(server, browser_context):
    page = browser_context.new_page()
    page.goto(f"{server['url']}/login#token={server['alice']}")
    page.wait_for_url(f"{server['url']}/")
    resp = page.goto(f"{server['url']}/admin")
    assert resp.status == 403
    page.close()


@contextlib.contextmanager
def slow_endpoint_session(browser_context, endpoint: str, items: int, responses: int):
    """A page logged in to a fresh server of ``items`` items with ``responses`` responses each,
    whose every request to ``endpoint`` answers 1.5 s late; yields (page, store)."""
    from rlhfkit.collect.annotate.app import create_app
    from rlhfkit.collect.annotate.store import Store

    tmp = Path(tempfile.mkdtemp(prefix="rlhfkit-browser-slow-"))
    records = [
        {"prompt": f"Question {i}?",
         "responses": [{"id": f"q{i}-{j}", "text": f"answer {j}"} for j in range(responses)]}
        for i in range(items)
    ]  # fmt: skip
    (tmp / "c.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    store = Store(tmp / "ann.db")
    store.init()
    store.import_candidates(tmp / "c.jsonl")
    token = store.add_annotator("fast")
    app = create_app(tmp / "ann.db", overlap=1, secret=b"s" * 48)
    page = browser_context.new_page()
    page.add_init_script(
        f"const slowEndpoint = {json.dumps(endpoint)};"
        """(() => {
          const real = window.fetch;
          window.fetch = async (path, opts) => {
            if (String(path).endsWith(slowEndpoint)) await new Promise((r) => setTimeout(r, 1500));
            return real(path, opts);
          };
        })();"""
    )
    try:
        with serve_in_thread(app) as url:
            page.goto(f"{url}/login#token={token}")
            page.wait_for_url(f"{url}/")
            yield page, store
    finally:
        page.close()
        shutil.rmtree(tmp, ignore_errors=True)


def test_a_ranking_sent_while_the_progress_line_loads_is_not_dropped(browser_context):
    """An annotator who ranks the next item before the progress line has come back (a slow
    ``/api/me``) still gets it saved: the page used to stay "busy" until the progress came, and
    the Enter was silently ignored (a flaky CI run found it)."""
    with slow_endpoint_session(browser_context, "/api/me", items=3, responses=3) as (page, store):
        item = wait_item(page)
        for _ in range(3):
            for key in ["1", "2", "3", "Enter"]:
                page.keyboard.press(key)
            # the next item (or "all done") must come well before the slow progress would
            page.wait_for_function(
                "prev => !document.getElementById('done').hidden"
                " || !document.getElementById('item-label').textContent.endsWith(' ' + prev)",
                arg=item,
                timeout=5000,
            )
            if page.is_visible("#done"):
                break
            item = int(page.text_content("#item-label").split()[-1])
        assert page.is_visible("#done")
        assert len(store.rankings_by_item()) == 3
        page.wait_for_function(
            "() => document.getElementById('progress-text').textContent.startsWith('3 done')"
        )


def test_enter_pressed_again_while_saving_says_so_and_saves_once(browser_context):
    """A second Enter while the ranking is still being saved (a slow ``POST /api/rankings``) is
    not a second submission; the page says it is still saving."""
    with slow_endpoint_session(browser_context, "/api/rankings", items=2, responses=2) as (
        page,
        store,
    ):
        item = wait_item(page)
        for key in ["1", "2", "Enter", "Enter"]:
            page.keyboard.press(key)
        assert "Still saving" in page.text_content("#status")
        wait_item(page, previous=item)
        assert len(store.rankings_by_item()) == 1
