"""`cogni chat --url`: any OpenAI-compatible server (ours, llama-server, Ollama, vLLM) as a `ReplySource`.

A session hands its source messages and tools, and they go to /v1/chat/completions as JSON: the server
applies its own chat template, and text the user wrote stays a message's text (never a control token on this
side). The reply's tool calls come back rendered as `<tool_call>` blocks, so the session parses, shows and
(when enabled) runs them exactly as with a local model.

There is no tokenizer on this side: `count_tokens` estimates (see CHARS_PER_TOKEN) for the session's
context trimming, and the reply's numbers come from the server's `usage`; the server has the last word
on what fits its context.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import httpx

from cognimamba.chat.format import normalize_tool, normalize_tool_calls, render_conversation
from cognimamba.chat.session import ReplySource
from cognimamba.config.schema import GenerationConfig
from cognimamba.errors import CogniError
from cognimamba.inference.decode_step import GenerationStats
from cognimamba.model.tokenizer import TOOL_CALL, TOOL_CALL_END

# A deliberate overestimate of tokens per character of the conversation in ChatML (BPE vocabularies of 4k-150k
# give 3-4.5 characters per token in English), so the session trims old turns a little early rather than send
# what will not fit.
CHARS_PER_TOKEN = 3.0
DEFAULT_CONTEXT = 4096  # when the server does not say
# Where servers put the context length in a /v1/models entry: ours and vLLM, llama-server, others.
CONTEXT_FIELDS = ("max_model_len", "context_length", "context_window")
FINISH_TO_STOP_REASON = {"stop": "stop_token", "tool_calls": "stop_token", "length": "max_new_tokens"}


def openai_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A session's messages as chat-completions wants them: calls with ids, and each tool result answering the
    latest assistant's calls in order."""
    converted: list[dict[str, Any]] = []
    open_ids: list[str] = []  # ids of the latest assistant's calls, answered in order by tool messages
    for number, message in enumerate(messages):
        role, content = message["role"], str(message.get("content") or "")
        if role == "assistant":
            calls = normalize_tool_calls(message.get("tool_calls"))
            open_ids = [f"call_{number}_{index}" for index in range(len(calls))]
            entry: dict[str, Any] = {"role": "assistant", "content": content}
            if calls:
                entry["tool_calls"] = [{"id": call_id, "type": "function", "function": {
                    "name": call.name, "arguments": json.dumps(call.arguments, ensure_ascii=False)}}
                    for call_id, call in zip(open_ids, calls, strict=True)]
            converted.append(entry)
        elif role == "tool":
            converted.append({"role": "tool", "tool_call_id": open_ids.pop(0) if open_ids else f"call_{number}",
                              "content": content})
        else:
            converted.append({"role": role, "content": content})
    return converted


class RemoteSource(ReplySource):
    """A chat-completions server as the model of a chat session (the TUI, `--plain` and `--prompt`)."""

    def __init__(self, url: str, api_key: str | None = None, model: str | None = None,
                 timeout: float = 300.0) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(base_url=self.url, headers=headers, timeout=httpx.Timeout(timeout, connect=10))
        self.defaults = GenerationConfig()
        self.notice: str | None = None
        self._stats = GenerationStats()
        card = self._model_card(model)
        self.name: str = card["id"]
        context = next((card[name] for name in CONTEXT_FIELDS if isinstance(card.get(name), int)), None)
        context = context or (card.get("meta") or {}).get("n_ctx_train")  # llama-server
        if not isinstance(context, int):
            self.notice = f"{self.url} does not say the model's context length; assuming {DEFAULT_CONTEXT} tokens"
        self._context_length = context if isinstance(context, int) else DEFAULT_CONTEXT

    @property
    def context_length(self) -> int:
        return self._context_length

    @property
    def stats(self) -> GenerationStats:
        return self._stats

    def count_tokens(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None,
                     add_generation_prompt: bool = False) -> int:
        return math.ceil(len(render_conversation(messages, tools, add_generation_prompt)) / CHARS_PER_TOKEN)

    def render(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> str:
        """What the server is sent (it renders the prompt with its own template)."""
        sent = {"messages": openai_messages(messages), "tools": [normalize_tool(tool) for tool in tools or []]}
        return json.dumps(sent, ensure_ascii=False, indent=2)

    def stream(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None,
               settings: GenerationConfig, cancel: threading.Event | None = None,
               stop: Sequence[str] = ()) -> Iterator[str]:
        body: dict[str, Any] = {
            "model": self.name, "messages": openai_messages(messages), "stream": True,
            "stream_options": {"include_usage": True}, "temperature": settings.temperature,
            "top_p": settings.top_p, "max_tokens": settings.max_new_tokens, "top_k": settings.top_k,
            "repetition_penalty": settings.repetition_penalty, "stop": list(stop)[:4] or None}
        if settings.seed >= 0:
            body["seed"] = settings.seed
        if tools:
            body["tools"] = [normalize_tool(tool) for tool in tools]
        stats = self._stats = GenerationStats(prompt_tokens=self.count_tokens(messages, tools, True))
        started = time.perf_counter()
        calls: dict[int, dict[str, str]] = {}
        response = self._request(body)
        try:
            for chunk in _events(response):
                if cancel is not None and cancel.is_set():
                    stats.stop_reason = "cancelled"  # closing the connection stops the server's generation
                    return
                if chunk.get("usage"):
                    stats.prompt_tokens = chunk["usage"].get("prompt_tokens", stats.prompt_tokens)
                    stats.generated_tokens = chunk["usage"].get("completion_tokens", stats.generated_tokens)
                for choice in chunk.get("choices") or []:
                    delta = choice.get("delta") or {}
                    for call in delta.get("tool_calls") or []:
                        entry = calls.setdefault(call.get("index", 0), {"name": "", "arguments": ""})
                        entry["name"] += (call.get("function") or {}).get("name") or ""
                        entry["arguments"] += (call.get("function") or {}).get("arguments") or ""
                    if delta.get("content"):
                        if not stats.time_to_first_token:
                            stats.time_to_first_token = time.perf_counter() - started
                        stats.generated_tokens += 1  # until the server's usage says exactly
                        yield delta["content"]
                    if choice.get("finish_reason"):
                        stats.stop_reason = FINISH_TO_STOP_REASON.get(choice["finish_reason"], "stop_token")
        finally:
            response.close()
        for index in sorted(calls):  # as the model wrote them, so the session parses and shows them
            yield f"\n{TOOL_CALL}\n{_call_json(calls[index])}\n{TOOL_CALL_END}"
        stats.decode_seconds = max(0.0, time.perf_counter() - started - stats.time_to_first_token)

    def close(self) -> None:
        self.client.close()

    def _model_card(self, wanted: str | None) -> dict[str, Any]:
        try:
            response = self.client.get("/models")
        except httpx.HTTPError as error:
            raise CogniError(f"--url {self.url}: cannot reach the server ({error}); is it running?") from None
        cards = _json_or_error(response, self.url).get("data") or []
        if wanted is not None:
            return next((card for card in cards if card.get("id") == wanted), {"id": wanted})
        if not cards:
            raise CogniError(f"--url {self.url}: the server lists no models; name one with --model")
        return cards[0]

    def _request(self, body: dict[str, Any]) -> httpx.Response:
        try:
            request = self.client.build_request("POST", "/chat/completions", json=body)
            response = self.client.send(request, stream=True)
        except httpx.HTTPError as error:
            raise CogniError(f"--url {self.url}: the request failed ({error})") from None
        if response.status_code >= 400:
            response.read()
            _json_or_error(response, self.url)
        return response


def _call_json(call: dict[str, str]) -> str:
    try:
        arguments = json.loads(call["arguments"]) if call["arguments"].strip() else {}
    except json.JSONDecodeError:
        arguments = call["arguments"]  # left as the server sent it; the session reports it as malformed
    return json.dumps({"name": call["name"], "arguments": arguments}, ensure_ascii=False)


def _events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """The JSON payloads of an SSE stream, up to `data: [DONE]`."""
    for line in response.iter_lines():
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        chunk = json.loads(data)
        if "error" in chunk:
            raise CogniError(f"the server: {chunk['error'].get('message', chunk['error'])}")
        yield chunk


def _json_or_error(response: httpx.Response, url: str) -> dict[str, Any]:
    try:
        body = response.json()
    except json.JSONDecodeError:
        body = {}
    if response.status_code >= 400:
        error = body.get("error") if isinstance(body, dict) else None
        message = error.get("message") if isinstance(error, dict) else (error or response.text[:200])
        raise CogniError(f"--url {url}: HTTP {response.status_code}: {message}")
    return body if isinstance(body, dict) else {}
