"""The web app: pages, live updates and actions, over one run source.

Pages are rendered on the server (Jinja2 templates, SVG graphs); the little script in
``static/ui.js`` adds live updates (server-sent events on a run page, a periodic refresh
of the runs table) and confirmations. Page handlers are plain functions: Starlette runs
them in its thread pool, where the blocking Firestore and Cloud Storage clients belong.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from resumable import errors
from resumable.ui import _data
from resumable.ui import _formatting as formatting
from resumable.ui import _graph as graph
from resumable.ui import _logs as logs
from resumable.ui import _timeline as timeline
from resumable.ui._models import RUN_STATUSES, RunFilter, RunKey, RunSource, RunView
from resumable.ui._security import CSRF_COOKIE, CSRF_FIELD, Guard, RequestRefused
from resumable.ui._values import thumbnail_png

HERE = Path(__file__).parent
PAGE_SIZE = 50
LIVE_POLL_SECONDS = 0.5
LIVE_REFRESH_SECONDS = 2.0  # re-render a running run this often even if unchanged (durations)
WAIT_FOR_RUN_SECONDS = 120.0  # a run page opened right after a start waits this long for it
DONE = {  # notes shown after an action's redirect
    "cancel": "cancel requested",
    "resume": "resumed",
    "start": "start message published: the run appears once the start function creates it",
}


def _templates() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        clock=formatting.clock,
        size=formatting.size,
        seconds=formatting.seconds,
        iso=formatting.iso,
    )
    env.globals["log_filter"] = logs.cloud_logging_filter
    return env


class _HostCheck:
    """Refuse requests for an unexpected Host before anything else runs."""

    def __init__(self, app: ASGIApp, guard: Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            host = headers.get(b"host", b"").decode("latin-1") or None
            try:
                self.guard.check_host(host)
            except RequestRefused as exc:
                await PlainTextResponse(str(exc), status_code=421)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _key(request: Request) -> RunKey:
    params = request.path_params
    for name, what in (("tenant", "tenant id"), ("pipeline", "pipeline"), ("run_id", "run id")):
        _data.validate_id(params[name], what)
    return RunKey(params["tenant"], params["pipeline"], params["run_id"])


def create_app(source: RunSource, *, guard: Guard | None = None) -> Starlette:
    """The ASGI app serving ``source``'s runs."""
    guard = guard or Guard(allowed_hosts=None)
    env = _templates()

    def page(request: Request, template: str, status_code: int = 200, **values: Any) -> Response:
        token = guard.token_for(request.cookies.get(CSRF_COOKIE))
        html = env.get_template(template).render(
            source=source, csrf=token, csrf_field=CSRF_FIELD, now=time.time(), **values
        )
        response = HTMLResponse(html, status_code=status_code)
        if request.cookies.get(CSRF_COOKIE) != token:
            response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="strict", path="/")
        response.headers["Cache-Control"] = "no-store"
        return response

    def problem(request: Request, message: str, status_code: int) -> Response:
        return page(request, "problem.html", status_code=status_code, message=message)

    def guarded(
        handler: Callable[[Request], Response],
    ) -> Callable[[Request], Response]:
        """Turn the library's errors into a page saying what is wrong."""

        def wrapped(request: Request) -> Response:
            try:
                return handler(request)
            except errors.InvalidIdError as exc:
                return problem(request, str(exc), 400)
            except (errors.RunControlError, errors.BadMessageError) as exc:
                return problem(request, str(exc), 409)
            except errors.ObjectNotFoundError as exc:
                return problem(request, f"a checkpoint of the run is gone: {exc}", 410)
            except errors.CheckpointError as exc:
                return problem(request, f"the checkpoint cannot be read: {exc}", 500)
            except errors.ResumableError as exc:
                return problem(request, str(exc), 500)
            except _data.GoogleAPIError as exc:
                return problem(
                    request, f"the cloud service failed: {type(exc).__name__}: {exc}", 502
                )

        return wrapped

    # -- the runs page -----------------------------------------------------------------------

    def runs_page(request: Request) -> Response:
        query = request.query_params
        status = query.get("status") or None
        if status is not None and status not in RUN_STATUSES:
            return problem(request, f"unknown status {status!r}", 400)
        pipeline = query.get("pipeline") or None
        if pipeline is not None:
            _data.validate_id(pipeline, "pipeline")
        wanted = RunFilter(
            pipeline=pipeline, status=status, search=(query.get("q") or "").strip() or None
        )
        cursor = query.get("cursor") or None
        runs = source.list_runs(wanted, cursor=cursor, limit=PAGE_SIZE)
        base = {k: v for k, v in (("pipeline", pipeline), ("q", wanted.search)) if v}
        filters = {**base, **({"status": status} if status else {})}

        def status_link(word: str | None) -> str:
            query = urlencode({**base, **({"status": word} if word else {})})
            return f"/?{query}" if query else "/"

        next_link = None
        if runs.next_cursor:
            next_link = "/?" + urlencode({**filters, "cursor": runs.next_cursor})
        template = "runs_table.html" if query.get("partial") else "runs.html"
        return page(
            request,
            template,
            runs=runs,
            wanted=wanted,
            status_link=status_link,
            next_link=next_link,
            # Only the first page refreshes itself: later pages would shift under the reader.
            first_link="/?" + urlencode(filters) if cursor else None,
            refresh_link=None if cursor else "/?" + urlencode({**filters, "partial": "1"}),
            done=DONE.get(query.get("done") or ""),
        )

    # -- the run page ---------------------------------------------------------------------------

    def live_values(view: RunView | None, key: RunKey) -> dict[str, Any]:
        now = time.time()
        if view is None:
            return {"view": None, "key": key}
        return {
            "view": view,
            "key": key,
            "graph_svg": Markup(graph.render_svg(view.steps, edges=view.graph_known)),
            "timeline_svg": Markup(timeline.render_svg(view.steps, start=view.created_at, now=now)),
            "steps": view.steps,
        }

    def run_page(request: Request) -> Response:
        key = _key(request)
        view = source.run(key)
        if view is None and not request.query_params.get("started"):
            return problem(request, f"no run {key.run_id!r} of pipeline {key.pipeline!r}", 404)
        return page(
            request,
            "run.html",
            done=DONE.get(request.query_params.get("done") or ""),
            events=f"{key.path}/events?since={quote(view.revision if view else '')}",
            **live_values(view, key),
        )

    async def run_events(request: Request) -> Response:
        key = _key(request)
        since = request.query_params.get("since", "")
        token = guard.token_for(request.cookies.get(CSRF_COOKIE))
        live = env.get_template("run_live.html")

        async def stream() -> AsyncIterator[str]:
            last_revision, last_sent = since, time.monotonic()
            waited = time.monotonic()
            yield "retry: 2000\n\n"
            while not await request.is_disconnected():
                try:
                    view = await run_in_threadpool(source.run, key)
                except Exception as exc:  # a blip of the services: the next poll may do
                    yield f": {type(exc).__name__}\n\n"
                    await asyncio.sleep(LIVE_REFRESH_SECONDS)
                    continue
                if view is None and time.monotonic() - waited > WAIT_FOR_RUN_SECONDS:
                    yield "event: end\ndata: gone\n\n"
                    return
                stale = time.monotonic() - last_sent >= LIVE_REFRESH_SECONDS
                if view is not None and (
                    view.revision != last_revision or (stale and not view.finished)
                ):
                    html = live.render(
                        source=source,
                        csrf=token,
                        csrf_field=CSRF_FIELD,
                        now=time.time(),
                        **live_values(view, key),
                    )
                    data = "".join(f"data: {line}\n" for line in html.splitlines() or [""])
                    yield f"event: run\n{data}\n"
                    last_revision, last_sent = view.revision, time.monotonic()
                if view is not None and view.finished:
                    yield "event: end\ndata: finished\n\n"
                    return
                if stale:
                    yield ": still here\n\n"  # keeps proxies from closing an idle stream
                await asyncio.sleep(LIVE_POLL_SECONDS)

        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    def traceback_text(request: Request) -> Response:
        key = _key(request)
        step = _data.validate_id(request.path_params["step"], "step")
        text = source.traceback(key, step)
        return PlainTextResponse(text or "", status_code=200 if text else 404)

    # -- the checkpoint browser -----------------------------------------------------------------

    def _side(request: Request) -> Any:
        side = request.path_params["side"]
        if side not in ("input", "output"):
            raise errors.InvalidIdError(f"a checkpoint side is input or output, not {side!r}")
        return side

    def checkpoint_page(request: Request) -> Response:
        key = _key(request)
        step = _data.validate_id(request.path_params["step"], "step")
        view = source.checkpoint(key, step, _side(request))
        image_base = f"{key.path}/steps/{step}/{view.side}/image?"
        return page(request, "checkpoint.html", cp=view, key=key, image_base=image_base)

    def image(request: Request) -> Response:
        key = _key(request)
        step = _data.validate_id(request.path_params["step"], "step")
        name = request.query_params.get("key", "")
        try:
            value = source.value(key, step, _side(request), name)
            png = thumbnail_png(value)
        except (KeyError, ValueError):
            return PlainTextResponse(f"no image {name!r} in this checkpoint", status_code=404)
        return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=300"})

    # -- actions --------------------------------------------------------------------------------

    async def form_of(request: Request) -> dict[str, str]:
        body = (await request.body()).decode("utf-8", "replace")
        return {k: v[-1] for k, v in parse_qs(body, keep_blank_values=True).items()}

    def refused(request: Request, form: dict[str, str]) -> Response | None:
        try:
            guard.check_post(
                host=request.headers.get("host"),
                origin=request.headers.get("origin"),
                referer=request.headers.get("referer"),
                fetch_site=request.headers.get("sec-fetch-site"),
                cookie=request.cookies.get(CSRF_COOKIE),
                token=form.get(CSRF_FIELD),
            )
        except RequestRefused as exc:
            return problem(request, str(exc), 403)
        return None

    def action(do: Callable[[Request, dict[str, str]], str]) -> Callable[..., Any]:
        async def endpoint(request: Request) -> Response:
            form = await form_of(request)
            refusal = refused(request, form)
            if refusal is not None:
                return refusal

            def run() -> Response:
                target = do(request, form)
                return RedirectResponse(target, status_code=303)

            return await run_in_threadpool(guarded(lambda _request: run()), request)

        return endpoint

    def cancel(request: Request, form: dict[str, str]) -> str:
        key = _key(request)
        source.cancel(key)
        return f"{key.path}?done=cancel"

    def resume(request: Request, form: dict[str, str]) -> str:
        key = _key(request)
        from_step = form.get("from_step") or None
        if from_step is not None:
            _data.validate_id(from_step, "step")
        source.resume(key, from_step)
        return f"{key.path}?done=resume"

    def start(request: Request, form: dict[str, str]) -> str:
        pipeline = _data.validate_id(form.get("pipeline", ""), "pipeline")
        text = form.get("params", "").strip() or "{}"
        try:
            params = json.loads(text)
        except ValueError as exc:
            raise errors.RunControlError(f"params are not JSON: {exc}") from None
        if not isinstance(params, dict):
            raise errors.RunControlError("params must be a JSON object")
        key = source.start(pipeline, params, form.get("run_id", "").strip() or None)
        return f"{key.path}?started=1&done=start"

    async def not_found(request: Request, exc: Exception) -> Response:
        return await run_in_threadpool(problem, request, "no such page", 404)

    run_path = "/runs/{tenant}/{pipeline}/{run_id}"
    routes = [
        Route("/", guarded(runs_page)),
        Route(run_path, guarded(run_page)),
        Route(run_path + "/events", run_events),
        Route(run_path + "/steps/{step}/traceback", guarded(traceback_text)),
        Route(run_path + "/steps/{step}/{side}", guarded(checkpoint_page)),
        Route(run_path + "/steps/{step}/{side}/image", guarded(image)),
        Route(run_path + "/cancel", action(cancel), methods=["POST"]),
        Route(run_path + "/resume", action(resume), methods=["POST"]),
        Route("/start", action(start), methods=["POST"]),
        Route("/healthz", lambda request: PlainTextResponse("ok")),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={404: not_found})
    app.add_middleware(_SecurityHeaders)
    app.add_middleware(_HostCheck, guard=guard)
    return app


class _SecurityHeaders:
    """No framing by other sites, no sniffing, no scripts from anywhere else; the
    packaged assets cached for an hour (they change only with the installed package)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        static = scope.get("path", "").startswith("/static/")

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if static:
                    headers.append((b"cache-control", b"public, max-age=3600"))
                headers += [
                    (b"x-frame-options", b"DENY"),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"same-origin"),
                    (
                        b"content-security-policy",
                        b"default-src 'self'; img-src 'self' data:; style-src 'self'; "
                        b"script-src 'self'; frame-ancestors 'none'; form-action 'self'",
                    ),
                ]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)
