"""The FastAPI app: routes, the chat page, OpenAI-shaped errors for every failure, CORS, one log line per request."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cognimamba.serve.engine import ServedModel
from cognimamba.serve.errors import APIError, client_closed, error_body
from cognimamba.serve.routes import router
from cognimamba.serve.state import ServerSettings, ServerState
from cognimamba.serve.web.page import mount_page
from cognimamba.serve.worker import GenerationWorker

log = logging.getLogger("cognimamba.serve")


def create_app(model: ServedModel, settings: ServerSettings | None = None) -> FastAPI:
    settings = settings or ServerSettings()
    state = ServerState(model, GenerationWorker(model, settings.max_concurrency), settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        state.worker.close()

    app = FastAPI(title="cognimamba", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = state
    app.include_router(router)
    mount_page(app)  # the chat page at /
    app.add_exception_handler(APIError, api_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(ClientDisconnect, client_gone)
    app.add_exception_handler(Exception, unexpected_error)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"],
                           allow_headers=["*"])
    app.add_middleware(RequestLog)
    return app


async def api_error(request: Request, error: Any) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


async def http_error(request: Request, error: Any) -> JSONResponse:
    message = f"no such endpoint: {request.method} {request.url.path}" if error.status_code in (404, 405) \
        else str(error.detail)
    return JSONResponse(error_body(error.status_code, message), status_code=error.status_code)


async def validation_error(request: Request, error: Any) -> JSONResponse:
    return JSONResponse(error_body(400, f"invalid request: {error}"), status_code=400)


async def client_gone(request: Request, error: Any) -> JSONResponse:
    """A client that left before sending all its body: a 499 nobody receives, logged as one line."""
    return client_closed()


async def unexpected_error(request: Request, error: Exception) -> JSONResponse:
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=error)
    return JSONResponse(error_body(500, "internal server error (the server's log has the details)"), status_code=500)


class RequestLog:
    """One line per request once its response is over: method, path, status, tokens, seconds."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def send_noting_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            tokens = scope.get("state", {}).get("tokens")
            counted = f" tokens {tokens[0]}+{tokens[1]}" if tokens else ""
            log.info("%s %s %d%s %.3fs", scope["method"], scope["path"], status[0], counted,
                     time.perf_counter() - started)
