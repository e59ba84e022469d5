"""Every request passes here first (plain ASGI middleware: cheap, and it sees every request): a
cap on the body size (413), and the security headers on every answer, 413 and 500 included; an
unexpected error is logged without the values the client sent."""

from __future__ import annotations

from typing import Any

from rlhfkit.collect.annotate.http_errors import log_unhandled

UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


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
