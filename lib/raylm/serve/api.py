"""The HTTP surface: FastAPI routes over an `Ingress`, error shapes, auth and body-size guards.

`make_api(ingress)` is called inside the ingress replica (Serve's `__serve_build_asgi_app__`), so
routes and middleware close over that replica's settings instead of module globals. Every error is
`{"error": {"message", "type", "param"}}` (OpenAI's shape); nothing a client sends should be a 500.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from raylm.serve.schemas import (
    ApiError,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ClassifyRequest,
    ClassifyResponse,
    CompletionRequest,
    CompletionResponse,
    ErrorResponse,
    ModelList,
    QARequest,
    QAResponse,
    ServeConfig,
)


class Ingress(Protocol):
    """What the routes call: raylm.serve.app.Ingress (imported by nobody here: app -> api)."""

    token_sha256: str | None
    cfg: ServeConfig

    async def ready(self) -> dict[str, str]: ...
    async def list_models(self) -> dict[str, Any]: ...
    async def classify(self, req: ClassifyRequest) -> dict[str, Any]: ...
    async def qa(self, req: QARequest) -> dict[str, Any]: ...
    async def complete(self, req: CompletionRequest) -> dict[str, Any]: ...
    async def chat(self, req: ChatCompletionRequest) -> dict[str, Any]: ...
    async def stream(self, req: Any, chat: bool) -> AsyncIterator[str]: ...


def token_digest(token: str) -> str:
    """SHA-256 of a bearer token with surrounding whitespace removed: the configured token (often
    read from a file, trailing newline and all) and the client's compare as the same string."""
    return hashlib.sha256(token.strip().encode("utf-8", "replace")).hexdigest()


OPEN_PATHS = ("/healthz", "/readyz")
_ERRORS = {
    code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 503, 504)
}  # for the OpenAPI docs


def error_response(err: ApiError) -> JSONResponse:
    headers = {"Retry-After": "1"} if err.status == 503 else None
    if err.status == 401:
        headers = {"WWW-Authenticate": "Bearer"}
    return JSONResponse(err.body(), status_code=err.status, headers=headers)


_UNION_TAGS = {"str", "int", "float", "bool", "none", "list", "dict"}


def _field_path(loc: tuple) -> list[str]:
    """`loc` without "body" and pydantic's union-member tags (`function-after[...]`, `TextPart`)."""
    keep = []
    for part in loc:
        if isinstance(part, int) or (
            part != "body" and part not in _UNION_TAGS and re.fullmatch(r"[a-z_][a-z0-9_]*", part)
        ):
            keep.append(str(part))
    return keep


def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    errors = list(exc.errors()) or [{"loc": (), "msg": "invalid request", "type": "invalid"}]
    # Of a union's per-member errors, the member the input's type matched says the most.
    first = min(errors, key=lambda e: (str(e.get("type", "")).endswith("_type"), -len(e["loc"])))
    loc = _field_path(first.get("loc", ()))
    if first.get("type") == "json_invalid":
        why = first.get("ctx", {}).get("error", "cannot parse")
        return error_response(ApiError(400, f"malformed JSON body: {why} (at char {loc[0]})"))
    if not loc and isinstance(first.get("input"), bytes | str):
        msg = "the body must be a JSON object (send Content-Type: application/json)"
        return error_response(ApiError(400, msg))
    param = ".".join(loc) or None
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    msg = f"{param or 'body'}: {first.get('msg', 'invalid value')}{more}"
    return error_response(ApiError(400, msg, param=param))


def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
    return error_response(ApiError(exc.status_code, str(exc.detail), kind))


def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    # A bug, not the client's fault: say so without leaking internals.
    return error_response(ApiError(500, f"internal error ({type(exc).__name__})", "server_error"))


# Seconds this request has spent awaiting model replicas (raylm.serve.app.call adds to it).
MODEL_SECONDS: ContextVar[list[float] | None] = ContextVar("raylm_model_seconds", default=None)


def add_model_time(seconds: float) -> None:
    """Count `seconds` awaiting a model toward this request's Server-Timing header."""
    spent = MODEL_SECONDS.get()
    if spent is not None:
        spent[0] += seconds


def server_timing(model_s: float, ingress_s: float) -> bytes:
    """The Server-Timing header: `model` (awaiting the model replicas: the hop, their queue and
    compute) and `ingress` (all of this replica's time), in ms. A client's own latency minus
    `model` is what serving cost it; minus `ingress`, what the proxy and the network cost."""
    return f"model;dur={1000 * model_s:.2f}, ingress;dur={1000 * ingress_s:.2f}".encode()


class GuardMiddleware:
    """Pure-ASGI guard: bearer auth (when a token is set), then a hard cap on the body size;
    every response gets a Server-Timing header (`server_timing`).

    The body is read here, up to the cap, and replayed to the app: a chunked upload without a
    Content-Length is counted as strictly as one that declares its size.
    """

    def __init__(self, app: Any, token_sha256: str | None, max_body_bytes: int):
        self.app, self.token_sha256, self.max_body = app, token_sha256, max_body_bytes

    def _route_path(self, scope: dict) -> str:
        path, root = scope.get("path", ""), scope.get("root_path", "")
        return path[len(root) :] if root and path.startswith(root) else path

    def _authorized(self, headers: dict[bytes, bytes]) -> bool:
        value = headers.get(b"authorization", b"").decode("latin-1")
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        return hmac.compare_digest(token_digest(token), self.token_sha256 or "")

    async def __call__(self, scope: dict, receive: Any, raw_send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, raw_send)
        began, spent = time.perf_counter(), [0.0]
        MODEL_SECONDS.set(spent)  # this request's task (and the route it awaits) adds to it

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start":  # a stream: up to its first event
                timing = server_timing(spent[0], time.perf_counter() - began)
                message = {
                    **message,
                    "headers": [*message.get("headers", []), (b"server-timing", timing)],
                }
            await raw_send(message)

        headers = dict(scope.get("headers") or [])
        if (
            self.token_sha256
            and self._route_path(scope) not in OPEN_PATHS
            and not self._authorized(headers)
        ):
            msg = "missing or invalid bearer token (Authorization: Bearer <token>)"
            err = ApiError(401, msg, "authentication_error")
            return await error_response(err)(scope, receive, send)
        too_big = ApiError(413, f"request body over {self.max_body} bytes", "request_too_large")
        declared = headers.get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                err = ApiError(400, "invalid Content-Length header")
                return await error_response(err)(scope, receive, send)
            if int(declared) > self.max_body:
                return await error_response(too_big)(scope, receive, send)
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # client went away
                return None
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body:
                return await error_response(too_big)(scope, receive, send)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()  # e.g. http.disconnect, for streaming responses
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)


def sse(chunks: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    async def events() -> AsyncIterator[str]:
        try:
            async for chunk in chunks:
                yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"
        except ApiError as err:  # failed after the headers went out: tell the client in-band
            yield f"data: {json.dumps(err.body())}\n\n"
        yield "data: [DONE]\n\n"

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


def make_api(ingress: Ingress) -> FastAPI:
    """The FastAPI app for one ingress replica."""
    api = FastAPI(
        title="raylm serve",
        version="1",
        description="Classification, OpenAI-style completions and QA over exported raylm models.",
        strict_content_type=False,  # a JSON body without a Content-Type is still read as JSON
    )
    api.add_middleware(
        GuardMiddleware,
        token_sha256=ingress.token_sha256,
        max_body_bytes=ingress.cfg.limits.max_body_bytes,
    )
    api.add_exception_handler(RequestValidationError, _validation_error)
    api.add_exception_handler(StarletteHTTPException, _http_error)
    api.add_exception_handler(ApiError, lambda _, e: error_response(e))
    api.add_exception_handler(Exception, _unexpected)
    _add_routes(api, ingress)
    return api


def _add_routes(api: FastAPI, ingress: Ingress) -> None:
    @api.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        """Liveness: the ingress answers (no auth)."""
        return {"status": "ok"}

    @api.get("/readyz", tags=["ops"], responses=_ERRORS)
    async def readyz() -> dict[str, Any]:
        """Readiness: every model replica answers (no auth); else 503."""
        return {"status": "ready", "models": await ingress.ready()}

    @api.get("/v1/models", response_model=ModelList, tags=["models"], responses=_ERRORS)
    async def models() -> ModelList:
        return await ingress.list_models()

    @api.post("/v1/classify", response_model=ClassifyResponse, tags=["models"], responses=_ERRORS)
    async def classify(req: ClassifyRequest) -> ClassifyResponse:
        """Label each text; `probabilities` holds every class."""
        return await ingress.classify(req)

    @api.post(
        "/v1/qa",
        response_model=QAResponse,
        response_model_exclude_none=True,
        tags=["models"],
        responses=_ERRORS,
    )
    async def qa(req: QARequest) -> QAResponse:
        """Answer a question about a passage with the model's training prompt template."""
        return await ingress.qa(req)

    @api.post(
        "/v1/completions", response_model=CompletionResponse, tags=["openai"], responses=_ERRORS
    )
    async def completions(req: CompletionRequest) -> Any:
        """OpenAI-style text completion; `stream: true` answers as server-sent events."""
        if req.stream:
            return sse(await ingress.stream(req, chat=False))
        return await ingress.complete(req)

    @api.post(
        "/v1/chat/completions",
        response_model=ChatCompletionResponse,
        tags=["openai"],
        responses=_ERRORS,
    )
    async def chat_completions(req: ChatCompletionRequest) -> Any:
        """OpenAI-style chat completion; `stream: true` answers as server-sent events."""
        if req.stream:
            return sse(await ingress.stream(req, chat=True))
        return await ingress.chat(req)
