"""What the annotation API answers, as models for its OpenAPI schema (``create_app(...).openapi()``).

The app builds its answers as plain dicts; these models only document them, and the schemathesis
test (tests/test_annotate_fuzz.py) checks every answer against this schema, so the documentation
cannot drift from the code. Authentication appears as two security schemes: ``token`` (the
``Authorization: Bearer`` header) and ``session`` (the cookie that ``POST /api/login`` sets).
"""

from __future__ import annotations

from typing import Any

from fastapi.security import APIKeyCookie, HTTPBearer
from pydantic import BaseModel

COOKIE = "rlhfkit_session"

bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="token",
    description="The annotator's secret token (`rlhfkit annotate add-annotator`).",
)
cookie_scheme = APIKeyCookie(
    name=COOKIE,
    auto_error=False,
    scheme_name="session",
    description="The session cookie `POST /api/login` sets. Requests that change anything must "
    "also send the `X-CSRF-Token` header that login returned.",
)


class Detail(BaseModel):
    detail: str


class ValidationDetail(BaseModel):
    type: str
    loc: list[str]
    msg: str


class ValidationErrors(BaseModel):
    detail: list[ValidationDetail]


class LoginOut(BaseModel):
    name: str
    is_admin: bool
    csrf_token: str


class Progress(BaseModel):
    done: int
    skipped: int
    open: int
    remaining: int


class MeOut(BaseModel):
    name: str
    is_admin: bool
    progress: Progress


class ResponseText(BaseModel):
    id: str
    text: str


class ResponseMarkdown(ResponseText):
    html: str
    """the text's Markdown rendered safely (raw HTML escaped; annotate/markdown.py)"""


class ItemOut(BaseModel):
    item_id: int
    prompt: str
    prompt_html: str
    responses: list[ResponseMarkdown]


Ranking = list[str | list[str]]


class AdminItemOut(BaseModel):
    id: int
    prompt: str
    responses: list[ResponseText]
    gold: Ranking | None


class GoldOut(BaseModel):
    item_id: int
    ranking: Ranking


class GoldItemOut(GoldOut):
    prompt: str
    note: str | None
    rankings: int
    created_at: float


class RankingOut(BaseModel):
    id: int
    item_id: int


class SkipOut(BaseModel):
    item_id: int
    skipped: bool


class FlagOut(BaseModel):
    item_id: int
    reason: str


ERRORS: dict[int, dict[str, Any]] = {
    401: {
        "model": Detail,
        "description": "No token or session, or an unknown, revoked or expired one.",
    },
    403: {
        "model": Detail,
        "description": "Admins only; or a write authenticated by cookie without its X-CSRF-Token.",
    },
    404: {"model": Detail, "description": "The item does not exist or is not assigned to you."},
    409: {
        "model": Detail,
        "description": "Already ranked or skipped; or released by the timeout and taken by others.",
    },
    413: {"model": Detail, "description": "The body is larger than `--max-body-bytes`."},
    422: {"model": ValidationErrors, "description": "A malformed body or query."},
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` entries of the error answers a route gives."""
    return {code: ERRORS[code] for code in codes}


EXPORT_200: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "JSONL: one native ranking record or one TRL pair per line.",
        "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
        "headers": {
            "X-Fully-Tied-Left-Out": {
                "description": "Rankings left out because every response in them is tied.",
                "schema": {"type": "integer", "minimum": 0},
            },
            "Content-Disposition": {"schema": {"type": "string"}},
        },
    }
}
