"""The routes of the annotation app, in three groups: the pages (login, ranking, admin), the
annotators' API (login, next item, rankings, skips, flags) and the admins' API (stats, export, gold
items). Each group is an ``APIRouter`` built around one app's store and :class:`Auth`."""

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi import Path as FastAPIPath
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from rlhfkit.collect.annotate.agreement import agreement_report
from rlhfkit.collect.annotate.api_schema import (
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
    errors,
)
from rlhfkit.collect.annotate.auth import Auth, Principal
from rlhfkit.collect.annotate.bodies import FlagBody, GoldBody, LoginBody, RankingBody, SkipBody
from rlhfkit.collect.annotate.export import export_lines, export_records, export_reliable
from rlhfkit.collect.annotate.markdown import render_markdown
from rlhfkit.collect.annotate.quality import store_quality
from rlhfkit.collect.annotate.store import Conflict, InvalidRanking, NotFound, Store
from rlhfkit.errors import ConfigError


@contextmanager
def store_refusals() -> Iterator[None]:
    """The store's refusals as the API's answers: an unknown item 404, a conflict 409, and a ranking
    that is not one 422, in the same shape as every other 422 (a list of ``{type, loc, msg}``)."""
    try:
        yield
    except NotFound as e:
        raise HTTPException(404, str(e)) from None
    except Conflict as e:
        raise HTTPException(409, str(e)) from None
    except InvalidRanking as e:
        error = {"type": "invalid_ranking", "loc": ("body", "ranking"), "msg": str(e)}
        raise RequestValidationError([error]) from None


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


def page_routes(templates: Jinja2Templates, auth: Auth, guide: Guidelines | None) -> APIRouter:
    """``/login``, ``/`` (ranking) and ``/admin``: HTML pages, or a redirect to the login."""
    router = APIRouter(include_in_schema=False)

    def page(request: Request, name: str, p: Principal) -> HTMLResponse:
        context = {
            "name": p.annotator.name,
            "is_admin": p.annotator.is_admin,
            "csrf": auth.csrf_token(p.session) if p.session else "",
            "guidelines": guide.html() if guide is not None else "",
        }
        return templates.TemplateResponse(request, name, context)

    @router.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_page(request: Request) -> HTMLResponse:
        return templates.TemplateResponse(request, "login.html", {})

    @router.get("/", include_in_schema=False)
    def annotate_page(request: Request) -> Response:
        p = auth.identify(request)
        if p is None:
            return RedirectResponse("/login", status_code=303)
        return page(request, "annotate.html", p)

    @router.get("/admin", include_in_schema=False)
    def admin_page(request: Request) -> Response:
        p = auth.identify(request)
        if p is None:
            return RedirectResponse("/login", status_code=303)
        if not p.annotator.is_admin:
            return HTMLResponse("<!doctype html><title>Forbidden</title><p>Admins only.</p>", 403)
        return page(request, "admin.html", p)

    return router


def annotator_routes(
    store: Store, auth: Auth, overlap: int, assignment_timeout_s: float | None
) -> APIRouter:
    """The annotators' API: login and logout, who am I, the next item, rankings, skips, flags."""
    router = APIRouter()
    router.include_router(_session_routes(store, auth, overlap))
    router.include_router(_work_routes(store, auth, overlap, assignment_timeout_s))
    return router


def _session_routes(store: Store, auth: Auth, overlap: int) -> APIRouter:
    """Login and logout (the session cookie and its CSRF token), and who am I."""
    router = APIRouter()
    User = Annotated[Principal, Depends(auth.authenticated)]

    @router.post("/api/login", response_model=LoginOut, responses=errors(401, 413, 422))
    def login(body: LoginBody) -> JSONResponse:
        a = store.annotator_by_token(body.token.strip())
        if a is None:
            raise HTTPException(401, "unknown token")
        session = auth.make_session(a)
        response = JSONResponse(
            {"name": a.name, "is_admin": a.is_admin, "csrf_token": auth.csrf_token(session)}
        )
        auth.set_cookie(response, session)
        return response

    @router.post("/api/logout", status_code=204, responses=errors(401, 403, 413))
    def logout(p: User) -> Response:
        if p.session is not None:
            store.end_session(auth.session_key(p.session))
        response = Response(status_code=204)
        auth.delete_cookie(response)
        return response

    @router.get("/api/me", response_model=MeOut, responses=errors(401))
    def me(p: User) -> dict[str, Any]:
        return {
            "name": p.annotator.name,
            "is_admin": p.annotator.is_admin,
            "progress": store.progress(p.annotator.id, overlap),
        }

    return router


def _work_routes(
    store: Store, auth: Auth, overlap: int, assignment_timeout_s: float | None
) -> APIRouter:
    """An annotator's work: the next item, and a ranking, a skip or a flag of it."""
    router = APIRouter()
    User = Annotated[Principal, Depends(auth.authenticated)]

    @router.get(
        "/api/next",
        response_model=ItemOut,
        responses={204: {"description": "nothing left for this annotator"}, **errors(401)},
    )
    def next_item(p: User) -> Any:
        item = store.next_item(p.annotator.id, overlap, assignment_timeout_s)
        if item is None:
            return Response(status_code=204)
        return with_markdown(item)

    @router.post(
        "/api/rankings",
        status_code=201,
        response_model=RankingOut,
        responses=errors(401, 403, 404, 409, 413, 422),
    )
    def submit(body: RankingBody, p: User) -> dict[str, Any]:
        with store_refusals():
            ranking_id = store.submit_ranking(
                p.annotator.id, body.item_id, body.ranking, request_id=body.request_id
            )
        return {"id": ranking_id, "item_id": body.item_id}

    @router.post(
        "/api/skips",
        status_code=201,
        response_model=SkipOut,
        responses=errors(401, 403, 404, 409, 413, 422),
    )
    def skip(body: SkipBody, p: User) -> dict[str, Any]:
        with store_refusals():
            store.skip(p.annotator.id, body.item_id, body.reason.strip() or "no reason")
        return {"item_id": body.item_id, "skipped": True}

    @router.post(
        "/api/flags",
        status_code=201,
        response_model=FlagOut,
        responses={
            200: {"model": FlagOut, "description": "already flagged so: nothing new"},
            **errors(401, 403, 404, 413, 422),
        },
    )
    def flag(body: FlagBody, p: User, response: Response) -> dict[str, Any]:
        with store_refusals():
            created = store.flag(p.annotator.id, body.item_id, body.reason, body.note)
        if not created:
            response.status_code = 200  # same flag again: nothing new
        return {"item_id": body.item_id, "reason": body.reason}

    return router


def admin_routes(store: Store, auth: Auth, overlap: int) -> APIRouter:
    """The admins' API (403 for others): stats with agreement and quality, the export, gold items."""
    router = APIRouter()

    def admin(p: Annotated[Principal, Depends(auth.authenticated)]) -> Principal:
        if not p.annotator.is_admin:
            raise HTTPException(403, "admins only")
        return p

    Admin = Annotated[Principal, Depends(admin)]
    router.include_router(_report_routes(store, Admin, overlap))
    router.include_router(_gold_routes(store, Admin))
    return router


def _report_routes(store: Store, Admin: Any, overlap: int) -> APIRouter:
    """What the collection holds: stats with agreement and quality, and the export."""
    router = APIRouter()

    @router.get("/api/stats", responses=errors(401, 403))
    def stats(p: Admin) -> dict[str, Any]:
        return {
            **store.overview(overlap),
            "agreement": agreement_report(store.rankings_by_item(min_annotators=2)),
            "quality": store_quality(store),
        }

    @router.get(
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

    return router


def _gold_routes(store: Store, Admin: Any) -> APIRouter:
    """Quality control: an item as admins see it, and the gold items (set, list, remove)."""
    router = APIRouter()
    PathItemId = Annotated[int, FastAPIPath(ge=1, le=2**63 - 1)]

    @router.get(
        "/api/items/{item_id}", response_model=AdminItemOut, responses=errors(401, 403, 404, 422)
    )
    def get_item(item_id: PathItemId, p: Admin) -> dict[str, Any]:
        item = store.get_item(item_id)
        if item is None:
            raise HTTPException(404, f"no item {item_id}")
        return {**item, "gold": store.gold().get(item_id)}

    @router.get("/api/gold", response_model=list[GoldItemOut], responses=errors(401, 403))
    def list_gold(p: Admin) -> list[dict[str, Any]]:
        return store.gold_items()

    @router.put(
        "/api/gold/{item_id}", response_model=GoldOut, responses=errors(401, 403, 404, 413, 422)
    )
    def set_gold(item_id: PathItemId, body: GoldBody, p: Admin) -> dict[str, Any]:
        with store_refusals():
            ranking = store.set_gold(item_id, body.ranking, body.note)
        return {"item_id": item_id, "ranking": ranking}

    @router.delete(
        "/api/gold/{item_id}",
        status_code=204,
        response_class=Response,
        responses={204: {"description": "no longer gold"}, **errors(401, 403, 404, 413, 422)},
    )
    def remove_gold(item_id: PathItemId, p: Admin) -> Response:
        if not store.remove_gold(item_id):
            raise HTTPException(404, f"item {item_id} is not a gold item")
        return Response(status_code=204)

    return router
