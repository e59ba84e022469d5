"""HTTP API of the annotation app through FastAPI's TestClient on a temporary database."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from rlhfkit.collect.annotate.api_schema import COOKIE
from rlhfkit.collect.annotate.app import create_app
from rlhfkit.collect.annotate.auth import load_secret
from rlhfkit.collect.annotate.store import Store
from rlhfkit.errors import ConfigError

SECRET = b"s" * 48


@pytest.fixture
def tmp_path(tmp_path_factory):
    """A RAM-backed directory when there is one: the store fsyncs every commit (synchronous=FULL),
    which costs ~10 ms per write on disk and nothing on tmpfs."""
    import shutil
    import tempfile

    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        d = Path(tempfile.mkdtemp(prefix="rlhfkit-test-", dir="/dev/shm"))
        yield d
        shutil.rmtree(d, ignore_errors=True)
    else:
        yield tmp_path_factory.mktemp("annotate")


def write_candidates(path: Path, n: int, k: int = 3) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            responses = [{"id": f"r{j}", "text": f"answer {j} to question {i}"} for j in range(k)]
            f.write(json.dumps({"prompt": f"question {i}?", "responses": responses}) + "\n")
    return path


@pytest.fixture
def env(tmp_path):
    db = tmp_path / "ann.db"
    store = Store(db)
    store.init()
    store.import_candidates(write_candidates(tmp_path / "c.jsonl", 4))
    tokens = {
        "alice": store.add_annotator("alice"),
        "bob": store.add_annotator("bob"),
        "admin": store.add_annotator("root", is_admin=True),
    }
    app = create_app(db, overlap=2, secret=SECRET)
    return TestClient(app), tokens, store


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def order(item: dict) -> list[str]:
    return [r["id"] for r in item["responses"]]


# ---- the basic flow ----------------------------------------------------------------------------


def test_next_submit_and_done(env):
    client, tokens, store = env
    h = bearer(tokens["alice"])
    seen = set()
    while True:
        r = client.get("/api/next", headers=h)
        if r.status_code == 204:
            break
        assert r.status_code == 200
        item = r.json()
        assert set(item) == {"item_id", "prompt", "prompt_html", "responses"}
        assert all(set(r) == {"id", "text", "html"} for r in item["responses"])
        # the same open item comes back until it is finished
        assert client.get("/api/next", headers=h).json() == item
        ids = order(item)
        r = client.post(
            "/api/rankings",
            headers=h,
            json={"item_id": item["item_id"], "ranking": [ids[0], ids[1:]]},
        )
        assert r.status_code == 201, r.text
        seen.add(item["item_id"])
    assert len(seen) == 4
    me = client.get("/api/me", headers=h).json()
    assert me["progress"] == {"done": 4, "skipped": 0, "open": 0, "remaining": 0}
    # the tie was stored as a tie, in canonical form
    items = store.rankings_by_item()
    assert all(isinstance(it["rankings"][0]["ranking"][1], list) for it in items)


def test_response_order_is_recorded_and_exported(env):
    client, tokens, store = env
    item = client.get("/api/next", headers=bearer(tokens["alice"])).json()
    shown = order(item)
    assert sorted(shown) == ["r0", "r1", "r2"]
    client.post(
        "/api/rankings",
        headers=bearer(tokens["alice"]),
        json={"item_id": item["item_id"], "ranking": shown},
    )
    exported = store.rankings_by_item()[0]["rankings"][0]
    assert exported["shown_order"] == shown
    assert exported["ranking"] == shown


def test_response_order_is_random_per_annotator(tmp_path):
    db = tmp_path / "a.db"
    store = Store(db)
    store.init()
    store.import_candidates(write_candidates(tmp_path / "c.jsonl", 30, k=6))
    aid = store.annotator_by_token(store.add_annotator("x")).id
    orders = set()
    for _ in range(30):
        item = store.next_item(aid, overlap=1)
        orders.add(tuple(order(item)))
        store.skip(aid, item["item_id"], "test")
    # 30 shuffles of 6 ids: all identical with probability 720**-29
    assert len(orders) > 10


@pytest.mark.parametrize(
    "ranking, message",
    [
        (["r0", "r1"], "missing: r2"),
        (["r0", "r1", "r1", "r2"], "repeated: r1"),
        (["r0", "r1", "r2", "zz"], "not responses of this item: zz"),
        ([], "non-empty"),
        (["r0", [], "r1", "r2"], "empty tie group"),
    ],
)
def test_malformed_ranking_is_422_with_message(env, ranking, message):
    client, tokens, _ = env
    h = bearer(tokens["alice"])
    item = client.get("/api/next", headers=h).json()
    r = client.post(
        "/api/rankings", headers=h, json={"item_id": item["item_id"], "ranking": ranking}
    )
    assert r.status_code == 422
    (error,) = r.json()["detail"]
    assert error["loc"] == ["body", "ranking"] and message in error["msg"]
    # nothing was recorded; the item is still open
    assert client.get("/api/next", headers=h).json()["item_id"] == item["item_id"]


def test_wrong_body_shapes_are_422(env):
    client, tokens, _ = env
    h = bearer(tokens["alice"])
    item = client.get("/api/next", headers=h).json()
    for body in (
        {"item_id": item["item_id"]},
        {"ranking": ["r0"]},
        {"item_id": "x", "ranking": ["r0"]},
        {"item_id": item["item_id"], "ranking": [1, 2, 3]},
        {"item_id": item["item_id"], "ranking": ["r0", "r1", "r2"], "extra": 1},
    ):
        assert client.post("/api/rankings", headers=h, json=body).status_code == 422, body
    r = client.post(
        "/api/rankings", headers={**h, "Content-Type": "application/json"}, content=b"{not json"
    )
    assert r.status_code == 422


def test_unknown_unassigned_and_finished_items(env):
    client, tokens, _ = env
    ha, hb = bearer(tokens["alice"]), bearer(tokens["bob"])
    item = client.get("/api/next", headers=ha).json()
    full = order(item)
    assert (
        client.post("/api/rankings", headers=ha, json={"item_id": 999, "ranking": full}).status_code
        == 404
    )
    # bob was never given alice's item: 404, the same answer as for an unknown item
    assert (
        client.post(
            "/api/rankings", headers=hb, json={"item_id": item["item_id"], "ranking": full}
        ).status_code
        == 404
    )
    assert (
        client.post(
            "/api/skips", headers=hb, json={"item_id": item["item_id"], "reason": "x"}
        ).status_code
        == 404
    )
    assert (
        client.post(
            "/api/flags", headers=hb, json={"item_id": item["item_id"], "reason": "harmful"}
        ).status_code
        == 404
    )
    assert (
        client.post(
            "/api/rankings", headers=ha, json={"item_id": item["item_id"], "ranking": full}
        ).status_code
        == 201
    )
    again = client.post(
        "/api/rankings", headers=ha, json={"item_id": item["item_id"], "ranking": full}
    )
    assert again.status_code == 409


def test_overlap_each_item_to_n_different_annotators(env):
    client, tokens, store = env  # overlap=2, 4 items, 3 annotators
    got: dict[str, list[int]] = {}
    for who in ("alice", "bob", "admin"):
        h = bearer(tokens[who])
        while (r := client.get("/api/next", headers=h)).status_code == 200:
            item = r.json()
            got.setdefault(who, []).append(item["item_id"])
            client.post(
                "/api/rankings",
                headers=h,
                json={"item_id": item["item_id"], "ranking": order(item)},
            )
    per_item: dict[int, int] = {}
    for ids in got.values():
        assert len(ids) == len(set(ids))  # never twice to one annotator
        for i in ids:
            per_item[i] = per_item.get(i, 0) + 1
    assert per_item == {i: 2 for i in per_item} and len(per_item) == 4
    assert store.counts()["rankings"] == 8


def test_skip_requeues_to_others_never_to_the_skipper(tmp_path):
    db = tmp_path / "a.db"
    store = Store(db)
    store.init()
    store.import_candidates(write_candidates(tmp_path / "c.jsonl", 1))
    client = TestClient(create_app(db, overlap=1, secret=SECRET))
    ta, tb = store.add_annotator("a"), store.add_annotator("b")
    item = client.get("/api/next", headers=bearer(ta)).json()
    assert client.get("/api/next", headers=bearer(tb)).status_code == 204  # the only slot is taken
    r = client.post(
        "/api/skips",
        headers=bearer(ta),
        json={"item_id": item["item_id"], "reason": "cannot judge"},
    )
    assert r.status_code == 201
    assert client.get("/api/next", headers=bearer(ta)).status_code == 204  # not back to the skipper
    assert client.get("/api/next", headers=bearer(tb)).json()["item_id"] == item["item_id"]
    assert (
        client.post(
            "/api/skips", headers=bearer(ta), json={"item_id": item["item_id"], "reason": "x"}
        ).status_code
        == 409
    )
    me = client.get("/api/me", headers=bearer(ta)).json()["progress"]
    assert me["skipped"] == 1 and me["done"] == 0


def test_flag_records_once_and_keeps_item_open(env):
    client, tokens, _ = env
    h = bearer(tokens["alice"])
    item = client.get("/api/next", headers=h).json()
    body = {"item_id": item["item_id"], "reason": "harmful", "note": "insults"}
    assert client.post("/api/flags", headers=h, json=body).status_code == 201
    assert client.post("/api/flags", headers=h, json=body).status_code == 200
    assert (
        client.post("/api/flags", headers=h, json={**body, "reason": "nonsense"}).status_code == 422
    )
    assert client.get("/api/next", headers=h).json()["item_id"] == item["item_id"]
    stats = client.get("/api/stats", headers=bearer(tokens["admin"])).json()
    assert stats["flags"] == [{"item_id": item["item_id"], "reason": "harmful", "count": 1}]


def test_abandoned_assignment_returns_to_pool(tmp_path):
    db = tmp_path / "a.db"
    store = Store(db)
    store.init()
    store.import_candidates(write_candidates(tmp_path / "c.jsonl", 1))
    a = store.annotator_by_token(store.add_annotator("a")).id
    b = store.annotator_by_token(store.add_annotator("b")).id
    item = store.next_item(a, overlap=1, assignment_timeout_s=3600)
    assert store.next_item(b, overlap=1, assignment_timeout_s=3600) is None
    assert store.next_item(b, overlap=1, assignment_timeout_s=0.0)["item_id"] == item["item_id"]


# ---- security --------------------------------------------------------------------------------


def routes(item_id: int) -> list[tuple[str, str, dict | None]]:
    return [
        ("GET", "/api/me", None),
        ("GET", "/api/next", None),
        ("POST", "/api/rankings", {"item_id": item_id, "ranking": ["r0", "r1", "r2"]}),
        ("POST", "/api/skips", {"item_id": item_id, "reason": "x"}),
        ("POST", "/api/flags", {"item_id": item_id, "reason": "broken"}),
        ("GET", "/api/stats", None),
        ("GET", "/api/export?format=pairs", None),
        ("POST", "/api/logout", None),
        ("GET", "/", None),
        ("GET", "/admin", None),
    ]


# Expected status per (route, role). "owner" holds the item the item routes act on; "other" is a
# second annotator who does not; "admin" is an admin who does not hold it either.
EXPECTED = {
    "/api/me": {"none": 401, "owner": 200, "other": 200, "admin": 200},
    "/api/next": {"none": 401, "owner": 200, "other": 200, "admin": 200},
    "/api/rankings": {"none": 401, "owner": 201, "other": 404, "admin": 404},
    "/api/skips": {"none": 401, "owner": 201, "other": 404, "admin": 404},
    "/api/flags": {"none": 401, "owner": 201, "other": 404, "admin": 404},
    "/api/stats": {"none": 401, "owner": 403, "other": 403, "admin": 200},
    "/api/export?format=pairs": {"none": 401, "owner": 403, "other": 403, "admin": 200},
    "/api/logout": {"none": 401, "owner": 204, "other": 204, "admin": 204},
    "/": {"none": 303, "owner": 200, "other": 200, "admin": 200},
    "/admin": {"none": 303, "owner": 403, "other": 403, "admin": 200},
}


@pytest.mark.parametrize("auth", ["bearer", "cookie"])
@pytest.mark.parametrize("role", ["none", "owner", "other", "admin"])
@pytest.mark.parametrize("route", list(EXPECTED))
def test_endpoint_role_matrix(tmp_path, route, role, auth):
    db = tmp_path / "a.db"
    store = Store(db)
    store.init()
    store.import_candidates(write_candidates(tmp_path / "c.jsonl", 3))
    tokens = {
        "owner": store.add_annotator("owner"),
        "other": store.add_annotator("other"),
        "admin": store.add_annotator("adm", is_admin=True),
    }
    client = TestClient(create_app(db, overlap=1, secret=SECRET), follow_redirects=False)
    owner = store.annotator_by_token(tokens["owner"]).id
    item_id = store.next_item(owner, overlap=1)["item_id"]
    method, path, body = next(r for r in routes(item_id) if r[1] == route)
    headers: dict[str, str] = {}
    if role != "none":
        if auth == "bearer":
            headers = bearer(tokens[role])
        else:
            login = client.post("/api/login", json={"token": tokens[role]})
            assert login.status_code == 200
            headers = {"X-CSRF-Token": login.json()["csrf_token"]}
    r = client.request(method, path, headers=headers, json=body)
    assert r.status_code == EXPECTED[route][role], (route, role, auth, r.text)
    if r.status_code == 401:
        assert r.json()["detail"] == "authentication required"


def test_cookie_session_needs_csrf_token_for_writes(env):
    client, tokens, _ = env
    login = client.post("/api/login", json={"token": tokens["alice"]})
    csrf = login.json()["csrf_token"]
    set_cookie = login.headers["set-cookie"].lower()
    assert "httponly" in set_cookie and "samesite=strict" in set_cookie and "path=/" in set_cookie
    item = client.get("/api/next").json()  # reads work with the cookie alone
    body = {"item_id": item["item_id"], "ranking": order(item)}
    assert client.post("/api/rankings", json=body).status_code == 403
    assert (
        client.post("/api/rankings", json=body, headers={"X-CSRF-Token": "0" * 64}).status_code
        == 403
    )
    assert (
        client.post("/api/rankings", json=body, headers={"X-CSRF-Token": csrf}).status_code == 201
    )
    # the page carries the token for its scripts, in a meta tag
    assert f'name="csrf-token" content="{csrf}"' in client.get("/").text


def test_forged_tampered_and_rotated_sessions_are_rejected(env, tmp_path):
    client, tokens, store = env
    client.post("/api/login", json={"token": tokens["alice"]})
    session = client.cookies[COOKIE]
    assert client.get("/api/me").status_code == 200
    flipped = session[:-1] + ("A" if session[-1] != "A" else "B")
    for forged in (flipped, "x" * 43, "garbage", "", "1.1700000000.abcdef0123456789." + "0" * 64):
        client.cookies.clear()
        client.cookies.set(COOKIE, forged)
        assert client.get("/api/me").status_code == 401, forged
    # a session issued by a server with another secret does not work here (the database keeps
    # only a hash keyed with the secret), so a new secret ends every session
    other = TestClient(create_app(store.path, overlap=2, secret=b"t" * 48))
    other.post("/api/login", json={"token": tokens["alice"]})
    client.cookies.clear()
    client.cookies.set(COOKIE, other.cookies[COOKIE])
    assert client.get("/api/me").status_code == 401
    # rotating the token ends existing sessions, and the old token stops working
    client.cookies.clear()
    client.cookies.set(COOKIE, session)
    assert client.get("/api/me").status_code == 200
    new = store.rotate_token("alice")
    assert client.get("/api/me").status_code == 401
    assert client.get("/api/me", headers=bearer(tokens["alice"])).status_code == 401
    assert client.get("/api/me", headers=bearer(new)).status_code == 200


def test_logout_revokes_the_session_on_the_server(env):
    """The cookie used to be stateless: a copy stayed valid for 7 days after logout."""
    client, tokens, store = env
    login = client.post("/api/login", json={"token": tokens["alice"]})
    csrf = login.json()["csrf_token"]
    copied = client.cookies[COOKIE]
    thief = TestClient(client.app)
    thief.cookies.set(COOKIE, copied)
    assert thief.get("/api/me").status_code == 200
    # a second login (another device) is a separate session
    phone = TestClient(client.app)
    phone.post("/api/login", json={"token": tokens["alice"]})
    assert client.post("/api/logout", headers={"X-CSRF-Token": csrf}).status_code == 204
    assert thief.get("/api/me").status_code == 401
    assert thief.get("/", follow_redirects=False).status_code == 303
    assert phone.get("/api/me").status_code == 200
    # the database holds keyed hashes only, never a cookie value
    raw = store.path.read_bytes() + Path(str(store.path) + "-wal").read_bytes()
    assert phone.cookies[COOKIE].encode() not in raw


def test_a_version_1_database_is_upgraded_in_place(tmp_path):
    """Schema versions 2 and 3 only add tables and a nullable column: a version-1 file (no
    sessions, released_assignments, ranking_requests, gold tables, no items.prompt_messages)
    opens, keeps its data and gets them."""
    import sqlite3

    from rlhfkit.collect.annotate.store import SCHEMA_VERSION
    from rlhfkit.collect.annotate.store.schema import SCHEMA

    db = tmp_path / "old.db"
    conn = sqlite3.connect(db)
    conn.executescript(SCHEMA)  # exactly what version 1 created
    conn.execute("INSERT INTO meta(key, value) VALUES ('schema_version', '1')")
    responses = json.dumps([{"id": f"r{j}", "text": f"answer {j}"} for j in range(3)])
    conn.execute(
        "INSERT INTO items(prompt, responses, content_hash, source, created_at) "
        "VALUES ('Explain tides.', ?, 'h1', 'c.jsonl:1', 0)",
        (responses,),
    )
    conn.commit()
    conn.close()
    store = Store(db)
    token = store.add_annotator("alice")
    aid = store.annotator_by_token(token).id
    with store.write() as conn:  # a ranking as version 1 stored it (its next_item knew no gold)
        conn.execute(
            "INSERT INTO assignments(item_id, annotator_id, response_order, status, assigned_at, "
            """finished_at) VALUES (1, ?, '["r0", "r1", "r2"]', 'submitted', 0, 0)""",
            (aid,),
        )
        conn.execute(
            "INSERT INTO rankings(assignment_id, item_id, annotator_id, ranking, created_at) "
            """VALUES (last_insert_rowid(), 1, ?, '["r0", "r1", "r2"]', 0)""",
            (aid,),
        )

    client = TestClient(create_app(db, secret=SECRET))  # runs Store.init: the upgrade
    assert store.get_meta("schema_version") == str(SCHEMA_VERSION) == "3"
    assert store.get_item(1)["prompt_messages"] is None
    assert store.counts()["rankings"] == 1 and store.gold() == {}
    assert client.post("/api/login", json={"token": token}).status_code == 200
    assert client.get("/api/me").json()["progress"]["done"] == 1
    # and a file from a newer rlhfkit is refused, not misread
    store.set_meta("schema_version", "4")
    from rlhfkit.errors import DataError

    with pytest.raises(DataError, match="schema version 4 is newer than this rlhfkit reads"):
        Store(db).init()


def test_expired_session(tmp_path):
    db = tmp_path / "a.db"
    store = Store(db)
    store.init()
    token = store.add_annotator("a")
    client = TestClient(create_app(db, secret=SECRET, session_max_age_s=-1))
    client.post("/api/login", json={"token": token})
    assert client.get("/api/me").status_code == 401


def test_bad_tokens(env):
    client, tokens, _ = env
    assert client.post("/api/login", json={"token": "nope"}).status_code == 401
    for header in ("Bearer nope", "Basic abc", "Bearer ", tokens["alice"]):
        assert client.get("/api/me", headers={"Authorization": header}).status_code == 401


def test_tokens_are_stored_hashed(env):
    _, tokens, store = env
    wal = Path(str(store.path) + "-wal")
    raw = store.path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")
    assert (
        store.annotator_by_token(tokens["alice"]).token_hash.encode() in raw
    )  # we looked at the right bytes
    for t in tokens.values():
        assert t.encode() not in raw


def test_request_size_limit(tmp_path):
    db = tmp_path / "a.db"
    store = Store(db)
    store.init()
    token = store.add_annotator("a")
    client = TestClient(create_app(db, secret=SECRET, max_body_bytes=1024))
    big = {"item_id": 1, "reason": "x" * 5000}
    assert client.post("/api/skips", headers=bearer(token), json=big).status_code == 413

    def chunks():  # no Content-Length: the limit is enforced while reading
        for _ in range(10):
            yield b"x" * 500

    r = client.post(
        "/api/skips",
        headers={**bearer(token), "Content-Type": "application/json"},
        content=chunks(),
    )
    assert r.status_code == 413


def test_security_headers(env):
    client, tokens, _ = env
    r = client.get("/login")
    assert r.status_code == 200
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert client.get("/static/annotate.js").status_code == 200
    # no interactive docs or schema leaking routes
    assert client.get("/docs", headers=bearer(tokens["admin"])).status_code == 404
    assert client.get("/openapi.json", headers=bearer(tokens["admin"])).status_code == 404


def test_annotator_name_is_escaped_in_pages(tmp_path):
    db = tmp_path / "a.db"
    store = Store(db)
    store.init()
    token = store.add_annotator("<b>x</b>")
    html = TestClient(create_app(db, secret=SECRET)).get("/", headers=bearer(token)).text
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html


def test_secret_file_is_private_and_stable(tmp_path, monkeypatch):
    monkeypatch.delenv("RLHFKIT_ANNOTATE_SECRET", raising=False)
    db = tmp_path / "a.db"
    first = load_secret(db)
    path = Path(str(db) + ".secret")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_secret(db) == first and len(first) >= 32
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        load_secret(db)
    monkeypatch.setenv("RLHFKIT_ANNOTATE_SECRET", "e" * 40)
    assert load_secret(db) == b"e" * 40
    monkeypatch.setenv("RLHFKIT_ANNOTATE_SECRET", "short")
    with pytest.raises(ConfigError):
        load_secret(db)


# ---- stats and export --------------------------------------------------------------------------


def test_stats_and_export_for_admin(env):
    client, tokens, _ = env
    # alice and bob rank the same items (overlap 2): identical rankings on item 1, opposite on item 2
    for who in ("alice", "bob"):
        h = bearer(tokens[who])
        for _ in range(2):
            item = client.get("/api/next", headers=h).json()
            ranking = (
                ["r0", "r1", "r2"]
                if (who == "alice" or item["item_id"] == 1)
                else ["r2", "r1", "r0"]
            )
            assert (
                client.post(
                    "/api/rankings",
                    headers=h,
                    json={"item_id": item["item_id"], "ranking": ranking},
                ).status_code
                == 201
            )
    stats = client.get("/api/stats", headers=bearer(tokens["admin"])).json()
    assert stats["rankings"] == 4 and stats["rankings_needed"] == 8
    ag = stats["agreement"]
    assert ag["items_with_overlap"] == 2
    assert ag["pairwise_agreement"] == 0.5  # 3 of 3 pairs on item 1, 0 of 3 on item 2
    assert ag["most_disagreed"][0]["item_id"] == 2 and ag["most_disagreed"][0]["agreement"] == 0.0
    names = {a["name"]: a["done"] for a in stats["annotators"]}
    assert names == {"alice": 2, "bob": 2, "root": 0}

    r = client.get("/api/export?format=rankings", headers=bearer(tokens["admin"]))
    assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
    recs = [json.loads(x) for x in r.text.splitlines()]
    assert len(recs) == 4 and {x["annotator"] for x in recs} == {"alice", "bob"}
    pairs = [
        json.loads(x)
        for x in client.get(
            "/api/export?format=pairs", headers=bearer(tokens["admin"])
        ).text.splitlines()
    ]
    assert len(pairs) == 12 and set(pairs[0]) == {"prompt", "chosen", "rejected"}
    cons = client.get(
        "/api/export?format=rankings&consensus=ranked-pairs&min_annotators=2",
        headers=bearer(tokens["admin"]),
    )
    recs = [json.loads(x) for x in cons.text.splitlines()]
    assert len(recs) == 1
    assert recs[0]["ranking"] == ["r0", "r1", "r2"]
    assert recs[0]["meta"] == {
        "item_id": 1,
        "consensus": "ranked-pairs",
        "annotators": ["alice", "bob"],
    }
    # item 2: one vote each way on every pair, so no majority anywhere: a three-way tie, which
    # holds no comparison and is left out (and counted)
    assert cons.headers["x-fully-tied-left-out"] == "1"
    assert client.get("/api/export?format=xml", headers=bearer(tokens["admin"])).status_code == 422


def test_concurrent_assignment_never_exceeds_overlap(tmp_path):
    """Many threads asking at once (each a different annotator) through the real store."""
    db = tmp_path / "a.db"
    store = Store(db)
    store.init()
    store.import_candidates(write_candidates(tmp_path / "c.jsonl", 5))
    ids = [store.annotator_by_token(store.add_annotator(f"a{i}")).id for i in range(12)]
    results: dict[int, int | None] = {}
    barrier = threading.Barrier(len(ids))

    def ask(aid: int) -> None:
        barrier.wait()
        item = store.next_item(aid, overlap=2)
        results[aid] = item["item_id"] if item else None

    threads = [threading.Thread(target=ask, args=(a,)) for a in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    taken = [v for v in results.values() if v is not None]
    assert len(taken) == 10  # 5 items x overlap 2; the other two annotators got nothing
    assert all(taken.count(i) == 2 for i in set(taken))


@pytest.mark.slow
def test_cli_workflow_export_feeds_train_rm(tmp_path):
    """import -> add-annotator (token from the printed link) -> rank over HTTP -> export -> train-rm."""
    import subprocess
    import sys

    from rlhfkit.tiny import build_tiny_causal_lm

    def run(*args: str) -> subprocess.CompletedProcess:
        r = subprocess.run(
            [sys.executable, "-m", "rlhfkit", *args], capture_output=True, text=True, timeout=300
        )
        assert r.returncode == 0, r.stderr
        return r

    words = ["good", "bad", "answer", "question", "ok", "fine", "poor"]
    cands = tmp_path / "c.jsonl"
    with open(cands, "w", encoding="utf-8") as f:
        for i in range(24):
            rs = [
                {"id": "g", "text": "good answer good"},
                {"id": "o", "text": "ok answer"},
                {"id": "b", "text": "bad poor answer"},
            ]
            f.write(
                json.dumps({"prompt": f"question {i} " + "fine " * (i % 3), "responses": rs}) + "\n"
            )
    db = tmp_path / "ann.db"
    run("annotate", "import", "--db", str(db), str(cands))
    tokens = {}
    for name in ("ann1", "ann2"):
        link = (
            run("annotate", "add-annotator", name, "--db", str(db)).stdout.strip().splitlines()[-1]
        )
        assert link.startswith("http://127.0.0.1:8000/login#token=")
        tokens[name] = link.split("#token=")[1]
    admin_out = run("annotate", "add-annotator", "boss", "--db", str(db), "--admin").stdout
    assert "admin" in admin_out
    client = TestClient(create_app(db, overlap=2, secret=SECRET))
    for name, token in tokens.items():
        while (r := client.get("/api/next", headers=bearer(token))).status_code == 200:
            item = r.json()
            ranking = ["g", "o", "b"] if name == "ann1" else ["g", ["o", "b"]]
            r = client.post(
                "/api/rankings",
                headers=bearer(token),
                json={"item_id": item["item_id"], "ranking": ranking},
            )
            assert r.status_code == 201
    stats = run("annotate", "stats", "--db", str(db), "--json")
    assert json.loads(stats.stdout)["rankings"] == 48
    out = run("annotate", "stats", "--db", str(db)).stdout
    assert "Krippendorff" in out and "ann1" in out

    rankings = tmp_path / "rankings.jsonl"
    run("annotate", "export", "--db", str(db), "--format", "rankings", "--out", str(rankings))
    assert len(rankings.read_text().splitlines()) == 48
    consensus = tmp_path / "consensus.jsonl"
    run(
        "annotate",
        "export",
        "--db",
        str(db),
        "--format",
        "rankings",
        "--consensus",
        "--min-annotators",
        "2",
        "--out",
        str(consensus),
    )
    recs = [json.loads(x) for x in consensus.read_text().splitlines()]
    assert len(recs) == 24 and all(r["ranking"] == ["g", "o", "b"] for r in recs)
    pairs = tmp_path / "pairs.jsonl"
    run("annotate", "export", "--db", str(db), "--format", "pairs", "--out", str(pairs))
    assert len(pairs.read_text().splitlines()) == 24 * 3 + 24 * 2

    backbone = build_tiny_causal_lm(
        tmp_path / "tiny", words + [f"{i}" for i in range(24)], n_layer=1, n_embd=16
    )
    rm = tmp_path / "rm"
    run(
        "train-rm",
        "--model",
        str(backbone),
        "--data",
        str(rankings),
        "--out",
        str(rm),
        "--epochs",
        "3",
        "--batch-size",
        "8",
        "--learning-rate",
        "3e-3",
        "--eval-split",
        "0.25",
    )
    ev = json.loads((rm / "eval.json").read_text())
    assert ev["accuracy"] > 0.5  # "good" beats the others on held-out rankings


# ---- issue #20: validation outside the write lock ------------------------------------------------


def test_huge_repeated_id_ranking_is_rejected_fast_without_stalling_others(tmp_path):
    """A 64 KiB ranking of one id repeated 13,087 times used to cost 2.4 s of CPU inside the
    write lock (a quadratic check); four in flight held another annotator's GET /api/next for
    seconds. The check is now linear, capped, and runs before the lock."""
    import time

    from rlhfkit.collect.annotate.store import InvalidRanking

    db = tmp_path / "a.db"
    store = Store(db)
    store.init()
    store.import_candidates(write_candidates(tmp_path / "c.jsonl", 4))
    attacker = store.annotator_by_token(store.add_annotator("mallory")).id
    other = store.annotator_by_token(store.add_annotator("olga")).id
    item = store.next_item(attacker, overlap=1)["item_id"]
    huge = [["r0"] * 13_087]
    start = time.perf_counter()
    with pytest.raises(InvalidRanking, match="more than 64 response ids"):
        store.submit_ranking(attacker, item, huge)
    assert time.perf_counter() - start < 0.5
    with pytest.raises(InvalidRanking, match="repeated: r0"):
        store.submit_ranking(attacker, item, [["r0"] * 40])

    # four at once, and another annotator's next item meanwhile
    barrier = threading.Barrier(5)

    def attack() -> None:
        barrier.wait()
        for _ in range(3):
            with pytest.raises(InvalidRanking):
                store.submit_ranking(attacker, item, huge)

    threads = [threading.Thread(target=attack) for _ in range(4)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    assert store.next_item(other, overlap=1) is not None
    waited = time.perf_counter() - start
    for t in threads:
        t.join()
    assert waited < 1.0, f"GET /api/next waited {waited:.2f} s behind the bad rankings"

    # over HTTP the body model caps the ranking too: 422, quickly
    token = store.add_annotator("m2")
    client = TestClient(create_app(db, overlap=1, secret=SECRET))
    mine = client.get("/api/next", headers=bearer(token)).json()["item_id"]
    start = time.perf_counter()
    r = client.post("/api/rankings", headers=bearer(token), json={"item_id": mine, "ranking": huge})
    assert r.status_code == 422 and time.perf_counter() - start < 1.0


def test_import_refuses_items_with_more_responses_than_a_ranking_may_hold(tmp_path):
    from rlhfkit.errors import DataError

    path = write_candidates(tmp_path / "c.jsonl", 2, k=65)
    with pytest.raises(DataError, match=r"c\.jsonl:1: 65 responses: a record holds at most 64"):
        Store(tmp_path / "a.db").import_candidates(path)


# ---- issue #20: no request can cause a 500 ---------------------------------------------------------

SECURITY_HEADERS = (
    "content-security-policy",
    "x-content-type-options",
    "x-frame-options",
    "referrer-policy",
    "cache-control",
)


def assert_security_headers(r) -> None:
    missing = [h for h in SECURITY_HEADERS if h not in r.headers]
    assert not missing, (r.status_code, missing)


def raw(body: bytes, headers: dict | None = None) -> dict:
    return {"content": body, "headers": {**(headers or {}), "Content-Type": "application/json"}}


@pytest.mark.parametrize(
    "case",
    [
        "cookie with a non-ASCII byte",
        "login token NaN",
        "login token with a lone surrogate",
        "item_id 10**30",
        "non-ASCII X-CSRF-Token",
        "deeply nested JSON",
        "body not UTF-8",
    ],
)
def test_requests_that_caused_500_get_a_clean_4xx(env, case, caplog):
    client, tokens, _ = env
    client = TestClient(client.app, raise_server_exceptions=False)
    h = bearer(tokens["alice"])
    item_id = client.get("/api/next", headers=h).json()["item_id"]
    if case == "cookie with a non-ASCII byte":
        r = client.get("/api/me", headers={"Cookie": f"{COOKIE}=1.2.3.\xe9".encode("latin-1")})
        want = 401
    elif case == "login token NaN":
        r = client.post("/api/login", **raw(b'{"token": NaN}'))
        want = 422
    elif case == "login token with a lone surrogate":
        r = client.post(
            "/api/login", **raw(b'{"token": "' + tokens["alice"].encode() + b'\\ud800"}')
        )
        want = 422
    elif case == "item_id 10**30":
        body = {"item_id": 10**30, "ranking": ["r0", "r1", "r2"]}
        r = client.post("/api/rankings", headers=h, json=body)
        want = 422
    elif case == "non-ASCII X-CSRF-Token":
        client.post("/api/login", json={"token": tokens["alice"]})
        body = {"item_id": item_id, "reason": "x"}
        r = client.post("/api/skips", json=body, headers={"X-CSRF-Token": "\xe9".encode("latin-1")})
        want = 403
    elif case == "deeply nested JSON":
        r = client.post("/api/rankings", **raw(b"[" * 20_000 + b"]" * 20_000, h))
        want = 422
    else:
        r = client.post("/api/rankings", **raw(b'{"item_id": 1, "ranking": ["\xff"]}', h))
        want = 422
    assert r.status_code == want, (case, r.status_code, r.text)
    assert_security_headers(r)
    if want == 422:
        assert r.json()["detail"][0]["msg"]
    # nothing the client sent is echoed back or logged
    assert tokens["alice"] not in r.text and tokens["alice"] not in caplog.text


def test_a_500_carries_the_security_headers_and_logs_no_submitted_value(env, caplog, monkeypatch):
    """An unexpected failure answers a plain 500 with the security headers; the log says where it
    happened but not the exception's text, which here quotes the submitted token."""
    client, tokens, store = env
    client = TestClient(client.app, raise_server_exceptions=False)

    def broken(token: str):
        raise ValueError(f"cannot look up {token!r}")

    monkeypatch.setattr(store.__class__, "annotator_by_token", lambda self, token: broken(token))
    with caplog.at_level("ERROR"):
        r = client.post("/api/login", json={"token": tokens["alice"]})
    assert r.status_code == 500 and r.json() == {"detail": "internal server error"}
    assert_security_headers(r)
    assert "ValueError" in caplog.text and "/api/login" in caplog.text
    assert tokens["alice"] not in caplog.text and tokens["alice"] not in r.text


def test_413_carries_the_security_headers(tmp_path):
    db = tmp_path / "a.db"
    Store(db).init()
    client = TestClient(create_app(db, secret=SECRET, max_body_bytes=1024))
    r = client.post("/api/login", **raw(b'{"token": "' + b"x" * 2000 + b'"}'))
    assert r.status_code == 413
    assert_security_headers(r)


def test_cli_import_of_a_lone_surrogate_is_a_clear_error(tmp_path, capsys):
    from rlhfkit.cli.annotate import main

    path = tmp_path / "c.jsonl"
    good = json.dumps({"prompt": "fine", "responses": ["a", "b"]})
    bad = '{"prompt": "q", "responses": ["a", "b\\udc80c"]}'
    path.write_text(good + "\n" + bad + "\n", encoding="utf-8")
    from rlhfkit.errors import DataError

    with pytest.raises(DataError) as e:
        main(["import", "--db", str(tmp_path / "a.db"), str(path)])
    assert str(e.value) == (
        f"{path}:2: responses[1].text holds a lone surrogate ('\\udc80' at character 1), "
        "which is not valid Unicode text"
    )
    assert not (tmp_path / "a.db").exists()


# ---- issue #20: late and repeated submissions ------------------------------------------------------


def test_submission_after_the_timeout_is_taken_while_the_item_is_free(tmp_path):
    """The timeout releases an untouched assignment when anyone asks for work; a ranking that
    arrived later used to get a misleading 404 "not assigned to you". It is now saved if the item
    still has a free slot, and otherwise refused (409) with a message that says what happened."""
    import sqlite3

    db = tmp_path / "a.db"
    store = Store(db)
    store.init()
    store.import_candidates(write_candidates(tmp_path / "c.jsonl", 3))
    tokens = {n: store.add_annotator(n) for n in ("slow", "other", "late")}
    client = TestClient(create_app(db, overlap=1, secret=SECRET, assignment_timeout_s=3600))

    def get(who: str) -> dict:
        return client.get("/api/next", headers=bearer(tokens[who])).json()

    def post(who: str, item: dict):
        body = {"item_id": item["item_id"], "ranking": order(item)}
        return client.post("/api/rankings", headers=bearer(tokens[who]), json=body)

    def two_hours_pass(item: dict) -> None:
        with sqlite3.connect(db) as conn:
            conn.execute(
                "UPDATE assignments SET assigned_at = assigned_at - 7200 WHERE item_id = ?",
                (item["item_id"],),
            )

    # 1. released, and nobody took it: saved, in the order the annotator was shown
    first = get("other")
    slow = get("slow")
    two_hours_pass(slow)
    assert get("other") == first  # asking releases slow's item; other keeps their own
    assert store.counts()["assignments"] == 1
    r = post("slow", slow)
    assert r.status_code == 201, r.text
    (saved,) = [it for it in store.rankings_by_item() if it["item_id"] == slow["item_id"]]
    assert saved["rankings"][0]["shown_order"] == order(slow)

    # 2. released and given to someone else: not saved, and said why
    late = get("late")
    two_hours_pass(late)
    assert post("other", first).status_code == 201
    assert get("other")["item_id"] == late["item_id"]  # the only item with a free slot
    r = post("late", late)
    assert r.status_code == 409
    detail = r.json()["detail"]
    assert "released after the assignment timeout" in detail and "other annotators" in detail

    # 3. never this annotator's: 404 as before
    assert post("late", slow).status_code == 404


def test_a_retried_submission_with_its_request_id_is_answered_saved(env):
    """A retry after a lost 201 used to get 409 "already submitted" although the ranking was
    saved; with the client's request id it gets the 201 of the ranking saved the first time."""
    client, tokens, store = env
    h = bearer(tokens["alice"])
    item = client.get("/api/next", headers=h).json()
    body = {"item_id": item["item_id"], "ranking": order(item), "request_id": "a1b2c3d4"}
    first = client.post("/api/rankings", headers=h, json=body)
    again = client.post("/api/rankings", headers=h, json=body)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert store.counts()["rankings"] == 1
    # the same id for another item is a client bug: said so, nothing saved
    other = client.get("/api/next", headers=h).json()
    r = client.post("/api/rankings", headers=h, json={**body, "item_id": other["item_id"]})
    assert r.status_code == 409 and "already used for item" in r.json()["detail"]
    # another annotator's ids are their own
    hb = bearer(tokens["bob"])
    theirs = client.get("/api/next", headers=hb).json()
    r = client.post(
        "/api/rankings",
        headers=hb,
        json={**body, "item_id": theirs["item_id"], "ranking": order(theirs)},
    )
    assert r.status_code == 201
    # without a request id a repeat is still a conflict, and ids are short URL-safe strings
    plain = {"item_id": item["item_id"], "ranking": order(item)}
    assert client.post("/api/rankings", headers=h, json=plain).status_code == 409
    for bad in ("", "x" * 65, "has space", "é"):
        r = client.post("/api/rankings", headers=h, json={**plain, "request_id": bad})
        assert r.status_code == 422, bad
    assert store.counts()["rankings"] == 2
