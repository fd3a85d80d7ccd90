"""Errors in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, with the status that fits.

Clients (the `openai` package among them) read `error.message` and map the status to an exception class,
so every failure the server answers, down to an unexpected one, goes out in this shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi.responses import JSONResponse

# The `type` OpenAI gives each status.
ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
               405: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error",
               500: "server_error", 503: "server_error"}


@dataclass
class APIError(Exception):
    """A request the server answers with an error; `param` names the offending field, like OpenAI does."""

    status: int
    message: str
    param: str | None = None
    code: str | None = None
    headers: dict[str, str] | None = None

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, self.param, self.code)


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    kind = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": printable(message), "type": kind, "param": param and printable(param), "code": code}}


def printable(text: str) -> str:
    """Text as UTF-8 can carry it: a lone surrogate a client sent (quoted in a message) becomes its escape."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param, code)


def client_closed() -> JSONResponse:
    """The answer to a client that went away (nginx's 499): nobody receives it, but the request log shows it."""
    return JSONResponse(error_body(499, "client closed the request"), status_code=499)
