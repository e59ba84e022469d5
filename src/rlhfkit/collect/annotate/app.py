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

The rooms: ``auth.py`` (secret, sessions, identities), ``guard.py`` (body cap, security headers),
``bodies.py`` (request bodies), ``routes.py`` (pages, the annotators' API, the admins' API),
``store/`` (the database), ``export.py``, ``agreement.py`` and ``quality.py``.
"""

import contextlib
import math
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from rlhfkit.collect.annotate.agreement import CONSENSUS
from rlhfkit.collect.annotate.auth import Auth, load_secret
from rlhfkit.collect.annotate.guard import GuardMiddleware
from rlhfkit.collect.annotate.http_errors import install_error_handlers
from rlhfkit.collect.annotate.routes import (
    Guidelines,
    admin_routes,
    annotator_routes,
    page_routes,
)
from rlhfkit.collect.annotate.store import FLAG_REASONS, Store
from rlhfkit.errors import ConfigError

HERE = Path(__file__).parent


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
    auth = Auth(store, key, session_max_age_s, secure_cookies)

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
    app.include_router(page_routes(templates, auth, guide))
    app.include_router(annotator_routes(store, auth, overlap, assignment_timeout_s))
    app.include_router(admin_routes(store, auth, overlap))
    assert set(FLAG_REASONS) == {"harmful", "broken", "spam", "other"}
    assert set(CONSENSUS) == {"ranked-pairs", "borda"}
    return app
