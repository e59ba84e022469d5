"""Quality control in a real browser (Chromium through Playwright, a real uvicorn server): the
guidelines panel, Markdown responses with a code block and the plain-text toggle, and gold
feedback on the admin page. Screenshots go to test-artifacts/annotate/ (look at them)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest

from test_annotate_browser import CHROMIUM, SHOTS, browser_context, serve_in_thread  # noqa: F401

pytestmark = pytest.mark.browser

GUIDELINES = """# How to rank

1. **Correct** beats fluent: a wrong answer goes last, however well written.
2. Prefer answers that *show* working code.
3. Ties are fine when two answers are equally good.

<script>window.__pwned = 3</script>

See [the style guide](https://example.org/style) and never [click this](javascript:window.__pwned=4).
"""

CODE_ANSWER = """Use `sorted()`, which returns a new list:

```python
def smallest_three(xs):
    return sorted(xs)[:3]
```

It runs in *O(n log n)*. See [the docs](https://docs.python.org/3/library/functions.html#sorted)."""

HOSTILE = '<img src=x onerror="window.__pwned = 5"> **bold** [x](javascript:window.__pwned=6)'


@pytest.fixture(scope="module")
def server():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")

    from rlhfkit.collect.annotate.app import create_app
    from rlhfkit.collect.annotate.store import Store

    tmp = Path(tempfile.mkdtemp(prefix="rlhfkit-browser-qc-"))
    records = [
        {
            "prompt": "How do I get the **three smallest** numbers of a list in Python?",
            "responses": [
                {"id": "code", "text": CODE_ANSWER},
                {"id": "loop", "text": "Loop over the list three times and remove the minimum."},
                {"id": "hostile", "text": HOSTILE},
            ],
        }
    ]
    records += [
        {
            "prompt": f"Explain topic {i} in simple terms.",
            "responses": [
                {"id": f"r{j}", "text": f"Answer {j} about topic {i}."} for j in range(3)
            ],
        }
        for i in range(2, 6)
    ]
    cands = tmp / "c.jsonl"
    cands.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    guide = tmp / "guidelines.md"
    guide.write_text(GUIDELINES, encoding="utf-8")
    store = Store(tmp / "ann.db")
    store.init()
    store.import_candidates(cands)
    tokens = {n: store.add_annotator(n) for n in ("alice", "bob", "carol")}
    tokens["owner"] = store.add_annotator("owner", is_admin=True)
    app = create_app(tmp / "ann.db", overlap=3, secret=b"q" * 48, guidelines=guide)
    with serve_in_thread(app) as url:
        yield {"url": url, "store": store, "tokens": tokens}
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def page(browser_context):  # noqa: F811 (the fixture imported above)
    """A new page of the Chromium context that test_annotate_browser.py launches, recording
    page errors, console errors (a CSP violation is one) and failed requests; the browser's own
    favicon request is the one 404 expected."""
    pg = browser_context.new_page()
    pg.problems = []
    pg.on("pageerror", lambda e: pg.problems.append(str(e)))
    pg.on(
        "console",
        lambda m: (
            m.type == "error"
            and not m.text.startswith("Failed to load resource")
            and pg.problems.append(m.text)
        ),
    )
    pg.on(
        "response",
        lambda r: (
            r.status >= 400
            and not r.url.endswith("/favicon.ico")
            and pg.problems.append(f"{r.status} {r.url}")
        ),
    )
    yield pg
    pg.close()


def login(page, server, who: str) -> None:
    page.goto(f"{server['url']}/login#token={server['tokens'][who]}")
    page.wait_for_url(f"{server['url']}/")


def test_guidelines_and_markdown_responses(server, page):
    login(page, server, "alice")
    page.wait_for_selector("#task:not([hidden]) #responses .card")
    assert int(page.text_content("#item-label").split()[-1]) == 1

    # 1. the guidelines: open the first time, rendered Markdown, the script in them inert text
    assert page.evaluate("document.getElementById('guidelines').open") is True
    body = page.locator("#guidelines .guidelines-body")
    assert body.locator("h1").text_content() == "How to rank"
    assert (
        body.locator("ol li").count() == 3
        and body.locator("strong").first.text_content() == "Correct"
    )
    assert "<script>window.__pwned = 3</script>" in body.text_content()
    assert body.locator("script").count() == 0
    links = body.locator("a")
    assert links.count() == 1 and links.get_attribute("href") == "https://example.org/style"
    assert links.get_attribute("rel") == "noopener noreferrer nofollow"

    # 2. Markdown responses: a real code block, inline code, a safe link; hostile text inert
    card = page.locator('#responses .card[data-id="code"]')
    code = card.locator(".response-md pre code.language-python")
    assert code.is_visible()
    assert code.text_content() == "def smallest_three(xs):\n    return sorted(xs)[:3]\n"
    assert code.evaluate("e => getComputedStyle(e.parentElement).whiteSpace") == "pre"
    assert card.locator(".response-md p code").first.text_content() == "sorted()"
    assert card.locator(".response-md a").get_attribute("target") == "_blank"
    assert not card.locator(".response-text").is_visible()  # the plain text is the other view
    hostile = page.locator('#responses .card[data-id="hostile"] .response-md')
    assert hostile.locator("strong").text_content() == "bold"
    assert hostile.locator("img, a, script").count() == 0
    assert '<img src=x onerror="window.__pwned = 5">' in hostile.text_content()
    assert page.locator("#prompt-md strong").text_content() == "three smallest"
    page.screenshot(path=str(SHOTS / "08-guidelines-markdown.png"), full_page=True)

    # 3. collapse the guidelines; the choice is remembered across a reload
    page.click("#guidelines summary")
    assert page.evaluate("document.getElementById('guidelines').open") is False

    # 4. the plain-text toggle (key T): exact text, newlines kept; remembered across a reload
    page.keyboard.press("t")
    assert card.locator(".response-text").is_visible() and not code.is_visible()
    assert card.locator(".response-text").text_content() == CODE_ANSWER
    assert page.get_attribute("#view-toggle", "aria-pressed") == "true"
    page.reload()
    page.wait_for_selector("#task:not([hidden]) #responses .card")
    assert page.evaluate("document.getElementById('guidelines').open") is False
    assert page.locator('#responses .card[data-id="code"] .response-text').is_visible()
    page.screenshot(path=str(SHOTS / "09-plain-text-view.png"), full_page=True)
    page.click("#view-toggle")  # and back
    assert page.locator('#responses .card[data-id="code"] .response-md pre').is_visible()

    # 5. ranking still works on the formatted view (keyboard), and nothing ran
    for key in ["1", "2", "3", "Enter"]:
        page.keyboard.press(key)
    page.wait_for_function(
        "() => !document.getElementById('item-label').textContent.endsWith(' 1')"
    )
    assert page.evaluate("window.__pwned") is None
    assert page.problems == []


def test_gold_feedback_on_the_admin_page(server, page):
    store, tokens = server["store"], server["tokens"]
    # bob follows the guidelines, carol does the opposite (through the store, as the API would)
    for name, reverse in (("bob", False), ("carol", True)):
        aid = store.annotator_by_token(tokens[name]).id
        while (it := store.next_item(aid, overlap=3)) is not None:
            ids = sorted(r["id"] for r in it["responses"])
            if it["item_id"] == 1:
                ids = ["code", "loop", "hostile"]
            store.submit_ranking(aid, it["item_id"], ids[::-1] if reverse else ids)
    login(page, server, "owner")
    page.goto(f"{server['url']}/admin")
    page.wait_for_selector("#gold tbody tr td")
    assert "no gold items yet" in page.text_content("#gold tbody")

    # mark item 1 gold through the form: show its responses, type the ranking, save
    page.fill("#gold-item", "1")
    page.click("#gold-show")
    page.wait_for_selector("#gold-preview:not([hidden]) .gold-response")
    assert page.locator("#gold-preview .gold-response code").all_text_contents() == [
        "code",
        "loop",
        "hostile",
    ]
    page.fill("#gold-ranking", "code > loop > hostile")
    page.click("#gold-form button[type=submit]")
    page.wait_for_selector('#gold tbody tr[data-item="1"]')
    assert store.gold() == {1: ["code", "loop", "hostile"]}
    row = page.locator('#gold tbody tr[data-item="1"]')
    assert row.locator("code").text_content() == "code > loop > hostile"
    chips = row.locator(".tau-list .tau").all_text_contents()
    assert "bob +1.00" in chips and "carol −1.00" in chips
    assert "tau-bad" in row.locator(".tau-list .tau", has_text="carol").get_attribute("class")
    assert "tau-good" in row.locator(".tau-list .tau", has_text="bob").get_attribute("class")

    # the annotator table: reliability from gold, gold τ with counts
    cells = page.eval_on_selector_all(
        "#annotators tbody tr",
        "rs => Object.fromEntries(rs.map(r => [r.cells[0].textContent, [r.cells[6].textContent, r.cells[7].textContent]]))",
    )
    assert cells["bob"][0].startswith("+1.00") and cells["carol"][0].startswith("−1.00")
    assert "(1, 1 exact)" in cells["bob"][1] and "(1, 0 exact)" in cells["carol"][1]
    assert "Kendall's W" in page.text_content("#summary")

    # the export link carries the reliability options
    page.fill("#ex-minrel", "0.5")
    page.check("#ex-weight")
    page.dispatch_event("#ex-minrel", "change")
    href = page.get_attribute("#ex-link", "href")
    assert "min_reliability=0.5" in href and "weight_by_reliability=true" in href
    with page.expect_download() as dl:
        page.click("#ex-link")
    recs = [json.loads(x) for x in Path(dl.value.path()).read_text().splitlines()]
    assert recs and {r["annotator"] for r in recs} <= {"alice", "bob"}
    assert all(r["weight"] >= 0.5 for r in recs)
    page.wait_for_timeout(4500)  # let the "saved" notice fade
    page.evaluate("window.scrollTo(0, 0)")  # a full-page shot from the top keeps the header there
    page.screenshot(path=str(SHOTS / "10-admin-gold.png"), full_page=True)

    # remove the gold mark again
    row.locator("button").click()
    page.wait_for_function(
        "() => document.querySelector('#gold tbody').textContent.includes('no gold items yet')"
    )
    assert store.gold() == {}
    assert page.problems == []
