"""The annotation web app: FastAPI, built by :func:`create_app` (no module-level state).

Security model (see docs/annotation.md):

- Every route that reads or writes data needs an identity: ``Authorization: Bearer TOKEN`` or the
  session cookie that ``POST /api/login`` sets. Only ``/login`` (a static form), ``/static/*`` and
  ``POST /api/login`` itself are open, and they hold no data.
- The session cookie is a random 256-bit value, HttpOnly, SameSite=Strict; the database keeps only
  its HMAC under the server secret, with an expiry. Logout deletes it, rotating the annotator's
  token deletes all of theirs, and a new server secret invalidates every one.
- Requests authenticated by cookie that change state must send ``X-CSRF-Token`` (an HMAC of the
  session, given to the page in a ``<meta>`` tag); Bearer requests need none (browsers never add
  that header on their own).
- Annotators only reach items assigned to them (anything else is 404, whether it exists or not);
  stats and export are for admins only (403 for others).
- Model output is untrusted: pages show it as plain text with ``textContent``, or as Markdown that
  the server renders with raw HTML escaped and only http(s)/mailto links (``markdown.py``); a
  strict Content-Security-Policy (no inline script) backs that up.
- Request bodies are capped (413 past ``max_body_bytes``).
- No request causes a 500 (a schemathesis test fuzzes every operation); should one happen anyway,
  it carries the security headers like every other answer, and the log records where it failed,
  never the exception's text (which may quote a submitted token). See http_errors.py.
"""

import contextlib
import hashlib
import hmac
import json
import math
import os
import re
import secrets
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response, Security
from fastapi import Path as FastAPIPath
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ConfigDict, Field

from rlhfkit.collect.annotate.agreement import CONSENSUS, agreement_report
from rlhfkit.collect.annotate.api_schema import (
    COOKIE,
    EXPORT_200,
    AdminItemOut,
    FlagOut,
    GoldItemOut,
    GoldOut,
    ItemOut,
    LoginOut,
    MeOut,
    RankingOut,
    SkipOut,
    bearer_scheme,
    cookie_scheme,
    errors,
)
from rlhfkit.collect.annotate.export import export_lines, export_records, export_reliable
from rlhfkit.collect.annotate.http_errors import install_error_handlers, log_unhandled
from rlhfkit.collect.annotate.markdown import render_markdown
from rlhfkit.collect.annotate.quality import store_quality
from rlhfkit.collect.annotate.store import (
    FLAG_REASONS,
    MAX_RESPONSES,
    Annotator,
    Conflict,
    InvalidRanking,
    NotFound,
    Store,
)
from rlhfkit.errors import ConfigError

HERE = Path(__file__).parent
SECRET_ENV = "RLHFKIT_ANNOTATE_SECRET"
UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
SESSION_RE = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32)

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


# ---- the server secret -----------------------------------------------------------------------


def load_secret(db_path: str | Path) -> bytes:
    """The key that signs session cookies: ``$RLHFKIT_ANNOTATE_SECRET``, or ``DB.secret`` beside
    the database, created with 32 random bytes and mode 0600 on first use. A secret file that
    others can read is refused rather than trusted (a leaked key lets anyone forge a session)."""
    env = os.environ.get(SECRET_ENV)
    if env:
        if len(env) < 32:
            raise ConfigError(f"${SECRET_ENV} must be at least 32 characters")
        return env.encode("utf-8")
    path = Path(str(db_path) + ".secret")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise ConfigError(
                f"{path}: secret file is readable by others (mode {mode:o}); run chmod 600 on it"
            ) from None
        key = path.read_text(encoding="ascii").strip()
        if len(key) < 32:
            raise ConfigError(
                f"{path}: secret file is too short (delete it to make a new one)"
            ) from None
        return key.encode("ascii")
    key = secrets.token_hex(32)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(key + "\n")
    return key.encode("ascii")


def same_secret(sent: str, expected: str) -> bool:
    """Constant-time comparison of what a client sent with what we expect. On bytes: given
    strings, ``hmac.compare_digest`` raises TypeError for any non-ASCII character (a 500)."""
    return hmac.compare_digest(
        sent.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


# ---- request and response bodies -------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# SQLite integers are 64-bit: a larger id cannot name an item (and used to be an OverflowError).
ItemId = Annotated[int, Field(ge=1, le=2**63 - 1)]


class LoginBody(_Body):
    # tokens are secrets.token_urlsafe(32): 43 characters of A-Z a-z 0-9 - _
    token: str = Field(min_length=1, max_length=200, pattern=r"^\s*[A-Za-z0-9_-]+\s*$")


class RankingBody(_Body):
    item_id: ItemId
    # best first; an inner list is a tie group
    ranking: list[str | Annotated[list[str], Field(max_length=MAX_RESPONSES)]] = Field(
        max_length=MAX_RESPONSES
    )
    # the client's id for this submission: sent again (a retry after a lost answer), the ranking
    # saved the first time is acknowledged instead of a 409
    request_id: str | None = Field(
        default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$"
    )


class GoldBody(_Body):
    # best first; an inner list is a tie group
    ranking: list[str | Annotated[list[str], Field(max_length=MAX_RESPONSES)]] = Field(
        max_length=MAX_RESPONSES
    )
    note: str | None = Field(default=None, max_length=1000)


class SkipBody(_Body):
    item_id: ItemId
    reason: str = Field(min_length=1, max_length=500)


class FlagBody(_Body):
    item_id: ItemId
    reason: Literal["harmful", "broken", "spam", "other"]
    note: str | None = Field(default=None, max_length=1000)


@dataclass(frozen=True)
class Principal:
    annotator: Annotator
    session: str | None  # the cookie value when authenticated by cookie, else None


# ---- middleware: body size cap and security headers (plain ASGI: cheap, sees every request) --


class GuardMiddleware:
    def __init__(self, app: Any, max_body_bytes: int):
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            await _plain(send, 413, b'{"detail":"request body too large"}')
            return
        if length is None and scope.get("method") in UNSAFE_METHODS:
            # No Content-Length (chunked): read the body here, up to the cap, and replay it.
            # (Raising from inside receive() would surface as FastAPI's generic 400.)
            chunks, seen, more = [], 0, True
            while more:
                message = await receive()
                if message["type"] != "http.request":
                    break
                chunks.append(message.get("body", b""))
                seen += len(chunks[-1])
                more = message.get("more_body", False)
                if seen > self.max_body_bytes:
                    await _plain(send, 413, b'{"detail":"request body too large"}')
                    return
            body = b"".join(chunks)
            replayed = False

            async def replay() -> dict:
                nonlocal replayed
                if replayed:
                    return await receive()
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}

            receive = replay

        started = False

        async def send_with_headers(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception as e:
            # Starlette's own 500 goes out past this middleware (no security headers) and logs
            # the exception's text, which can hold what the client sent (a token). Log where it
            # failed without any value, and answer a plain 500 with the headers.
            log_unhandled(scope, e)
            if started:
                raise
            await _plain(send, 500, b'{"detail":"internal server error"}')


SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]


async def _plain(send: Any, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *SECURITY_HEADERS,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


# ---- guidelines ------------------------------------------------------------------------------


class Guidelines:
    """The ``--guidelines`` Markdown file, rendered safely; re-read when it changes on disk, so an
    edit shows on the next page load (if it becomes unreadable, the last good version stays)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._mtime: float | None = None
        self._html = ""
        self.html()  # a missing or unreadable file is an error at startup, not a blank panel

    def html(self) -> str:
        try:
            mtime = self.path.stat().st_mtime
            if mtime != self._mtime:
                text = self.path.read_text(encoding="utf-8")
                self._html, self._mtime = render_markdown(text), mtime
        except (OSError, UnicodeDecodeError) as e:
            if self._mtime is None:
                what = "not valid UTF-8" if isinstance(e, UnicodeDecodeError) else e.strerror
                raise ConfigError(f"{self.path}: cannot read the guidelines ({what})") from None
        return self._html


def with_markdown(item: dict[str, Any]) -> dict[str, Any]:
    """``/api/next``'s item with the prompt's and each response's Markdown rendered as safe HTML
    (``prompt_html``, ``responses[i].html``) beside the plain text."""
    return {
        **item,
        "prompt_html": render_markdown(item["prompt"]),
        "responses": [{**r, "html": render_markdown(r["text"])} for r in item["responses"]],
    }


# ---- the app -----------------------------------------------------------------------------------


def create_app(
    db_path: str | Path,
    *,
    overlap: int = 1,
    secret: bytes | None = None,
    assignment_timeout_s: float | None = 2 * 3600,
    session_max_age_s: int = 7 * 24 * 3600,
    max_body_bytes: int = 64 * 1024,
    secure_cookies: bool = False,
    synchronous: str = "FULL",
    guidelines: str | Path | None = None,
) -> FastAPI:
    """Build the app for the database at ``db_path`` (created if missing).

    ``overlap``: how many different annotators rank each item. ``assignment_timeout_s``: an item
    opened but neither ranked nor skipped for this long goes back to the pool. ``secure_cookies``:
    mark the cookie Secure (set it when serving behind HTTPS). ``synchronous``: SQLite's
    ``FULL`` (a 201 survives power loss) or ``NORMAL`` (survives a server crash; faster).
    ``guidelines``: a Markdown file shown to annotators in a collapsible panel.
    """
    if overlap < 1:
        raise ConfigError("overlap must be at least 1")
    if assignment_timeout_s is not None and not (0 < assignment_timeout_s < math.inf):
        raise ConfigError(
            f"assignment timeout must be positive seconds, got {assignment_timeout_s}"
        )
    if max_body_bytes < 1024:
        raise ConfigError(f"max body bytes must be at least 1024, got {max_body_bytes}")
    store = Store(db_path, synchronous=synchronous)
    store.init()
    store.set_meta("overlap", str(overlap))
    key = secret if secret is not None else load_secret(db_path)
    guide = Guidelines(guidelines) if guidelines is not None else None
    templates = Jinja2Templates(directory=str(HERE / "templates"))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        # Fold the WAL into the database file at shutdown, so that the file stands alone. This
        # must happen here: after a graceful shutdown on SIGTERM (systemctl stop, docker stop) or
        # SIGINT, uvicorn re-raises the signal, so nothing after uvicorn.run() ever runs.
        store.checkpoint()
        store.close()

    app = FastAPI(
        title="rlhfkit annotate",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.state.store = store
    app.state.overlap = overlap
    app.add_middleware(GuardMiddleware, max_body_bytes=max_body_bytes)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    # -- sessions --------------------------------------------------------------------------------

    def sign(payload: str) -> str:
        return hmac.new(key, payload.encode("utf-8"), hashlib.sha256).hexdigest()

    def make_session(a: Annotator) -> str:
        # A random value; the server keeps only its keyed hash, so logout (or a token rotation,
        # or a new secret) ends the session wherever the cookie was copied to.
        session = secrets.token_urlsafe(32)
        store.create_session(a.id, session_key(session), session_max_age_s)
        return session

    def session_key(session: str) -> str:
        return sign("session:" + session)

    def csrf_token(session: str) -> str:
        return sign("csrf:" + session)

    def annotator_from_session(value: str) -> Annotator | None:
        if not SESSION_RE.fullmatch(value):
            return None  # not one of ours (e.g. a signed cookie from before version 2)
        return store.annotator_by_session(session_key(value))

    def identify(request: Request) -> Principal | None:
        header = request.headers.get("authorization")
        if header is not None:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                return None
            a = store.annotator_by_token(token.strip())
            return Principal(a, None) if a else None
        value = request.cookies.get(COOKIE)
        if value:
            a = annotator_from_session(value)
            return Principal(a, value) if a else None
        return None

    def authenticated(
        request: Request,
        # These two only document the two ways in, for the OpenAPI schema; identify() reads them.
        _token: Annotated[Any, Security(bearer_scheme)] = None,
        _session: Annotated[Any, Security(cookie_scheme)] = None,
    ) -> Principal:
        p = identify(request)
        if p is None:
            raise HTTPException(
                401, "authentication required", headers={"WWW-Authenticate": "Bearer"}
            )
        if p.session is not None and request.method in UNSAFE_METHODS:
            sent = request.headers.get("x-csrf-token", "")
            if not same_secret(sent, csrf_token(p.session)):
                raise HTTPException(403, "missing or wrong X-CSRF-Token header")
        return p

    def admin(p: Annotated[Principal, Depends(authenticated)]) -> Principal:
        if not p.annotator.is_admin:
            raise HTTPException(403, "admins only")
        return p

    User = Annotated[Principal, Depends(authenticated)]
    Admin = Annotated[Principal, Depends(admin)]

    def set_cookie(response: Response, value: str) -> None:
        response.set_cookie(
            COOKIE,
            value,
            max_age=session_max_age_s,
            httponly=True,
            samesite="strict",
            secure=secure_cookies,
            path="/",
        )

    # -- pages -----------------------------------------------------------------------------------

    def page(request: Request, name: str, p: Principal) -> HTMLResponse:
        context = {
            "name": p.annotator.name,
            "is_admin": p.annotator.is_admin,
            "csrf": csrf_token(p.session) if p.session else "",
            "guidelines": guide.html() if guide is not None else "",
        }
        return templates.TemplateResponse(request, name, context)

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_page(request: Request) -> HTMLResponse:
        return templates.TemplateResponse(request, "login.html", {})

    @app.get("/", include_in_schema=False)
    def annotate_page(request: Request) -> Response:
        p = identify(request)
        if p is None:
            return RedirectResponse("/login", status_code=303)
        return page(request, "annotate.html", p)

    @app.get("/admin", include_in_schema=False)
    def admin_page(request: Request) -> Response:
        p = identify(request)
        if p is None:
            return RedirectResponse("/login", status_code=303)
        if not p.annotator.is_admin:
            return HTMLResponse("<!doctype html><title>Forbidden</title><p>Admins only.</p>", 403)
        return page(request, "admin.html", p)

    # -- API -------------------------------------------------------------------------------------

    @app.post("/api/login", response_model=LoginOut, responses=errors(401, 413, 422))
    def login(body: LoginBody) -> JSONResponse:
        a = store.annotator_by_token(body.token.strip())
        if a is None:
            raise HTTPException(401, "unknown token")
        session = make_session(a)
        response = JSONResponse(
            {"name": a.name, "is_admin": a.is_admin, "csrf_token": csrf_token(session)}
        )
        set_cookie(response, session)
        return response

    @app.post("/api/logout", status_code=204, responses=errors(401, 403, 413))
    def logout(p: User) -> Response:
        if p.session is not None:
            store.end_session(session_key(p.session))
        response = Response(status_code=204)
        response.delete_cookie(
            COOKIE, path="/", httponly=True, samesite="strict", secure=secure_cookies
        )
        return response

    @app.get("/api/me", response_model=MeOut, responses=errors(401))
    def me(p: User) -> dict[str, Any]:
        return {
            "name": p.annotator.name,
            "is_admin": p.annotator.is_admin,
            "progress": store.progress(p.annotator.id, overlap),
        }

    @app.get(
        "/api/next",
        response_model=ItemOut,
        responses={204: {"description": "nothing left for this annotator"}, **errors(401)},
    )
    def next_item(p: User) -> Any:
        item = store.next_item(p.annotator.id, overlap, assignment_timeout_s)
        if item is None:
            return Response(status_code=204)
        return with_markdown(item)

    @app.post(
        "/api/rankings",
        status_code=201,
        response_model=RankingOut,
        responses=errors(401, 403, 404, 409, 413, 422),
    )
    def submit(body: RankingBody, p: User) -> dict[str, Any]:
        try:
            ranking_id = store.submit_ranking(
                p.annotator.id, body.item_id, body.ranking, request_id=body.request_id
            )
        except NotFound as e:
            raise HTTPException(404, str(e)) from None
        except Conflict as e:
            raise HTTPException(409, str(e)) from None
        except InvalidRanking as e:
            # the same shape as every other 422: a list of {type, loc, msg}
            error = {"type": "invalid_ranking", "loc": ("body", "ranking"), "msg": str(e)}
            raise RequestValidationError([error]) from None
        return {"id": ranking_id, "item_id": body.item_id}

    @app.post(
        "/api/skips",
        status_code=201,
        response_model=SkipOut,
        responses=errors(401, 403, 404, 409, 413, 422),
    )
    def skip(body: SkipBody, p: User) -> dict[str, Any]:
        try:
            store.skip(p.annotator.id, body.item_id, body.reason.strip() or "no reason")
        except NotFound as e:
            raise HTTPException(404, str(e)) from None
        except Conflict as e:
            raise HTTPException(409, str(e)) from None
        return {"item_id": body.item_id, "skipped": True}

    @app.post(
        "/api/flags",
        status_code=201,
        response_model=FlagOut,
        responses={
            200: {"model": FlagOut, "description": "already flagged so: nothing new"},
            **errors(401, 403, 404, 413, 422),
        },
    )
    def flag(body: FlagBody, p: User, response: Response) -> dict[str, Any]:
        try:
            created = store.flag(p.annotator.id, body.item_id, body.reason, body.note)
        except NotFound as e:
            raise HTTPException(404, str(e)) from None
        if not created:
            response.status_code = 200  # same flag again: nothing new
        return {"item_id": body.item_id, "reason": body.reason}

    @app.get("/api/stats", responses=errors(401, 403))
    def stats(p: Admin) -> dict[str, Any]:
        return {
            **store.overview(overlap),
            "agreement": agreement_report(store.rankings_by_item(min_annotators=2)),
            "quality": store_quality(store),
        }

    @app.get(
        "/api/export",
        response_class=Response,
        responses={**EXPORT_200, **errors(401, 403, 422)},
    )
    def export(
        p: Admin,
        format: Literal["rankings", "pairs"] = "rankings",
        min_annotators: Annotated[int, Query(ge=1, le=1000)] = 1,
        consensus: Literal["none", "ranked-pairs", "borda"] = "none",
        min_reliability: Annotated[float | None, Query(ge=-1, le=1)] = None,
        weight_by_reliability: bool = False,
    ) -> Response:
        method = None if consensus == "none" else consensus
        if min_reliability is None and not weight_by_reliability:
            records = export_records(store, min_annotators, method)
        else:
            try:
                records = export_reliable(
                    store, min_annotators, method, min_reliability, weight_by_reliability
                ).records
            except ConfigError as e:
                error = {"type": "invalid_options", "loc": ("query", "consensus"), "msg": str(e)}
                raise RequestValidationError([error]) from None
        rows = export_lines(records, format)
        body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        name = f"{format}{'' if consensus == 'none' else '-' + consensus}.jsonl"
        return Response(
            body,
            media_type="application/x-ndjson",
            headers={
                "Content-Disposition": f'attachment; filename="{name}"',
                # fully tied rankings hold no comparison: left out, and counted here
                "X-Fully-Tied-Left-Out": str(records.fully_tied),
            },
        )

    # -- quality control: gold items (admins) -----------------------------------------------------

    PathItemId = Annotated[int, FastAPIPath(ge=1, le=2**63 - 1)]

    @app.get(
        "/api/items/{item_id}", response_model=AdminItemOut, responses=errors(401, 403, 404, 422)
    )
    def get_item(item_id: PathItemId, p: Admin) -> dict[str, Any]:
        item = store.get_item(item_id)
        if item is None:
            raise HTTPException(404, f"no item {item_id}")
        return {**item, "gold": store.gold().get(item_id)}

    @app.get("/api/gold", response_model=list[GoldItemOut], responses=errors(401, 403))
    def list_gold(p: Admin) -> list[dict[str, Any]]:
        return store.gold_items()

    @app.put(
        "/api/gold/{item_id}", response_model=GoldOut, responses=errors(401, 403, 404, 413, 422)
    )
    def set_gold(item_id: PathItemId, body: GoldBody, p: Admin) -> dict[str, Any]:
        try:
            ranking = store.set_gold(item_id, body.ranking, body.note)
        except NotFound as e:
            raise HTTPException(404, str(e)) from None
        except InvalidRanking as e:
            error = {"type": "invalid_ranking", "loc": ("body", "ranking"), "msg": str(e)}
            raise RequestValidationError([error]) from None
        return {"item_id": item_id, "ranking": ranking}

    @app.delete(
        "/api/gold/{item_id}",
        status_code=204,
        response_class=Response,
        responses={204: {"description": "no longer gold"}, **errors(401, 403, 404, 413, 422)},
    )
    def remove_gold(item_id: PathItemId, p: Admin) -> Response:
        if not store.remove_gold(item_id):
            raise HTTPException(404, f"item {item_id} is not a gold item")
        return Response(status_code=204)

    assert set(FLAG_REASONS) == {"harmful", "broken", "spam", "other"}
    assert set(CONSENSUS) == {"ranked-pairs", "borda"}
    return app
