"""The console's Starlette application: ``create_app(config)``.

Pages (server-rendered, ``bureaucrat/web/templates``), their static files, and the JSON API
(``bureaucrat.web.api``) share one store and one ``Guard``. Reading handlers are plain functions
(Starlette runs them in its thread pool, as the store is synchronous); operations publish through
a ``Launcher`` made for each one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from bureaucrat import __version__
from bureaucrat.config import Config
from bureaucrat.errors import BrokerError, BureaucratError, StoreError
from bureaucrat.launcher import Launcher
from bureaucrat.messages import MessageError
from bureaucrat.store import Store
from bureaucrat.web import api, data, operations
from bureaucrat.web.security import COOKIE, CSRF_FIELD, SESSION_SECONDS, Guard, same_origin

LOG = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
}


class Console:
    """What every handler shares: the config, the store, the guard and the templates."""

    def __init__(
        self,
        config: Config,
        store: Store | None = None,
        launcher: Callable[[], Launcher] | None = None,
    ) -> None:
        self.config = config
        self.store = store or Store(
            config.database_url,
            definition_cache_size=config.definition_cache_size,
            sqlite_synchronous=config.sqlite_synchronous,
        )
        self.guard = Guard(config.web_token)
        self.launcher = launcher or (lambda: Launcher(config=config))
        self.templates = Environment(
            loader=PackageLoader("bureaucrat.web", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters["u"] = data.url_part
        self.templates.filters["when"] = data.when
        self.templates.filters["pretty"] = data.pretty
        self.templates.globals["version"] = __version__
        self.templates.globals["STATUSES"] = data.STATUSES

    def page(self, request: Request, template: str, status: int = 200, **values: Any) -> Response:
        session = self.guard.session(request)
        html = self.templates.get_template(template).render(
            request=request,
            read_only=self.guard.read_only,
            signed_in=session is not None,
            csrf=self.guard.csrf_token(session) if session is not None else "",
            csrf_field=CSRF_FIELD,
            path=request.url.path,
            **values,
        )
        return HTMLResponse(html, status_code=status)

    def send(self, operation: Callable[[Launcher], None]) -> None:
        """Run ``operation`` with a client connected for it (in the caller's thread)."""
        with self.launcher() as client:
            operation(client)


# pages ------------------------------------------------------------------------------------------


def _console(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def home(request: Request) -> Response:
    return RedirectResponse("/instances", status_code=303)


def instances_page(request: Request) -> Response:
    console = _console(request)
    try:
        filters = data.Filters.parse(request.query_params)
        page = data.listing(console.store, filters)
    except data.BadFilterError as error:
        return console.page(
            request, "instances.html", 400, problem=str(error), page=None, filters=None
        )
    counts = console.store.counts_by_status()
    return console.page(request, "instances.html", page=page, filters=filters, counts=counts)


def instance_page(request: Request) -> Response:
    console = _console(request)
    details = data.instance_details(console.store, request.path_params["pid"])
    if details is None:
        raise HTTPException(404, f"no process {request.path_params['pid']}")
    return console.page(
        request,
        "instance.html",
        d=details,
        record=details.record,
        operations=operations.INSTANCE_OPERATIONS,
        sent=request.query_params.get("sent"),
    )


def instance_fragments(request: Request) -> Response:
    """The parts of the instance page that change, for the page's live updates."""
    console = _console(request)
    details = data.instance_details(console.store, request.path_params["pid"])
    if details is None:
        raise HTTPException(404, f"no process {request.path_params['pid']}")
    return console.page(
        request, "instance_live.html", d=details, record=details.record, fragment=True
    )


def definitions_page(request: Request) -> Response:
    console = _console(request)
    return console.page(request, "definitions.html", rows=console.store.list_definitions())


def definition_page(request: Request) -> Response:
    console = _console(request)
    try:
        filters = data.Filters.parse(request.query_params)
        details = data.definition_details(console.store, request.path_params["digest"], filters)
    except data.BadFilterError as error:
        raise HTTPException(400, str(error)) from None
    if details is None:
        raise HTTPException(404, f"no definition {request.path_params['digest']}")
    return console.page(request, "definition.html", d=details, page=details.instances)


def schedules_page(request: Request) -> Response:
    console = _console(request)
    return console.page(request, "schedules.html", rows=data.schedules(console.store), sent=None)


# operations from the pages ----------------------------------------------------------------------


async def operate(request: Request) -> Response:
    """A form on the instance page: the operation, checked, sent, and back to the page."""
    console = _console(request)
    process_id, name = request.path_params["pid"], request.path_params["op"]
    if name not in operations.INSTANCE_OPERATIONS:
        raise HTTPException(404, f"no operation {name!r}")
    form = {key: str(value) for key, value in (await request.form()).items()}
    refused = console.guard.form_ok(request, form.get(CSRF_FIELD))
    if refused is not None:
        return console.page(request, "error.html", 403, title="Refused", message=refused)
    if await run_in_threadpool(console.store.instance, process_id) is None:
        raise HTTPException(404, f"no process {process_id}")
    try:
        arguments = operations.from_form(name, form)
        await run_in_threadpool(
            console.send, lambda client: operations.run(client, name, process_id, arguments)
        )
    except (operations.OperationError, MessageError) as error:
        return console.page(request, "error.html", 400, title="Not sent", message=str(error))
    LOG.info("web console: %s sent to %s", name, process_id)
    return RedirectResponse(f"/instances/{data.url_part(process_id)}?sent={name}", status_code=303)


async def operate_schedule(request: Request) -> Response:
    console = _console(request)
    schedule, name = request.path_params["name"], request.path_params["op"]
    form = {key: str(value) for key, value in (await request.form()).items()}
    refused = console.guard.form_ok(request, form.get(CSRF_FIELD))
    if refused is not None:
        return console.page(request, "error.html", 403, title="Refused", message=refused)
    try:
        await run_in_threadpool(
            console.send, lambda client: operations.run_on_schedule(client, name, schedule)
        )
    except (operations.OperationError, MessageError) as error:
        return console.page(request, "error.html", 400, title="Not sent", message=str(error))
    return RedirectResponse("/schedules", status_code=303)


# signing in -------------------------------------------------------------------------------------


def login_page(request: Request) -> Response:
    return _console(request).page(request, "login.html", problem=None, next=_next(request))


async def login(request: Request) -> Response:
    console = _console(request)
    form = await request.form()
    target = _next(request, str(form.get("next", "")))
    if console.guard.read_only:
        return console.page(
            request,
            "login.html",
            403,
            problem="This console is read-only: no [web] token is configured.",
            next=target,
        )
    if not same_origin(request):
        return console.page(
            request, "login.html", 403, problem="Sign in from this console's page.", next=target
        )
    if not console.guard.token_matches(str(form.get("token", ""))):
        LOG.warning("web console: a sign-in with a wrong token from %s", _client(request))
        return console.page(request, "login.html", 403, problem="Wrong token.", next=target)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE,
        console.guard.new_session(),
        max_age=SESSION_SECONDS,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


async def logout(request: Request) -> Response:
    console = _console(request)
    form = await request.form()
    refused = console.guard.form_ok(request, str(form.get(CSRF_FIELD, "")))
    if refused is not None:
        return console.page(request, "error.html", 403, title="Refused", message=refused)
    response = RedirectResponse("/instances", status_code=303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response


def _next(request: Request, given: str | None = None) -> str:
    """Where to go after signing in: a path of this console only (never another site)."""
    target = given if given is not None else request.query_params.get("next", "")
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/instances"
    return target


def _client(request: Request) -> str:
    return request.client.host if request.client is not None else "?"


# errors and headers -----------------------------------------------------------------------------


def _error_page(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    if isinstance(exc, StoreError | BrokerError):
        status = 503
        LOG.error("web console: %s", exc)
    message = exc.detail if isinstance(exc, HTTPException) else str(exc)
    if request.url.path.startswith("/api/"):
        return api.problem(status, message)
    title = {404: "Not found", 503: "Unavailable"}.get(status, "Error")
    return _console(request).page(request, "error.html", status, title=title, message=message)


class SecurityHeaders:
    """Adds ``SECURITY_HEADERS`` to every response (no framing, no inline script)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                for name, value in SECURITY_HEADERS.items():
                    if name.encode() not in present:
                        headers.append((name.encode(), value.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


def create_app(
    config: Config, store: Store | None = None, launcher: Callable[[], Launcher] | None = None
) -> Starlette:
    """The console for ``config``'s database and broker; ``store`` and ``launcher`` (a factory
    of clients) replace the ones it would make."""
    console = Console(config, store, launcher)
    routes = [
        Route("/", home),
        Route("/instances", instances_page),
        Route("/instances/{pid:path}/fragments", instance_fragments),
        Route("/instances/{pid:path}/{op}", operate, methods=["POST"]),
        Route("/instances/{pid:path}", instance_page),
        Route("/definitions", definitions_page),
        Route("/definitions/{digest}", definition_page),
        Route("/schedules", schedules_page),
        Route("/schedules/{name:path}/{op}", operate_schedule, methods=["POST"]),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        *api.routes(),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    handlers: dict[Any, Callable[..., Any]] = {
        HTTPException: _error_page,
        BureaucratError: _error_page,
    }
    app = Starlette(routes=routes, exception_handlers=handlers)
    app.state.console = console
    app.add_middleware(SecurityHeaders)
    return app
