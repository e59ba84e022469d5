"""How the annotation API answers bad requests and logs failures (issue #20, finding 4).

- Validation errors are 422 with ``{"detail": [{"type", "loc", "msg"}]}``: FastAPI's default also
  echoes each offending ``input``, which made ``{"token": NaN}`` (not JSON-serializable) and a
  token with a lone surrogate (not UTF-8-encodable) crash into a 500, and would put a submitted
  secret into the answer and, through the 500's traceback, into the log.
- A body FastAPI cannot parse at all (nested too deeply for the JSON parser, or not UTF-8) is the
  documented 422 too, not FastAPI's generic 400.
- An unhandled exception is logged with where it happened (method, path, exception type, stack
  frames) but never its message, which may quote what the client sent.
"""

from __future__ import annotations

import json
import logging
import traceback
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("rlhfkit.collect.annotate")


def json_response(
    content: Any, status_code: int, headers: dict[str, str] | None = None
) -> Response:
    """JSON with every non-ASCII character escaped: any Python string, even one holding a lone
    surrogate, encodes."""
    body = json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return Response(body, status_code, headers=headers, media_type="application/json")


async def validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    detail = [
        {"type": e.get("type"), "loc": [str(x) for x in e.get("loc", ())], "msg": e.get("msg")}
        for e in exc.errors()
    ]
    return json_response({"detail": detail}, 422)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and isinstance(exc.__cause__, RecursionError | ValueError):
        # FastAPI's "There was an error parsing the body": what json.loads raised, by kind
        cause = exc.__cause__
        msg = (
            "request body is JSON nested too deeply"
            if isinstance(cause, RecursionError)
            else "request body is not valid UTF-8 JSON"
        )
        return json_response(
            {"detail": [{"type": "json_invalid", "loc": ["body"], "msg": msg}]}, 422
        )
    if exc.status_code in (204, 304):
        return Response(status_code=exc.status_code, headers=exc.headers)
    return json_response({"detail": exc.detail}, exc.status_code, exc.headers)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)


def log_unhandled(scope: dict[str, Any], exc: BaseException) -> None:
    """Log an unhandled exception without its message or any request data but the route."""
    frames = "".join(traceback.format_tb(exc.__traceback__))
    path = ascii(scope.get("path", ""))[:200]  # ascii(): no control characters reach the log
    log.error(
        "%s %s failed with %s (its message is not logged: it may quote the request)\n%s",
        scope.get("method"),
        path,
        type(exc).__name__,
        frames,
    )
