"""Fuzz the whole annotation API from its OpenAPI schema with schemathesis (issue #20, finding 7).

Every operation of ``create_app(...).openapi()`` gets generated requests — valid ones, boundary
values, and (schemathesis' negative and coverage phases) invalid ones — as a random identity:
nobody, a bogus token, an annotator's token, an admin's token, or a fresh cookie session with its
CSRF header. Every answer must be no 5xx, carry the security headers, and match what the schema
documents (status code, content type, body). The number of examples is bounded so the run takes
well under a minute on 2 cores.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis import checks

from rlhfkit.collect.annotate.api_schema import COOKIE
from rlhfkit.collect.annotate.app import create_app
from rlhfkit.collect.annotate.guard import SECURITY_HEADERS
from rlhfkit.collect.annotate.store import Store
from test_annotate_api import bearer, write_candidates

IDENTITIES = ["admin", "annotator", "cookie", "bogus", "nobody"]


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory):
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    db = tmp / "ann.db"
    store = Store(db, synchronous="NORMAL")  # fsync per commit buys nothing here
    store.init()
    store.import_candidates(write_candidates(tmp / "c.jsonl", 30))
    tokens = {"annotator": store.add_annotator("ann"), "admin": store.add_annotator("adm", True)}
    app = create_app(db, overlap=2, secret=b"f" * 48, synchronous="NORMAL")
    client = TestClient(app)
    # some items already opened and ranked, so that stats, export and conflicts have data
    for token in tokens.values():
        h = bearer(token)
        for _ in range(3):
            item = client.get("/api/next", headers=h).json()
            ids = [r["id"] for r in item["responses"]]
            body = {"item_id": item["item_id"], "ranking": [ids[0], ids[1:]]}
            assert client.post("/api/rankings", headers=h, json=body).status_code == 201
        client.get("/api/next", headers=h)
    return app, client, tokens


def openapi_of_the_app() -> dict:
    """The schema, read at collection time from an app on a throwaway database (schemathesis'
    fixture-based loader does not work with pytest 9); the requests go to the fixture's app."""
    with tempfile.TemporaryDirectory() as d:
        app = create_app(Path(d) / "schema.db", secret=b"s" * 48)
        app.state.store.close()
        return app.openapi()


schema = schemathesis.openapi.from_dict(openapi_of_the_app())


@schemathesis.check
def security_headers(ctx, response, case) -> None:
    """Every answer, 2xx or 4xx (or a 5xx, were there one), carries the security headers."""
    missing = [
        name.decode() for name, _ in SECURITY_HEADERS if name.decode() not in response.headers
    ]
    if missing:
        raise AssertionError(f"{response.status_code} answer without {', '.join(missing)}")


CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    security_headers,
]


def identity_headers(who: str, client: TestClient, tokens: dict[str, str]) -> dict[str, str]:
    if who in tokens:
        return bearer(tokens[who])
    if who == "bogus":
        return bearer("A" * 43)
    if who == "cookie":  # a fresh session each time: the fuzzer may well log out
        r = client.post("/api/login", json={"token": tokens["annotator"]})
        session = r.cookies.get(COOKIE) or client.cookies.get(COOKIE)
        client.cookies.clear()
        return {"Cookie": f"{COOKIE}={session}", "X-CSRF-Token": r.json()["csrf_token"]}
    return {}


@pytest.mark.parametrize("who", IDENTITIES)
@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api_fuzz_no_5xx_security_headers_and_schema_conformance(case, who, fuzzed):
    app, client, tokens = fuzzed
    headers = identity_headers(who, client, tokens)
    if who != "nobody" and case.headers:
        # the fuzzer's own Authorization / Cookie would replace the identity chosen
        case.headers = {
            k: v for k, v in case.headers.items() if k.lower() not in ("authorization", "cookie")
        }
    case.call_and_validate(headers=headers, checks=CHECKS, app=app)
