"""ServeConfig validation (errors name the field), request models, OpenAI body shapes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pydantic import ValidationError

from raylm.recipe import ConfigError, load_config
from raylm.serve import openai_compat as oai
from raylm.serve.schemas import (
    ApiError,
    ChatCompletionRequest,
    ClassifyRequest,
    CompletionRequest,
    QARequest,
    ServeConfig,
    load_serve_config,
)

ROOT = Path(__file__).resolve().parents[3]


def test_defaults_bind_loopback():
    cfg = load_serve_config(None)
    assert cfg.host == "127.0.0.1" and cfg.auth_token_env == "RAYLM_SERVE_TOKEN"
    assert cfg.num_replicas == 1 and cfg.autoscaling is None
    assert cfg.limits.max_body_bytes > 0 and cfg.batch.max_batch_size >= 1
    assert cfg.ingress == "direct" and cfg.colocate  # the measured-fastest loopback layout


@pytest.mark.parametrize(
    "raw, field",
    [
        ({"port": 0}, "serve.port"),
        ({"batch": {"max_batch_size": 0}}, "serve.batch.max_batch_size"),
        ({"limits": {"max_new_tokens": -1}}, "serve.limits.max_new_tokens"),
        ({"autoscaling": {"min_replicas": 3, "max_replicas": 2}}, "serve.autoscaling"),
        ({"replicas": 2, "autoscaling": {}}, "replicas"),
        ({"models": {"bad name": "/x"}}, "serve.models.bad name"),
        ({"auth_token_env": "not-an-env"}, "serve.auth_token_env"),
        ({"max_queued_requests": 0}, "max_queued_requests"),
        ({"route_prefix": "api"}, "serve.route_prefix"),
        ({"limts": {}}, "serve.limts"),
        ({"ingress": "nginx"}, "serve.ingress"),
    ],
)
def test_bad_config_names_the_field(raw, field):
    with pytest.raises(ConfigError) as err:
        load_serve_config(raw, source="x.yaml")
    assert field in str(err.value) and "x.yaml" in str(err.value)


def test_not_a_mapping():
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_serve_config(["port"])  # type: ignore[arg-type]


def test_example_serve_yaml_is_a_recipe_with_a_valid_serve_section():
    cfg = load_config(ROOT / "examples" / "serve.yaml")
    serve_cfg = load_serve_config(cfg.serve, source="examples/serve.yaml")
    assert serve_cfg.host == "127.0.0.1"
    assert isinstance(serve_cfg, ServeConfig)


@pytest.mark.parametrize(
    "body",
    [
        {"texts": []},
        {"texts": [""]},
        {"texts": "one"},
        {"texts": [1]},
        {"texts": ["\ud800"]},
        {"texts": ["a"], "extra": 1},
        {},
    ],
)
def test_classify_request_rejects(body):
    with pytest.raises(ValidationError):
        ClassifyRequest.model_validate(body)


def test_openai_requests_ignore_unknown_fields_and_bound_values():
    req = CompletionRequest.model_validate({"prompt": "hi", "model": "m", "user": "u"})
    assert req.prompt == "hi" and req.stream is False
    for bad in ({"prompt": "hi", "n": 2}, {"prompt": "hi", "temperature": 3}, {"prompt": [1, 2]}):
        with pytest.raises(ValidationError):
            CompletionRequest.model_validate(bad)
    with pytest.raises(ApiError):
        CompletionRequest(prompt="x", stop=["a", "b", "c", "d", "e"]).stop_list()
    chat = ChatCompletionRequest.model_validate(
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}
    )
    assert chat.messages[0].text() == "hi"
    with pytest.raises(ValidationError):
        ChatCompletionRequest.model_validate({"messages": []})
    with pytest.raises(ValidationError):
        QARequest.model_validate({"context": "c", "question": ""})


def test_api_error_survives_pickling():
    import pickle

    err = pickle.loads(pickle.dumps(ApiError(404, "nope", "not_found_error", "model")))
    assert (err.status, err.param) == (404, "model")
    assert err.body() == {"error": {"message": "nope", "type": "not_found_error", "param": "model"}}


def test_openai_bodies_and_stream_chunks():
    outs = [{"text": "ab", "prompt_tokens": 3, "completion_tokens": 2, "finish_reason": "length"}]
    body = oai.completion_body("m", outs)
    assert body["object"] == "text_completion" and body["choices"][0]["text"] == "ab"
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    chat = oai.chat_body("m", outs[0])
    assert chat["choices"][0]["message"] == {"role": "assistant", "content": "ab"}

    async def items():
        for item in ["a", "b", {"finish_reason": "stop", "completion_tokens": 2}]:
            yield item

    async def collect():
        return [c async for c in oai.stream_chunks(items(), "m", 3, chat=True, with_usage=True)]

    chunks = asyncio.run(collect())
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1]) == "ab"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 5
    assert len({c["id"] for c in chunks}) == 1
