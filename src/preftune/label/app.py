"""The FastAPI app of `label serve`: the JSON API, the rater page and the admin page.

    GET  /api/next      -> 200 {assignment_id, prompt, response_a, response_b, rubric} | 204 nothing left
    POST /api/labels    {assignment_id, choice, attributes, rationale} -> 201 {label_id}
    GET  /api/progress  -> {labelled, remaining} for the rater
    GET  /api/stats     -> the admin's numbers (admin token only)
    GET  /api/health    -> {ok: true} (no token; for scripts waiting for the server)
    GET  /  and /admin  -> the pages (HTML without any data; their scripts fetch the API with the token)

Every API call but health needs `Authorization: Bearer TOKEN`. A refused request gets a 4xx with
`{"detail": "..."}` and its transaction is rolled back, so it writes nothing. The pages put every text
from the database into the DOM with `textContent` (never as HTML) and are served with a
Content-Security-Policy that allows only the app's own scripts, so a `<script>` in a prompt stays text.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from preftune.label import pages
from preftune.label.assign import CHOICES, MAX_RATIONALE, ApiError, next_assignment, progress, submit_label
from preftune.label.select import Select
from preftune.label.stats import project_stats
from preftune.label.store import (
    ADMIN,
    Label,
    Pair,
    Principal,
    make_engine,
    principal_for,
    read_sessions,
    sessions,
    settings,
)

Choice = Literal[CHOICES]  # type: ignore[valid-type]
Side = Literal["a", "b", "tie"]
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                               "img-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}


class LabelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    assignment_id: str = Field(min_length=1, max_length=64)
    choice: Choice
    attributes: dict[str, Side] = Field(default_factory=dict, max_length=64)
    rationale: str = Field(default="", max_length=MAX_RATIONALE)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(x) for x in err.get("loc", ()) if x != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


def _who(request: Request, role: str) -> Principal:
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "missing token: send the header `Authorization: Bearer TOKEN`")
    with request.app.state.read_sessions() as s:
        p = principal_for(s, token.strip())
    if p is None:
        raise ApiError(401, "unknown token")
    if p.role != role:
        need = "an admin token" if role == ADMIN else "a rater token"
        raise ApiError(403, f"this endpoint needs {need}")
    return p


# Dependencies run before the body is read: a request without a valid token is refused as such (401/403)
# whatever its body holds.
def _rater(request: Request) -> Principal:
    return _who(request, "rater")


def _admin(request: Request) -> Principal:
    return _who(request, ADMIN)


Rater = Annotated[Principal, Depends(_rater)]
Admin = Annotated[Principal, Depends(_admin)]


def create_app(db: str, select_mode: str = "order") -> FastAPI:
    engine = make_engine(db)
    Sessions = sessions(engine)
    with Sessions() as s:
        conf = settings(s)
    if "labels_per_pair" not in conf:
        raise ValueError(f"--db {db} holds no labelling project; run `preftune label init` first")
    conf["select"] = Select.parse(select_mode)
    app = FastAPI(title="preftune label", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine = engine
    Reads = app.state.read_sessions = read_sessions(engine)
    # Writers queue on a mutex of this process before BEGIN IMMEDIATE: SQLite's own busy handler waits by
    # sleeping (up to 100 ms a try), which under many threads turns into seconds of latency. The database lock
    # still serialises writers of other processes.
    write_lock = threading.Lock()

    @contextmanager
    def writing():
        with write_lock, Sessions.begin() as s:
            yield s

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _validation_message(exc)}, status_code=422)

    @app.middleware("http")
    async def _headers(request: Request, call_next):
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    @app.get("/api/health")
    def health() -> dict:
        return {"ok": True}

    @app.get("/api/next")
    def api_next(p: Rater):
        with writing() as s:
            item = next_assignment(s, p, conf)
        return Response(status_code=204) if item is None else item

    @app.post("/api/labels", status_code=201)
    def api_label(body: LabelIn, p: Rater) -> dict:
        with writing() as s:
            label_id = submit_label(s, p, conf, body.model_dump())
        return {"label_id": label_id}

    @app.get("/api/progress")
    def api_progress(p: Rater) -> dict:
        with Reads() as s:
            return progress(s, p, conf)

    @app.get("/api/stats")
    def api_stats(_admin: Admin) -> dict:
        with Reads() as s:
            out = project_stats(s, conf)
            out["recent"] = _recent(s)
            return out

    @app.get("/favicon.ico")
    def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/", response_class=HTMLResponse)
    def rater_page() -> str:
        return pages.RATER_HTML

    @app.get("/admin", response_class=HTMLResponse)
    def admin_page() -> str:
        return pages.ADMIN_HTML

    for name, body, kind in (("rater.js", pages.RATER_JS, "text/javascript"),
                             ("admin.js", pages.ADMIN_JS, "text/javascript"), ("label.css", pages.CSS, "text/css")):
        app.add_api_route(f"/static/{name}", lambda body=body, kind=kind: Response(body, media_type=kind),
                          methods=["GET"])
    return app


def _recent(s, limit: int = 20) -> list[dict]:
    """The latest labels for the admin page (prompt cut to 200 characters)."""
    from preftune.data.records import render_text

    q = (select(Label, Pair, Principal.name).join(Pair, Pair.id == Label.pair_id)
         .join(Principal, Principal.id == Label.rater_id).order_by(Label.id.desc()).limit(limit))
    return [{"rater": name, "item": pair.item, "prompt": render_text(pair.prompt)[:200], "choice": label.choice,
             "honeypot": pair.gold is not None, "seconds": round(label.seconds, 1)}
            for label, pair, name in s.execute(q)]
