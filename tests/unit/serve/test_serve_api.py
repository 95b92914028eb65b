"""The HTTP layer alone (no Ray): error shapes, bearer auth, body-size guard, SSE framing.

`make_api` takes the ingress it routes to; here a small in-process stand-in answers, so these
run in milliseconds. The real app on Ray Serve is covered in tests/integration/test_serve.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time

import pytest
from fastapi.testclient import TestClient

from raylm.serve import openai_compat as oai
from raylm.serve.api import add_model_time, make_api
from raylm.serve.schemas import ApiError, ServeConfig

TOKEN = "t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class StandIn:
    """Answers like `raylm.serve.app.Ingress` without any model."""

    def __init__(self, token: str | None = None, **cfg):
        self.cfg = ServeConfig.model_validate(cfg)
        self.token_sha256 = hashlib.sha256(token.encode()).hexdigest() if token else None

    async def ready(self):
        return {"m": "classification"}

    async def list_models(self):
        return {"object": "list", "data": [{"id": "m", "created": 0, "task": "classification"}]}

    async def classify(self, req):
        if req.model == "boom":
            raise RuntimeError("a bug")
        began = time.perf_counter()  # as raylm.serve.app.call times awaiting a replica
        await asyncio.sleep(0.02)
        add_model_time(time.perf_counter() - began)
        row = {"label": "a", "label_id": 0, "score": 1.0, "probabilities": {"a": 1.0}}
        return {"model": "m", "results": [row for _ in req.texts]}

    async def qa(self, req):
        raise ApiError(404, f"model '{req.model}' not found", "not_found_error", "model")

    async def complete(self, req):
        out = {"text": "x", "prompt_tokens": 1, "completion_tokens": 1, "finish_reason": "length"}
        return oai.completion_body("m", [out])

    async def chat(self, req):
        raise ApiError(503, "overloaded", "overloaded_error")

    async def stream(self, req, chat):
        async def items():
            yield "he"
            yield "llo"
            yield {"finish_reason": "length", "completion_tokens": 2}

        return oai.stream_chunks(items(), "m", 1, chat, with_usage=True)


@pytest.fixture(scope="module")
def client():
    api = make_api(StandIn(TOKEN, limits={"max_body_bytes": 1000}))
    return TestClient(api, raise_server_exceptions=False)


def _is_error(resp, status, param=None):
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param"} and err["message"]
    if param is not None:
        assert err["param"] == param
    return err


def test_auth_guards_all_but_probes(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    for path in ("/v1/models", "/docs", "/openapi.json"):
        resp = client.get(path)
        assert _is_error(resp, 401)["type"] == "authentication_error"
        assert resp.headers["www-authenticate"] == "Bearer"
    _is_error(client.get("/v1/models", headers={"Authorization": "Bearer wrong"}), 401)
    _is_error(client.get("/v1/models", headers={"Authorization": TOKEN}), 401)
    assert client.get("/v1/models", headers=AUTH).status_code == 200
    assert client.post("/v1/classify", json={"texts": ["a"]}).status_code == 401


def test_body_limit_declared_and_chunked(client):
    big = json.dumps({"texts": ["x" * 2000]})
    _is_error(client.post("/v1/classify", content=big, headers=AUTH), 413)

    def chunks():  # no Content-Length: the guard counts what arrives
        for _ in range(20):
            yield b" " * 100

    _is_error(client.post("/v1/classify", content=chunks(), headers=AUTH), 413)
    assert client.post("/v1/classify", json={"texts": ["ok"]}, headers=AUTH).status_code == 200


@pytest.mark.parametrize(
    "kwargs, param",
    [
        ({"content": b"{bad json"}, None),
        ({"content": b'{"texts": ["a"]', "headers": {"content-type": "application/json"}}, None),
        ({"json": {"texts": "a"}}, "texts"),
        ({"json": {"texts": []}}, "texts"),
        ({"json": {"texts": ["a", ""]}}, "texts.1"),
        ({"json": {"texts": [["a"]]}}, "texts.0"),
        ({"json": {"text": ["a"]}}, None),
        ({"json": [1, 2]}, None),
        ({"content": b"texts=a", "headers": {"content-type": "text/plain"}}, None),
    ],
)
def test_bad_bodies_are_400_with_json_error(client, kwargs, param):
    headers = {**AUTH, **kwargs.pop("headers", {})}
    err = _is_error(client.post("/v1/classify", headers=headers, **kwargs), 400, param)
    assert err["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    "body, param, words",
    [
        ({"prompt": []}, "prompt", "at least 1 item"),
        ({"prompt": [1, 2]}, "prompt.0", "valid string"),
        ({"prompt": ["a", ""]}, "prompt.1", "at least 1 character"),
        ({"prompt": "a", "stop": [""]}, "stop.0", "at least 1 character"),
        ({"prompt": "a", "stream_options": 3}, "stream_options", "valid dictionary"),
    ],
)
def test_union_errors_name_the_field_not_the_member(client, body, param, words):
    err = _is_error(client.post("/v1/completions", json=body, headers=AUTH), 400, param)
    assert words in err["message"]
    chat = {"messages": [{"role": "user", "content": [{"type": "image", "url": "x"}]}]}
    err = _is_error(client.post("/v1/chat/completions", json=chat, headers=AUTH), 400)
    assert err["param"].startswith("messages.0.content")


def test_errors_from_the_ingress_and_router(client):
    body = {"model": "nope", "context": "c", "question": "q"}
    _is_error(client.post("/v1/qa", json=body, headers=AUTH), 404, "model")
    chat = {"messages": [{"role": "user", "content": "hi"}]}
    resp = client.post("/v1/chat/completions", json=chat, headers=AUTH)
    assert _is_error(resp, 503)["type"] == "overloaded_error" and resp.headers["retry-after"]
    _is_error(client.get("/v1/nowhere", headers=AUTH), 404)
    _is_error(client.get("/v1/classify", headers=AUTH), 405)
    boom = client.post("/v1/classify", json={"model": "boom", "texts": ["a"]}, headers=AUTH)
    assert _is_error(boom, 500)["type"] == "server_error"  # a bug stays a 500, in the same shape


def test_sse_framing(client):
    body = {"model": "m", "prompt": "x", "stream": True}
    resp = client.post("/v1/completions", json=body, headers=AUTH)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = [e for e in resp.text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == "hello"
    assert chunks[-1]["usage"] == {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}


def test_no_token_means_open():
    open_client = TestClient(make_api(StandIn(None)))
    assert open_client.get("/v1/models").status_code == 200
    schema = open_client.get("/openapi.json").json()
    assert {"/v1/classify", "/v1/completions", "/v1/chat/completions", "/v1/qa"} <= set(
        schema["paths"]
    )


def test_a_configured_token_with_a_trailing_newline_still_matches(monkeypatch):
    """A token read from a file (`export RAYLM_SERVE_TOKEN=$(cat f)` keeps no newline, but
    secret mounts and `--env-file`s often do): the ingress hashes the configured token with
    the same stripping as the client's, so they compare equal."""
    from raylm.serve.api import token_digest

    assert token_digest("t0ken\n") == token_digest(" t0ken") == token_digest("t0ken")
    stand_in = StandIn(None)
    stand_in.token_sha256 = token_digest(f"{TOKEN}\n")  # as Ingress/build_application do
    client = TestClient(make_api(stand_in))
    assert client.get("/v1/models", headers=AUTH).status_code == 200
    assert client.get("/v1/models", headers={"Authorization": "Bearer other"}).status_code == 401


def _timing(resp) -> dict[str, float]:
    parts = (p.strip().split(";dur=") for p in resp.headers["server-timing"].split(","))
    return {name: float(ms) for name, ms in parts}


def test_every_response_says_what_the_model_and_the_ingress_took(client):
    resp = client.post("/v1/classify", json={"texts": ["a"]}, headers=AUTH)
    assert resp.status_code == 200
    timing = _timing(resp)
    assert 20.0 <= timing["model"] <= timing["ingress"], timing
    # Answers that await no model say so: a refusal, a probe, a stream's start.
    assert _timing(client.post("/v1/classify", json={"texts": ["a"]}))["model"] == 0.0  # 401
    assert _timing(client.get("/healthz"))["model"] == 0.0
    body = {"prompt": "p", "stream": True}
    assert "ingress" in _timing(client.post("/v1/completions", json=body, headers=AUTH))
