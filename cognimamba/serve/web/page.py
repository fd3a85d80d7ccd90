"""The chat page at `/`, its packaged files under `/web/`, and the built-in tools it may ask the server to run.

The page is a static client of `/v1/chat/completions`, like any other: it loads without a key, and every API
call it makes carries the key the user typed. It runs no code from elsewhere: its scripts are packaged files,
and its Content-Security-Policy lets it load and call nothing but this server, so even Markdown that slipped
past the page's sanitizer could not run script or send the conversation anywhere.

Tool calls the model makes in the page run here, through `chat/tools` (the same bounded built-ins `cogni chat
--enable-tools` runs), behind the same key as the API: the browser has no calculator of its own to trust.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from cognimamba.chat.format import ToolCall
from cognimamba.chat.tools import ToolBox
from cognimamba.serve.errors import bad_request
from cognimamba.serve.routes import authorize, read_json, server_state

STATIC = Path(__file__).parent / "static"
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "Cache-Control": "no-cache",  # a new version of the package shows its new page at once
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}

router = APIRouter()


def mount_page(app: FastAPI) -> None:
    """`/` and `/web/*`: the routes before the static files, so `/web/tools` is not looked for on disk."""
    app.include_router(router)
    app.mount("/web", PackagedFiles(directory=STATIC), name="web")


class PackagedFiles(StaticFiles):
    """The page's files, revalidated on every load (a 304 while unchanged), so an upgraded package never serves
    its new page with the old scripts a browser cached."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = "no-cache"
        return response


@router.get("/", include_in_schema=False)
async def chat_page() -> FileResponse:
    return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)


@router.get("/web/tools")
async def builtin_tools(request: Request) -> dict[str, Any]:
    """The built-in tools' definitions, which the page offers the model when its tools switch is on."""
    authorize(request, server_state(request))
    return {"tools": ToolBox(enabled=True).definitions()}


@router.post("/web/tools/run")
async def run_builtin_tool(request: Request) -> dict[str, Any]:
    """Runs one call the model made: `{"name", "arguments"}` (arguments as the JSON text the stream gave).

    A failing tool is a result (`ok: false`, its error as content) the page hands back to the model, as `cogni
    chat` does; only a request that is not a call at all is a 400.
    """
    state = server_state(request)
    authorize(request, state)
    call = parse_call(await read_json(request, state))
    result = await run_in_threadpool(ToolBox(enabled=True).run, call)  # bounded, but it holds the GIL a while
    return {"name": result.name, "ok": result.ok, "content": result.content}


def parse_call(body: dict[str, Any]) -> ToolCall:
    name, arguments = body.get("name"), body.get("arguments", "{}")
    if not isinstance(name, str) or not name:
        raise bad_request("'name' must be the name of the tool to run", "name")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments or "{}")
        except json.JSONDecodeError as error:
            raise bad_request(f"'arguments' is not valid JSON ({error})", "arguments") from None
    if not isinstance(arguments, dict):
        raise bad_request("'arguments' must be a JSON object (or its text)", "arguments")
    return ToolCall(name, arguments)
