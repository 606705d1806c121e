"""The console's JSON API, under ``/api/``: the pages' data, and the operations.

Reading is open (as the pages are); operations need ``Authorization: Bearer <[web] token>``
(403 without it, or when no token is configured) and answer 202: the control message was
published, and the engine applies it in order with everything else (its journal says so).
Errors are ``{"error": "..."}`` with the HTTP status.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bureaucrat.messages import MessageError
from bureaucrat.web import data, operations

LOG = logging.getLogger(__name__)


def problem(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _console(request: Request) -> Any:
    return request.app.state.console


def instances(request: Request) -> Response:
    """``GET /api/instances?status=&name=&id=&since=&until=&limit=&after=&definition=``"""
    try:
        filters = data.Filters.parse(request.query_params)
        page = data.listing(_console(request).store, filters)
    except data.BadFilterError as error:
        return problem(400, str(error))
    return JSONResponse(
        {
            "instances": [data.instance_summary(row) for row in page.rows],
            "next": page.next_after,
        }
    )


def instance(request: Request) -> Response:
    details = data.instance_details(_console(request).store, request.path_params["pid"])
    if details is None:
        return problem(404, f"no process {request.path_params['pid']}")
    return JSONResponse(data.instance_json(details))


def version(request: Request) -> Response:
    """What a page polls to know whether the instance changed: its version and status."""
    found = _console(request).store.instance_version(request.path_params["pid"])
    if found is None:
        return problem(404, f"no process {request.path_params['pid']}")
    version, status, updated = found
    return JSONResponse({"version": version, "status": status, "updated": data.iso(updated)})


def journal(request: Request) -> Response:
    """``GET /api/instances/{id}/journal?limit=N``: the latest N entries (default all)."""
    console = _console(request)
    limit_text = request.query_params.get("limit", "")
    if limit_text and not limit_text.isdigit():
        return problem(400, "limit must be a number")
    pid = request.path_params["pid"]
    if console.store.instance(pid) is None:
        return problem(404, f"no process {pid}")
    entries = console.store.journal(pid, limit=int(limit_text) if limit_text else None)
    return JSONResponse({"journal": data.journal_json(entries)})


def definitions(request: Request) -> Response:
    rows = _console(request).store.list_definitions()
    return JSONResponse(
        {
            "definitions": [
                {
                    "hash": row.hash,
                    "name": row.name,
                    "created": data.iso(row.created_at),
                    "instances": row.instances,
                }
                for row in rows
            ]
        }
    )


def definition(request: Request) -> Response:
    digest = request.path_params["digest"]
    try:
        filters = data.Filters.parse(request.query_params)
        details = data.definition_details(_console(request).store, digest, filters)
    except data.BadFilterError as error:
        return problem(400, str(error))
    if details is None:
        return problem(404, f"no definition {digest}")
    return JSONResponse(
        {
            "hash": digest,
            "name": None if details.definition is None else details.definition.name,
            "source": details.source,
            "problem": details.problem,
            "instances": [data.instance_summary(row) for row in details.instances.rows],
            "next": details.instances.next_after,
        }
    )


def schedules(request: Request) -> Response:
    rows = data.schedules(_console(request).store)
    return JSONResponse({"schedules": [data.schedule_json(row) for row in rows]})


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise operations.OperationError("the body is not JSON") from None
    if not isinstance(body, dict):
        raise operations.OperationError("the body must be a JSON object")
    return body


async def operate(request: Request) -> Response:
    """``POST /api/instances/{id}/{operation}`` with a JSON body of its arguments."""
    console = _console(request)
    if not console.guard.bearer_ok(request):
        return _refused(console)
    pid, name = request.path_params["pid"], request.path_params["op"]
    if name not in operations.INSTANCE_OPERATIONS:
        return problem(404, f"no operation {name!r}")
    try:
        arguments = operations.check(name, await _body(request))
    except operations.OperationError as error:
        return problem(400, str(error))
    if await run_in_threadpool(console.store.instance, pid) is None:
        return problem(404, f"no process {pid}")
    try:
        await run_in_threadpool(
            console.send, lambda client: operations.run(client, name, pid, arguments)
        )
    except MessageError as error:
        return problem(400, str(error))
    LOG.info("web console API: %s sent to %s", name, pid)
    return JSONResponse({"sent": name, "process_id": pid}, status_code=202)


async def operate_schedule(request: Request) -> Response:
    """``POST /api/schedules/{name}/{pause|resume|trigger}``"""
    console = _console(request)
    if not console.guard.bearer_ok(request):
        return _refused(console)
    schedule, name = request.path_params["name"], request.path_params["op"]
    try:
        await run_in_threadpool(
            console.send, lambda client: operations.run_on_schedule(client, name, schedule)
        )
    except (operations.OperationError, MessageError) as error:
        return problem(400, str(error))
    return JSONResponse({"sent": name, "schedule": schedule}, status_code=202)


def _refused(console: Any) -> JSONResponse:
    if console.guard.read_only:
        return problem(403, "this console is read-only: no [web] token is configured")
    return problem(403, "operations need the header Authorization: Bearer <token>")


def routes() -> list[Route]:
    return [
        Route("/api/instances", instances),
        Route("/api/instances/{pid:path}/version", version),
        Route("/api/instances/{pid:path}/journal", journal),
        Route("/api/instances/{pid:path}/{op}", operate, methods=["POST"]),
        Route("/api/instances/{pid:path}", instance),
        Route("/api/definitions", definitions),
        Route("/api/definitions/{digest}", definition),
        Route("/api/schedules", schedules),
        Route("/api/schedules/{name:path}/{op}", operate_schedule, methods=["POST"]),
    ]
