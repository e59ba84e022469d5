"""Who is asking: a Bearer token, or the session cookie that ``POST /api/login`` sets.

The session cookie is a random 256-bit value, HttpOnly, SameSite=Strict; the database keeps only
its HMAC under the server secret, with an expiry. Logout deletes it, rotating the annotator's token
deletes all of theirs, and a new server secret invalidates every one. Requests authenticated by
cookie that change state must send ``X-CSRF-Token`` (an HMAC of the session).
"""

import hashlib
import hmac
import os
import re
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import HTTPException, Request, Response, Security

from rlhfkit.collect.annotate.api_schema import COOKIE, bearer_scheme, cookie_scheme
from rlhfkit.collect.annotate.guard import UNSAFE_METHODS
from rlhfkit.collect.annotate.store import Annotator, Store
from rlhfkit.errors import ConfigError

SECRET_ENV = "RLHFKIT_ANNOTATE_SECRET"
SESSION_RE = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32)


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


@dataclass(frozen=True)
class Principal:
    annotator: Annotator
    session: str | None  # the cookie value when authenticated by cookie, else None


class Auth:
    """Sessions and identities of one app (its store, its secret)."""

    def __init__(self, store: Store, key: bytes, max_age_s: int, secure_cookies: bool):
        self.store, self.key = store, key
        self.max_age_s, self.secure_cookies = max_age_s, secure_cookies

    def sign(self, payload: str) -> str:
        return hmac.new(self.key, payload.encode("utf-8"), hashlib.sha256).hexdigest()

    def make_session(self, a: Annotator) -> str:
        # A random value; the server keeps only its keyed hash, so logout (or a token rotation,
        # or a new secret) ends the session wherever the cookie was copied to.
        session = secrets.token_urlsafe(32)
        self.store.create_session(a.id, self.session_key(session), self.max_age_s)
        return session

    def session_key(self, session: str) -> str:
        return self.sign("session:" + session)

    def csrf_token(self, session: str) -> str:
        return self.sign("csrf:" + session)

    def annotator_from_session(self, value: str) -> Annotator | None:
        if not SESSION_RE.fullmatch(value):
            return None  # not one of ours (e.g. a signed cookie from before version 2)
        return self.store.annotator_by_session(self.session_key(value))

    def identify(self, request: Request) -> Principal | None:
        header = request.headers.get("authorization")
        if header is not None:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                return None
            a = self.store.annotator_by_token(token.strip())
            return Principal(a, None) if a else None
        value = request.cookies.get(COOKIE)
        if value:
            a = self.annotator_from_session(value)
            return Principal(a, value) if a else None
        return None

    def authenticated(
        self,
        request: Request,
        # These two only document the two ways in, for the OpenAPI schema; identify() reads them.
        _token: Annotated[Any, Security(bearer_scheme)] = None,
        _session: Annotated[Any, Security(cookie_scheme)] = None,
    ) -> Principal:
        """A FastAPI dependency: the caller, or 401; 403 without the CSRF header a cookie needs."""
        p = self.identify(request)
        if p is None:
            raise HTTPException(
                401, "authentication required", headers={"WWW-Authenticate": "Bearer"}
            )
        if p.session is not None and request.method in UNSAFE_METHODS:
            sent = request.headers.get("x-csrf-token", "")
            if not same_secret(sent, self.csrf_token(p.session)):
                raise HTTPException(403, "missing or wrong X-CSRF-Token header")
        return p

    def set_cookie(self, response: Response, value: str) -> None:
        response.set_cookie(
            COOKIE, value, max_age=self.max_age_s, httponly=True, samesite="strict",
            secure=self.secure_cookies, path="/",
        )  # fmt: skip

    def delete_cookie(self, response: Response) -> None:
        response.delete_cookie(
            COOKIE, path="/", httponly=True, samesite="strict", secure=self.secure_cookies
        )
