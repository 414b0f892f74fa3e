"""The web app: :func:`create_app` wires the pages to a store, and :func:`serve` runs it with uvicorn.

Every page is rendered on the server from Jinja2 templates with autoescaping, and every value a template
writes goes through the PII redactor first (the environment's ``finalize``), so the rule that a page never
shows PII holds for text the store kept unredacted too. The report's sections come in as markup their
renderers already redacted and escaped.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from cl_plugin.errors import ConfigError
from cl_plugin.privacy import default_redactor
from cl_plugin.report import html as report_html
from cl_plugin.store import Store
from cl_plugin.web import annotate, pages
from cl_plugin.web.feedback import feedback_app
from cl_plugin.web.overview import OVERVIEW_SECTIONS, WINDOWS, Overview, View
from cl_plugin.web.security import TOKEN_ENV, SecurityMiddleware, check_bind

__all__ = ["Web", "create_app", "serve"]

_HERE = Path(__file__).resolve().parent
_READING = '<p class="empty" id="reading">Reading the figures of this view; they appear here when read.</p>'


class Web:
    """What the pages share: the store, the overview's kept sections, the templates, the registry, the
    maintenance configuration and the checkpoints a paused run resumes from."""

    def __init__(
        self,
        store: Store,
        *,
        registry: Any = None,
        config: Any = None,
        checkpoints: str | None = None,
        overview: Overview | None = None,
    ) -> None:
        from jinja2 import Environment, FileSystemLoader, select_autoescape
        from markupsafe import Markup

        self.store, self.registry, self.config, self.checkpoints = store, registry, config, checkpoints
        self.overview = overview or Overview(store)
        redactor = default_redactor()

        def finalize(value: Any) -> Any:
            if value is None:
                return ""
            if isinstance(value, Markup):
                return value
            return redactor.safe_redact(str(value))

        self.env = Environment(
            loader=FileSystemLoader(_HERE / "templates"),
            autoescape=select_autoescape(default=True),
            finalize=finalize,
        )
        self.env.globals.update(stamp=report_html.stamp, number=report_html.number, windows=WINDOWS)

    def page(self, request: Request, template: str, status_code: int = 200, **values: Any) -> HTMLResponse:
        """A template rendered with the request's CSRF token and the store's facts."""
        html = self.env.get_template(template).render(
            request=request,
            csrf=request.scope.get("state", {}).get("csrf", ""),
            store_url=self.store.safe_url,
            **values,
        )
        return HTMLResponse(html, status_code=status_code)

    def markup(self, html: str) -> Any:
        """Markup a renderer of this package or the report built (its values already escaped)."""
        from markupsafe import Markup

        return Markup(html)


def create_app(
    store: Store,
    *,
    registry: Any = None,
    token: str | None = None,
    config: Any = None,
    checkpoints: str | None = None,
    first_read: float | None = None,
    feedback: bool = True,
) -> Starlette:
    """The dashboard over ``store`` as an ASGI app.

    Args:
        store: a set-up store.
        registry: the model registry a resumed maintenance run uses (None: the configuration's).
        token: the access token every request must carry (None: no token; only for a loopback bind).
        config: the maintenance configuration a resumed run uses (a ``ContinualLearningConfig``, a mapping
            or a YAML path; None for the defaults).
        checkpoints: the SQLite file of the maintenance runs' checkpoints, to show which runs are paused
            for labels and resume them (None: paused runs are shown as running and cannot be resumed here).
        first_read: the most seconds a view's first request waits for its figures (None: until they are
            read); past it the page shows they are being read and swaps them in when they are.
        feedback: also serve ``POST /api/feedback`` (:func:`~cl_plugin.web.feedback.feedback_app`). It
            sits outside the dashboard's token, CSRF and body checks, with its own: signed feedback tokens
            (required when the dashboard has an access token), idempotency keys and attachment limits, so
            a front end posts its users' feedback without the dashboard's credentials.

    Returns:
        The Starlette app.
    """
    web = Web(store, registry=registry, config=config, checkpoints=checkpoints)

    async def overview_page(request: Request) -> Response:
        view = _view(request)
        if isinstance(view, Response):
            return view
        rendered = await run_in_threadpool(partial(web.overview.sections, view, first=first_read))
        count = await run_in_threadpool(web.overview.count, view)
        return web.page(
            request,
            "overview.html",
            title="Live overview",
            view=view,
            count=count,
            graphs=await run_in_threadpool(_graphs, store),
            points=await run_in_threadpool(_points, store),
            live=_query(view.query()),
            version=rendered.version if rendered else "",  # none yet: the page's script fetches them
            sections=web.markup(_sections(web, rendered.sections) if rendered else _READING),
            built_at=rendered.built_at if rendered else None,
        )

    async def overview_api(request: Request) -> Response:
        view = _view(request)
        if isinstance(view, Response):
            return view
        count = await run_in_threadpool(web.overview.count, view)
        rendered = await run_in_threadpool(partial(web.overview.sections, view, first=0.0))
        if rendered is None:  # the first read is still going on
            return JSONResponse({"count": count, "version": "", "built_at": None})
        body: dict[str, Any] = {"count": count, "version": rendered.version, "built_at": rendered.built_at}
        if request.query_params.get("have") != rendered.version:
            body["html"] = _sections(web, rendered.sections)
        return JSONResponse(body)

    def _view(request: Request) -> View | Response:
        try:
            return View.from_query(request.query_params)
        except ConfigError as exc:
            return web.page(request, "error.html", 400, title="Bad request", message=str(exc))

    async def style(request: Request) -> Response:
        css = report_html.CSS + (_HERE / "static" / "web.css").read_text(encoding="utf-8")
        return Response(css, media_type="text/css")

    routes = [
        Route("/", overview_page),
        Route("/api/overview", overview_api),
        Route("/style.css", style),
        *pages.routes(web),
        *annotate.routes(web),
        Mount("/static", StaticFiles(directory=_HERE / "static"), name="static"),
    ]
    dashboard = Starlette(routes=routes, middleware=[Middleware(SecurityMiddleware, token=token)])
    if not feedback:
        return dashboard
    endpoint = feedback_app(store, require_token=token is not None)
    return Starlette(routes=[Route("/api/feedback", endpoint, methods=["POST"]), Mount("/", dashboard)])


def _sections(web: Web, sections: Mapping[str, str]) -> str:
    """The overview's sections, each under its heading."""
    text = web.env.from_string(
        '{% for key, name, body in sections %}<section id="{{ key }}"><h2>{{ name }}</h2>{{ body }}</section>'
        "{% endfor %}"
    )
    items = [(k, report_html.SECTIONS[k], web.markup(sections[k])) for k in OVERVIEW_SECTIONS]
    return text.render(sections=items)


def _graphs(store: Store) -> list[str]:
    return sorted({str(p.key[0]) for p in store.decision_points() if p.key[0] is not None})


def _points(store: Store) -> list[str]:
    return sorted("/".join("-" if x is None else str(x) for x in p.key) for p in store.decision_points())


def _query(values: Mapping[str, str]) -> str:
    from urllib.parse import urlencode

    return urlencode(values)


def serve(
    store_url: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    token: str | None = None,
    config: Any = None,
    checkpoints: str | None = None,
) -> None:
    """Serve the dashboard of the store at ``store_url`` until interrupted.

    Args:
        store_url: the store's URL.
        host, port: where to listen; a host other than a loopback address needs a token.
        token: the access token (default: the ``CL_PLUGIN_SERVE_TOKEN`` environment variable).
        config, checkpoints: as for :func:`create_app`.

    Raises:
        ConfigError: a non-loopback host without a token.
    """
    import uvicorn

    token = token or os.environ.get(TOKEN_ENV) or None
    check_bind(host, token)
    store = Store.from_url(store_url)
    store.ensure_schema(write=False)
    # a large store's first read takes seconds: the page comes at once and the figures follow
    app = create_app(store, token=token, config=config, checkpoints=checkpoints, first_read=0.5)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", server_header=False)
    finally:
        store.close()
