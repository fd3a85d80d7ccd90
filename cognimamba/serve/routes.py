"""The endpoints: /health, /v1/models, /v1/chat/completions, /v1/responses and /v1/completions."""

from __future__ import annotations

import asyncio
import hmac
import threading
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from cognimamba.model.tokenizer import literal
from cognimamba.serve import sse
from cognimamba.serve.engine import ServedModel
from cognimamba.serve.errors import APIError, bad_request, client_closed
from cognimamba.serve.prompting import ChatPrompt, ForcedStart, chat_prompt
from cognimamba.serve.responses import (
    ReplyIds,
    chat_chunk,
    chat_completion,
    chat_delta,
    completion,
    finish_reason,
    usage,
    usage_chunk,
)
from cognimamba.serve.responses_api import ResponseBuilder, sse_event
from cognimamba.serve.responses_request import parse_responses_request
from cognimamba.serve.schemas import (
    SamplingParams,
    parse_chat_request,
    parse_completion_request,
    parse_json_body,
)
from cognimamba.serve.state import ServerState
from cognimamba.serve.tool_call_stream import ToolCallStream, fold
from cognimamba.serve.worker import Busy, Failed, Finished, Job, ReplyChannel


def generation_failed() -> APIError:
    return APIError(500, "generation failed (the server's log has the details)")


router = APIRouter()


def server_state(request: Request) -> ServerState:
    return request.app.state.server


def presented_key(request: Request) -> str:
    header = request.headers.get("authorization", "")
    return header[7:] if header[:7].lower() == "bearer " else ""


def key_matches(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())  # constant time: no timing oracle


def authorize(request: Request, state: ServerState) -> None:
    expected = state.settings.api_key
    if expected is None:
        return
    given = presented_key(request)
    if not given:
        raise APIError(401, "missing API key: send the header 'Authorization: Bearer KEY'", code="invalid_api_key")
    if not key_matches(given, expected):
        raise APIError(401, "incorrect API key", code="invalid_api_key")


def authorized(request: Request, state: ServerState) -> bool:
    expected = state.settings.api_key
    return expected is None or key_matches(presented_key(request), expected)


async def read_json(request: Request, state: ServerState) -> dict[str, Any]:
    limit = state.settings.max_body_bytes
    too_large = APIError(413, f"the request body is over the server's limit of {limit} bytes", code="body_too_large")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    return await run_in_threadpool(parse_json_body, bytes(body))  # megabytes of JSON would hold up every request


def check_model(requested: str, state: ServerState) -> None:
    if requested != state.model.name:
        raise APIError(404, f"the model {requested!r} does not exist; this server has {state.model.name!r}",
                       "model", "model_not_found")


def check_prompt_chars(model: ServedModel, prompt: ChatPrompt, param: str) -> None:
    """Refuses, without tokenizing it, a prompt too long to fit the context whatever its tokens."""
    limit = model.max_prompt_chars
    chars = len(prompt.text) + len(prompt.forced.longest)
    if limit is not None and chars > limit:
        raise bad_request(f"the prompt is {chars} characters; the model's context of {model.context_length} tokens "
                          f"holds at most {limit} with room for a reply; shorten it", param, "context_length_exceeded")


def count_prompt(model: ServedModel, prompt: ChatPrompt) -> tuple[int, int]:
    """The prompt's tokens and those of the longest start tool_choice may force."""
    forced = prompt.forced.longest
    return model.count_tokens(prompt.text), model.count_tokens(forced) if forced else 0


async def submit(state: ServerState, prompt: ChatPrompt, sampling: SamplingParams, param: str) -> tuple[Job, int]:
    """Queue the reply after checking the prompt fits; returns the job and the prompt's token count.

    Tokenizing runs in a thread, so a long prompt does not hold up other requests meanwhile.
    """
    model = state.model
    check_prompt_chars(model, prompt, param)
    prompt_tokens, forced_tokens = await run_in_threadpool(count_prompt, model, prompt)
    room = model.context_length - prompt_tokens - forced_tokens
    if room < 1:
        raise bad_request(f"the prompt is {prompt_tokens + forced_tokens} tokens, {1 - room} more than the model's "
                          f"context of {model.context_length} allows with room for a reply; shorten it", param,
                          "context_length_exceeded")
    job = Job(prompt.text, sampling, min(sampling.max_tokens or room, room), ReplyChannel(), prompt.forced,
              prompt.stop)
    try:
        state.worker.submit(job)
    except Busy:
        raise APIError(429, f"server busy: {state.worker.max_pending} requests are running or queued (the "
                       "--queue-size limit); retry shortly", code="server_busy",
                       headers={"Retry-After": "1"}) from None
    return job, prompt_tokens


async def reply_items(job: Job, request: Request | None = None) -> AsyncIterator[str | Finished | Failed]:
    """The job's deltas, then its end. With `request`, a client that goes away cancels the job, and the items end.

    Streams pass no request: Starlette cancels a streaming response when its client disconnects, and the
    `finally` here turns that into the job's cancel.
    """
    watcher = asyncio.create_task(cancel_on_disconnect(request, job.cancel)) if request is not None else None
    try:
        while True:
            item = await job.channel.next()
            if job.cancel.is_set():  # only the watcher sets it before the reply is over: the client has gone
                return
            yield item
            if isinstance(item, Finished | Failed):
                return
    finally:
        job.cancel.set()  # a no-op once the reply is over; otherwise generation stops at the next token
        if watcher is not None:
            watcher.cancel()


async def cancel_on_disconnect(request: Request, cancel: threading.Event) -> None:
    """Cancels the job the moment its client disconnects, however steadily tokens arrive meanwhile."""
    while (await request.receive())["type"] != "http.disconnect":  # the body is read: nothing else comes
        pass
    cancel.set()


def record(request: Request, prompt_tokens: int, completion_tokens: int) -> None:
    request.state.tokens = (prompt_tokens, completion_tokens)  # for the request log line (serve/app.py)


@router.get("/health")
async def health(request: Request) -> dict[str, Any]:
    """Open to load balancers, but the model and its queue only to a client with the key (when one is set)."""
    state = server_state(request)
    if not authorized(request, state):
        return {"status": "ok"}
    return {"status": "ok", "model": state.model.name, "pending_requests": state.worker.pending}


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    state = server_state(request)
    authorize(request, state)
    return {"object": "list", "data": [model_card(state)]}


@router.get("/v1/models/{name}")
async def get_model(name: str, request: Request) -> dict[str, Any]:
    state = server_state(request)
    authorize(request, state)
    check_model(name, state)
    return model_card(state)


def model_card(state: ServerState) -> dict[str, Any]:
    # max_model_len is vLLM's name for the context length; `cogni chat --url` reads it.
    return {"id": state.model.name, "object": "model", "created": 0, "owned_by": "cognimamba",
            "max_model_len": state.model.context_length}


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Any:
    state = server_state(request)
    authorize(request, state)
    chat = parse_chat_request(await read_json(request, state))
    check_model(chat.model, state)
    # rendering megabytes takes a while too
    prompt = await run_in_threadpool(chat_prompt, chat, state.model.prompt_format)
    job, prompt_tokens = await submit(state, prompt, chat.sampling, "messages")
    ids = ReplyIds.new("chatcmpl", state.model.name)
    if chat.stream:
        return StreamingResponse(stream_chat(request, job, ids, prompt_tokens, chat.include_usage,
                                             ToolCallStream(prompt.tool_names)),
                                 media_type=sse.MEDIA_TYPE, headers=sse.HEADERS)
    calls = ToolCallStream(prompt.tool_names)
    events = []
    async for item in reply_items(job, request):
        if isinstance(item, str):
            events += calls.push(item)
        elif isinstance(item, Failed):
            raise generation_failed()
        else:
            events += calls.finish()
            counts = usage(prompt_tokens, completion_tokens(item), item.stats.cached_tokens)
            record(request, prompt_tokens, counts["completion_tokens"])
            return chat_completion(ids, fold(events), calls.calls,
                                   finish_reason(item.stats, bool(calls.calls), bool(item.forced)), counts)
    return client_closed()


async def stream_chat(request: Request, job: Job, ids: ReplyIds, prompt_tokens: int, include_usage: bool,
                      calls: ToolCallStream) -> AsyncIterator[str]:
    yield sse.event(chat_chunk(ids, {"role": "assistant", "content": ""}))
    async for item in reply_items(job):
        if isinstance(item, Failed):
            yield sse.event(generation_failed().body())
            break
        events = calls.push(item) if isinstance(item, str) else calls.finish()
        for event in events:
            yield sse.event(chat_chunk(ids, chat_delta(event)))
        if isinstance(item, Finished):
            yield sse.event(chat_chunk(ids, {}, finish_reason(item.stats, bool(calls.calls), bool(item.forced))))
            counts = usage(prompt_tokens, completion_tokens(item), item.stats.cached_tokens)
            record(request, prompt_tokens, counts["completion_tokens"])
            if include_usage:
                yield sse.event(usage_chunk(ids, "chat.completion.chunk", counts))
    yield sse.DONE


@router.post("/v1/responses")
async def create_response(request: Request) -> Any:
    """OpenAI's Responses API over the same prompt, queue and tool-call parsing as chat completions."""
    state = server_state(request)
    authorize(request, state)
    parsed = parse_responses_request(await read_json(request, state))
    check_model(parsed.chat.model, state)
    prompt = await run_in_threadpool(chat_prompt, parsed.chat, state.model.prompt_format)
    job, prompt_tokens = await submit(state, prompt, parsed.chat.sampling, "input")
    reply, calls = ResponseBuilder(state.model.name, parsed.echo), ToolCallStream(prompt.tool_names)
    if parsed.chat.stream:
        return StreamingResponse(stream_response(request, job, reply, calls, prompt_tokens),
                                 media_type=sse.MEDIA_TYPE, headers=sse.HEADERS)
    async for item in reply_items(job, request):
        if isinstance(item, str):
            reply.push(calls.push(item))
        elif isinstance(item, Failed):
            raise generation_failed()
        else:
            reply.push(calls.finish())
            finish_response(request, reply, item, calls, prompt_tokens)
            return reply.response
    return client_closed()


def finish_response(request: Request, reply: ResponseBuilder, finished: Finished, calls: ToolCallStream,
                    prompt_tokens: int) -> list[dict[str, Any]]:
    generated = completion_tokens(finished)
    record(request, prompt_tokens, generated)
    reason = finish_reason(finished.stats, bool(calls.calls), bool(finished.forced))
    return reply.finish(reason, prompt_tokens, generated, finished.stats.cached_tokens)


async def stream_response(request: Request, job: Job, reply: ResponseBuilder, calls: ToolCallStream,
                          prompt_tokens: int) -> AsyncIterator[str]:
    """The Responses API's events; unlike chat completions' chunks, no `[DONE]` follows the last."""
    for event in reply.start():
        yield sse_event(event)
    async for item in reply_items(job):
        if isinstance(item, Failed):
            events = reply.fail(generation_failed().message)
        elif isinstance(item, str):
            events = reply.push(calls.push(item))
        else:
            events = reply.push(calls.finish()) + finish_response(request, reply, item, calls, prompt_tokens)
        for event in events:
            yield sse_event(event)


@router.post("/v1/completions")
async def completions(request: Request) -> Any:
    state = server_state(request)
    authorize(request, state)
    text_request = parse_completion_request(await read_json(request, state))
    check_model(text_request.model, state)
    job, prompt_tokens = await submit(state, ChatPrompt(literal(text_request.prompt), ForcedStart()),
                                      text_request.sampling, "prompt")
    ids = ReplyIds.new("cmpl", state.model.name)
    if text_request.stream:
        return StreamingResponse(stream_completion(request, job, ids, prompt_tokens, text_request.include_usage),
                                 media_type=sse.MEDIA_TYPE, headers=sse.HEADERS)
    pieces = []
    async for item in reply_items(job, request):
        if isinstance(item, str):
            pieces.append(item)
        elif isinstance(item, Failed):
            raise generation_failed()
        else:
            counts = usage(prompt_tokens, completion_tokens(item), item.stats.cached_tokens)
            record(request, prompt_tokens, counts["completion_tokens"])
            return completion(ids, "".join(pieces), finish_reason(item.stats, False), counts)
    return client_closed()


async def stream_completion(request: Request, job: Job, ids: ReplyIds, prompt_tokens: int,
                            include_usage: bool) -> AsyncIterator[str]:
    async for item in reply_items(job):
        if isinstance(item, Failed):
            yield sse.event(generation_failed().body())
            break
        if isinstance(item, str):
            yield sse.event(completion(ids, item, None))
            continue
        yield sse.event(completion(ids, "", finish_reason(item.stats, False)))
        counts = usage(prompt_tokens, completion_tokens(item), item.stats.cached_tokens)
        record(request, prompt_tokens, counts["completion_tokens"])
        if include_usage:
            yield sse.event(usage_chunk(ids, "text_completion", counts))
    yield sse.DONE


def completion_tokens(finished: Finished) -> int:
    """What the model generated: a start tool_choice forced on the reply is not the model's."""
    return finished.stats.generated_tokens
