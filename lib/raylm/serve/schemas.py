"""Serve settings (`ServeConfig`: a recipe's `serve:` section) and the HTTP request/response models.

    cfg = load_serve_config({"models": {"sentiment": "outputs/sentiment_zh/model"}, "port": 8000})
    section = read_serve_section("examples/serve.yaml")   # a recipe's serve: mapping, or a bare one

A bad section raises `ConfigError` naming the field (`serve.batch.max_batch_size: ...`). Pure
pydantic: no Ray, torch or FastAPI import, so the recipe schema (`Config.serve`), the
deployments, the command and unit tests share it. The bottom of serve's one-way chain:
cli (the command) -> launch -> app -> api / models -> schemas.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from raylm.configkit import ConfigError, StrictModel, read_yaml, validate

RECIPE_KEYS = ("data", "model", "train", "run", "tune", "serve")


# ------------------------------------------------------------------------------------- config
ModelName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


class AutoscalingConfig(StrictModel):
    """Serve's request-based autoscaling for every model deployment (replaces `replicas`)."""

    min_replicas: int = Field(1, ge=0, description="Fewest replicas (0 scales to zero).")
    max_replicas: int = Field(2, ge=1, description="Most replicas.")
    target_ongoing_requests: float = Field(
        2.0, gt=0, description="Ongoing requests per replica that autoscaling aims for."
    )

    @model_validator(mode="after")
    def _range(self) -> AutoscalingConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) > max_replicas ({self.max_replicas})"
            )
        return self


class BatchConfig(StrictModel):
    """`@serve.batch` dynamic batching inside each model replica."""

    max_batch_size: int = Field(16, ge=1, le=1024, description="Most items run together.")
    batch_wait_timeout_s: float = Field(
        0.01,
        ge=0,
        le=10,
        description="Longest wait for a batch to fill while other requests are in flight "
        "(a lone request does not wait).",
    )


class LimitsConfig(StrictModel):
    """Per-request limits; a request past one gets a 4xx naming the field."""

    max_texts_per_request: int = Field(64, ge=1, description="Texts (or prompts) per request.")
    max_chars_per_text: int = Field(4000, ge=1, description="Characters per text or message.")
    max_prompt_tokens: int = Field(1024, ge=1, description="Tokens in a generation prompt.")
    max_new_tokens: int = Field(256, ge=1, description="Cap on max_tokens / max_new_tokens.")
    max_body_bytes: int = Field(1_000_000, ge=256, description="Request body size (else 413).")


class ServeConfig(StrictModel):
    models: dict[ModelName, str] = Field(
        default_factory=dict, description="Model name -> exported model folder (<run>/model)."
    )
    app_name: ModelName = Field("raylm", description="Serve application name.")
    host: str = Field("127.0.0.1", min_length=1, description="HTTP bind address (loopback).")
    port: int = Field(8000, ge=1, le=65535, description="HTTP port.")
    route_prefix: str = Field("/", pattern=r"^/[A-Za-z0-9_./-]*$", description="URL prefix.")
    replicas: int | None = Field(None, ge=1, description="Fixed replicas per model (default 1).")
    autoscaling: AutoscalingConfig | None = Field(None, description="Autoscale instead.")
    max_ongoing_requests: int = Field(32, ge=1, description="Concurrent requests per replica.")
    max_queued_requests: int = Field(
        64, ge=-1, description="Requests waiting per model beyond that (-1: no limit); then 503."
    )
    ingress_max_ongoing_requests: int = Field(
        256, ge=1, description="Concurrent requests in the HTTP ingress replica."
    )
    colocate: bool = Field(
        True,
        description="Load the models inside the HTTP ingress replica: one hop fewer per request "
        "and batches that fill (the measured-fastest layout); replicas, queue and resource "
        "settings then apply to that one deployment. False: a deployment per model behind the "
        "ingress, for models that need other hardware or scale apart from the HTTP layer.",
    )
    ingress: Literal["direct", "haproxy", "proxy"] = Field(
        "direct",
        description="How HTTP reaches the app in a Ray that `raylm serve` starts: `direct` "
        "(each ingress replica also answers on its own port on `host`, skipping Ray's proxy: "
        "the fastest), `haproxy` (HAProxy on `port` in front of those ports; its stats and "
        "metrics ports listen on every interface), `proxy` (Ray's proxy only). A running "
        "cluster keeps the layout it was started with (raylm.serve.launch.INGRESS_ENV).",
    )
    request_timeout_s: float = Field(60, gt=0, description="Per-request deadline (then 504).")
    startup_timeout_s: float = Field(
        900,
        gt=0,
        description="Give up (and remove the app) if its replicas are not all running by then: "
        "enough for an autoscaler to add a GPU node, short of waiting forever on one that never "
        "comes.",
    )
    num_cpus: float = Field(1, ge=0, description="CPUs reserved per model replica.")
    num_gpus: float = Field(0, ge=0, description="GPUs reserved per model replica.")
    batch: BatchConfig = Field(default_factory=BatchConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    auth_token_env: str = Field(
        "RAYLM_SERVE_TOKEN",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Env var holding a bearer token; when set, requests must carry it.",
    )

    @model_validator(mode="after")
    def _checks(self) -> ServeConfig:
        if self.replicas is not None and self.autoscaling is not None:
            raise ValueError("set either `replicas` or `autoscaling`, not both")
        if self.max_queued_requests == 0:
            raise ValueError("max_queued_requests must be -1 (no limit) or >= 1")
        return self

    @property
    def num_replicas(self) -> int:
        return self.replicas or 1


def load_serve_config(
    raw: dict[str, Any] | ServeConfig | None, source: str = "<serve config>"
) -> ServeConfig:
    """Validate a `serve:` mapping (or a recipe's typed `Config.serve`). Raises ConfigError
    naming each bad field as `serve.<field>`."""
    if isinstance(raw, ServeConfig):
        raw = raw.model_dump()
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"{source}: `serve` must be a mapping, got {type(raw).__name__}")
    return validate(ServeConfig, raw or {}, source, prefix="serve")


def read_serve_section(path: str | Path | None) -> dict[str, Any]:
    """The `serve:` mapping of a recipe YAML, or the whole file when it is a bare serve config."""
    if path is None:
        return {}
    raw = read_yaml(path)
    if any(key in raw for key in RECIPE_KEYS):
        section = raw.get("serve") or {}
        if not isinstance(section, dict):
            raise ConfigError(f"{path}: `serve` must be a mapping")
        return section
    return raw


def http_options(cfg: ServeConfig) -> dict[str, Any]:
    """Serve's HTTP options; the proxy's own deadline is a backstop a little past the 504."""
    return {"host": cfg.host, "port": cfg.port, "request_timeout_s": cfg.request_timeout_s + 5}


# ------------------------------------------------------------------------------------- errors
class ServeStartupError(RuntimeError):
    """The application did not reach RUNNING: a replica failed to start, or
    `serve.startup_timeout_s` passed with replicas still waiting (e.g. for a node that fits)."""


class ApiError(Exception):
    """An error with an HTTP status and an OpenAI-style body; raised anywhere, answered as JSON."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
    ):
        # All arguments go to Exception so the error pickles across Ray processes unchanged.
        super().__init__(status, message, type, param)
        self.status, self.message, self.type, self.param = status, message, type, param

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param}}


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorInfo


# ----------------------------------------------------------------------------------- requests
def _utf8(text: str) -> str:
    # JSON may carry lone surrogates ("\ud800"); tokenizers cannot encode them.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text is not valid Unicode (lone surrogate)") from None
    return text


Text = Annotated[str, StringConstraints(min_length=1), AfterValidator(_utf8)]
AnyText = Annotated[str, AfterValidator(_utf8)]


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool | None = False


class _OpenAIRequest(BaseModel):
    # OpenAI clients send fields we do not use (user, logprobs, penalties...): ignore them.
    model_config = ConfigDict(extra="ignore")

    model: AnyText | None = Field(None, description="Model name (default: the first fitting one).")
    max_tokens: int | None = Field(
        None,
        ge=1,
        description="Tokens to generate (default: 16 for completions; chat: 256 or "
        "serve.limits.max_new_tokens if lower).",
    )
    temperature: float | None = Field(None, ge=0, le=2, description="0: greedy (default 1).")
    top_p: float | None = Field(None, gt=0, le=1, description="Nucleus sampling mass.")
    n: int | None = Field(None, ge=1, le=1, description="Choices per prompt (only 1).")
    stream: bool | None = Field(False, description="Answer as server-sent events.")
    stream_options: StreamOptions | None = None
    seed: int | None = Field(None, ge=0, le=2**63 - 1, description="Sampling seed.")
    stop: AnyText | list[Text] | None = Field(None, description="Stop strings (up to 4).")

    def stop_list(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > 4:
            raise ApiError(400, "at most 4 stop strings", param="stop")
        return [s for s in stops if s]


class CompletionRequest(_OpenAIRequest):
    prompt: Text | Annotated[list[Text], Field(min_length=1)] = Field(
        ..., description="A prompt or a list of prompts."
    )


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: AnyText


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant"]
    content: AnyText | list[TextPart]

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatCompletionRequest(_OpenAIRequest):
    messages: list[ChatMessage] = Field(..., min_length=1, description="The conversation.")
    max_completion_tokens: int | None = Field(None, ge=1, description="Alias of max_tokens.")


class ClassifyRequest(StrictModel):
    model: AnyText | None = Field(None, description="Model name (default: the first classifier).")
    texts: list[Text] = Field(..., min_length=1, description="Texts to classify.")


class QARequest(StrictModel):
    model: AnyText | None = Field(
        None,
        description="Model name (default: the first model answering /v1/qa: causal_lm, qa "
        "or extractive_qa).",
    )
    context: Text = Field(..., description="Passage that holds the answer.")
    question: Text = Field(..., description="Question about the passage.")
    constrain_to_context: bool = Field(
        False,
        description="A generative model may only answer with a span of the context "
        "(an extractive one always does).",
    )
    max_new_tokens: int | None = Field(
        None,
        ge=1,
        description="Answer length cap of a generative model (default: 32, or "
        "serve.limits.max_new_tokens); an extractive one uses its own data.qa.max_answer_chars.",
    )


class GenParams(BaseModel):
    """What a model replica needs to generate; grouped by value inside a batch."""

    model_config = ConfigDict(frozen=True)

    max_new_tokens: int
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------- responses
class ClassifyResult(BaseModel):
    label: str
    label_id: int
    score: float
    probabilities: dict[str, float]


class ClassifyResponse(BaseModel):
    model: str
    results: list[ClassifyResult]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: None = None
    finish_reason: str | None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: str | None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class QAResponse(BaseModel):
    """A generative model's answer (token counts, finish reason) or an extractive model's span
    of the context (offsets: context[start:end] == answer, score, windows read)."""

    model: str
    answer: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    start: int | None = None
    end: int | None = None
    score: float | None = None
    windows: int | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "raylm"
    task: str
    labels: list[str] | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
