"""OpenAI wire format: response bodies and stream chunks from the model replicas' outputs.

Pure functions over dicts (no Ray, no FastAPI), so the shapes are unit-tested without a server.
Streams follow OpenAI: chat sends a first chunk with the role, text chunks, a chunk with
finish_reason, and (with `stream_options.include_usage`) a last chunk with usage and no choices.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any


def head(chat: bool, model: str, chunk: bool = False) -> dict[str, Any]:
    obj = ("chat.completion.chunk" if chunk else "chat.completion") if chat else "text_completion"
    prefix = "chatcmpl" if chat else "cmpl"
    return {
        "id": f"{prefix}-{uuid.uuid4().hex}",
        "object": obj,
        "created": int(time.time()),
        "model": model,
    }


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _total(outs: list[dict[str, Any]]) -> dict[str, int]:
    return usage(sum(o["prompt_tokens"] for o in outs), sum(o["completion_tokens"] for o in outs))


def completion_body(model: str, outs: list[dict[str, Any]]) -> dict[str, Any]:
    """`text_completion` for one output per prompt ({text, finish_reason, token counts})."""
    choices = [
        {"index": i, "text": o["text"], "logprobs": None, "finish_reason": o["finish_reason"]}
        for i, o in enumerate(outs)
    ]
    return {**head(False, model), "choices": choices, "usage": _total(outs)}


def chat_body(model: str, out: dict[str, Any]) -> dict[str, Any]:
    message = {"role": "assistant", "content": out["text"]}
    choice = {"index": 0, "message": message, "finish_reason": out["finish_reason"]}
    return {**head(True, model), "choices": [choice], "usage": _total([out])}


def _chunk(top: dict, chat: bool, text: str | None, finish: str | None, role: bool = False):
    if not chat:
        choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
        return {**top, "choices": [choice]}
    delta = ({"role": "assistant"} if role else {}) | ({"content": text} if text else {})
    return {**top, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


async def stream_chunks(
    items: AsyncIterator[Any], model: str, prompt_tokens: int, chat: bool, with_usage: bool
) -> AsyncIterator[dict[str, Any]]:
    """OpenAI chunks from a replica stream: text pieces, then {finish_reason, completion_tokens}."""
    top = head(chat, model, chunk=True)
    if chat:
        yield _chunk(top, chat, "", None, role=True)
    end = {"finish_reason": "stop", "completion_tokens": 0}
    async for item in items:
        if isinstance(item, str):
            yield _chunk(top, chat, item, None)
        else:
            end = item
    yield _chunk(top, chat, None, end["finish_reason"])
    if with_usage:
        yield {**top, "choices": [], "usage": usage(prompt_tokens, end["completion_tokens"])}
