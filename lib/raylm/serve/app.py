"""Ray Serve application: one FastAPI ingress routing by model name to one deployment per model.

Locally (blocking; Ctrl-C stops):   raylm serve outputs/serve_demo --config examples/serve.yaml
Import path (serve run / deploy, KubeRay RayService):  raylm.serve.app:build_app
    serve run raylm.serve.app:build_app config=examples/serve.yaml models.demo=/abs/run/model
In Python:  url = deploy({"demo": "outputs/serve_demo/model"}, {"port": 8000})   (launch.py)

Endpoints (see /docs): POST /v1/classify, /v1/completions, /v1/chat/completions, /v1/qa;
GET /v1/models, /healthz (liveness), /readyz (models loaded), /openapi.json.
Overload past a model's `max_queued_requests` answers 503 with Retry-After, and so does a request
whose model replica died under it (Serve starts a replacement); see api.py for 401/413.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ray import serve
from ray.exceptions import RayActorError
from ray.serve.exceptions import (
    BackPressureError,
    DeploymentUnavailableError,
    ReplicaUnavailableError,
)

from raylm.configkit import ConfigError, set_dotted
from raylm.models.export import is_model_folder
from raylm.serve import openai_compat as oai
from raylm.serve.api import add_model_time, make_api, token_digest
from raylm.serve.models import ClassifierModel, ExtractorModel, GeneratorModel
from raylm.serve.schemas import (
    ApiError,
    ChatCompletionRequest,
    ClassifyRequest,
    CompletionRequest,
    GenParams,
    QARequest,
    ServeConfig,
    load_serve_config,
    read_serve_section,
)
from raylm.tasks import TASKS, get_task, task_of_model_dir

# The deployment that holds a model, by the task's `serve_with`.
DEPLOYMENTS = {
    "classifier": ClassifierModel,
    "generator": GeneratorModel,
    "extractor": ExtractorModel,
}
QA_SPAN_FIELDS = ("answer", "start", "end", "score", "windows")
QA_GENERATED_FIELDS = ("answer", "prompt_tokens", "completion_tokens", "finish_reason")
READY_TIMEOUT_S = 2.0
MIN_TEMPERATURE = 1e-3
# A model replica that died (or went unreachable) under a request: Serve starts a replacement,
# so the request is worth retrying. RayActorError covers ActorDiedError, ActorUnavailableError.
REPLICA_LOST = (RayActorError, ReplicaUnavailableError)


def _lost(err: BaseException) -> ApiError:
    msg = f"model replica lost mid-request ({type(err).__name__}), retry later"
    return ApiError(503, msg, "overloaded_error")


async def call(response: Any, timeout_s: float) -> Any:
    """Await a handle call, mapping Serve's overload and failure modes to API errors; the time
    awaited counts toward the request's Server-Timing `model` figure."""
    began = time.perf_counter()
    try:
        return await asyncio.wait_for(response, timeout_s)
    except BackPressureError as err:  # the model's queue is full: refuse at once
        raise ApiError(503, f"server overloaded, retry later ({err})", "overloaded_error") from None
    except DeploymentUnavailableError as err:
        raise ApiError(503, f"model unavailable, retry later ({err})", "overloaded_error") from None
    except REPLICA_LOST as err:
        raise _lost(err) from None
    except asyncio.TimeoutError:
        getattr(response, "cancel", lambda: None)()
        raise ApiError(504, f"no answer within {timeout_s:g} s", "timeout_error") from None
    except ApiError as err:  # raised in a model replica: arrives wrapped in RayTaskError
        cause = getattr(err, "cause", err)
        raise ApiError(cause.status, cause.message, cause.type, cause.param) from None
    finally:
        add_model_time(time.perf_counter() - began)


@serve.deployment
@serve.ingress()
class Ingress:
    def __init__(
        self,
        handles: dict[str, Any],
        tasks: dict[str, str],
        cfg: dict[str, Any],
        token_sha256: str | None = None,
    ):
        self.tasks = tasks
        self.cfg = ServeConfig.model_validate(cfg)
        # serve.colocate: the models live in this replica, called through the same interface.
        self.handles = handles or {n: _LocalModel(_load(self.cfg, n, t)) for n, t in tasks.items()}
        # The token may be set where the app was built (hashed into the args) or on this node.
        token = os.environ.get(self.cfg.auth_token_env)
        self.token_sha256 = token_sha256 or (token_digest(token) if token else None)
        self.infos: dict[str, dict[str, Any]] = {}
        self.created = int(time.time())

    def __serve_build_asgi_app__(self) -> Any:
        return make_api(self)

    # ------------------------------------------------------------------------------ helpers
    def _pick(self, name: str | None, endpoint: str) -> str:
        """The model that answers `endpoint`: the one named, else the first that can."""
        if name is None:
            for model, task in self.tasks.items():
                if endpoint in get_task(task).endpoints:
                    return model
            raise ApiError(400, f"no served model answers /{endpoint} (needs a {_kinds(endpoint)})")
        if name not in self.tasks:
            available = ", ".join(self.tasks) or "none"
            msg = f"model '{name}' not found (available: {available})"
            raise ApiError(404, msg, "not_found_error", "model")
        if endpoint not in get_task(self.tasks[name]).endpoints:
            msg = f"model '{name}' is a {self.tasks[name]} model; this endpoint needs a "
            raise ApiError(400, msg + _kinds(endpoint), param="model")
        return name

    def _check_texts(self, texts: list[str], param: str) -> None:
        limits = self.cfg.limits
        if len(texts) > limits.max_texts_per_request:
            msg = f"{len(texts)} items, over the limit of {limits.max_texts_per_request}"
            raise ApiError(400, msg, param=param)
        for i, text in enumerate(texts):
            if len(text) > limits.max_chars_per_text:
                msg = f"{len(text)} characters, over the limit of {limits.max_chars_per_text}"
                raise ApiError(400, msg, param=f"{param}.{i}")

    def _params(self, req: Any, max_tokens: int | None, default: int) -> GenParams:
        n = max_tokens or default
        if n > self.cfg.limits.max_new_tokens:
            msg = f"max_tokens {n} is over the limit of {self.cfg.limits.max_new_tokens}"
            raise ApiError(400, msg, param="max_tokens")
        temperature = 1.0 if req.temperature is None else req.temperature
        # Below this, sampling is greedy in effect, and logits / temperature would overflow.
        sample = temperature >= MIN_TEMPERATURE
        return GenParams(
            max_new_tokens=n,
            do_sample=sample,
            temperature=temperature if sample else 1.0,
            top_p=req.top_p or 1.0,
            seed=req.seed,
            stop=tuple(req.stop_list()),
        )

    async def _call(self, response: Any) -> Any:
        return await call(response, self.cfg.request_timeout_s)

    # ---------------------------------------------------------------------------- endpoints
    async def classify(self, req: ClassifyRequest) -> dict[str, Any]:
        name = self._pick(req.model, "classify")
        self._check_texts(req.texts, "texts")
        results = await self._call(self.handles[name].classify.remote(req.texts))
        return {"model": name, "results": results}

    async def complete(self, req: CompletionRequest) -> dict[str, Any]:
        name = self._pick(req.model, "complete")
        prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
        self._check_texts(prompts, "prompt")
        params = self._params(req, req.max_tokens, 16)
        outs = await self._call(self.handles[name].complete.remote(prompts, params))
        return oai.completion_body(name, outs)

    async def chat(self, req: ChatCompletionRequest) -> dict[str, Any]:
        name = self._pick(req.model, "complete")
        messages = self._messages(req)
        params = self._params(req, req.max_completion_tokens or req.max_tokens, self._chat_max())
        outs = await self._call(self.handles[name].complete.remote(None, params, messages))
        return oai.chat_body(name, outs[0])

    async def qa(self, req: QARequest) -> dict[str, Any]:
        name = self._pick(req.model, "qa")
        self._check_texts([req.context], "context")
        self._check_texts([req.question], "question")
        n = req.max_new_tokens or min(32, self.cfg.limits.max_new_tokens)
        if n > self.cfg.limits.max_new_tokens:
            msg = f"max_new_tokens {n} is over the limit of {self.cfg.limits.max_new_tokens}"
            raise ApiError(400, msg, param="max_new_tokens")
        params = GenParams(max_new_tokens=n)
        answer = self.handles[name].answer
        out = await self._call(
            answer.remote(req.context, req.question, params, req.constrain_to_context)
        )
        # A span (extractive model) or generated text; the response has the fields of its kind.
        keys = QA_SPAN_FIELDS if "start" in out else QA_GENERATED_FIELDS
        return {"model": name, **{k: out[k] for k in keys}}

    async def stream(self, req: Any, chat: bool):
        """Start a streamed generation; errors before the first token become plain 4xx/503."""
        name = self._pick(req.model, "complete")
        if chat:
            messages, prompt = self._messages(req), None
            max_tokens = req.max_completion_tokens or req.max_tokens
            params = self._params(req, max_tokens, self._chat_max())
        else:
            if not isinstance(req.prompt, str) and len(req.prompt) != 1:
                raise ApiError(400, "streaming takes a single prompt", param="prompt")
            prompt = req.prompt if isinstance(req.prompt, str) else req.prompt[0]
            messages = None
            self._check_texts([prompt], "prompt")
            params = self._params(req, req.max_tokens, 16)
        gen = self.handles[name].options(stream=True).stream.remote(prompt, params, messages)
        first = await self._call(gen.__anext__())
        usage = bool(req.stream_options and req.stream_options.include_usage)
        return oai.stream_chunks(_rest(gen), name, first["prompt_tokens"], chat, usage)

    def _messages(self, req: ChatCompletionRequest) -> list[dict[str, str]]:
        messages = [{"role": m.role, "content": m.text()} for m in req.messages]
        self._check_texts([m["content"] for m in messages], "messages")
        return messages

    def _chat_max(self) -> int:
        return min(256, self.cfg.limits.max_new_tokens)

    async def list_models(self) -> dict[str, Any]:
        await self.ready()
        cards = [
            {
                "id": name,
                "object": "model",
                "created": self.created,
                "owned_by": "raylm",
                "task": task,
                "labels": self.infos.get(name, {}).get("labels"),
            }
            for name, task in self.tasks.items()
        ]
        return {"object": "list", "data": cards}

    async def ready(self) -> dict[str, str]:
        """Ask each model replica once (cached after it answers); 503 while any is loading."""
        missing = [n for n in self.tasks if n not in self.infos]
        calls = [call(self.handles[n].info.remote(), READY_TIMEOUT_S) for n in missing]
        answers = await asyncio.gather(*calls, return_exceptions=True)
        for name, res in zip(missing, answers, strict=True):
            if isinstance(res, dict):
                self.infos[name] = res
        loading = [n for n in self.tasks if n not in self.infos]
        if loading:
            raise ApiError(503, f"models not ready: {', '.join(loading)}", "not_ready")
        return dict(self.tasks)


class _LocalModel:
    """A model object in the ingress replica, called like its deployment handle would be:
    `.method.remote(...)` gives an awaitable (or, for a streaming method, an async iterator)."""

    def __init__(self, obj: Any):
        self._obj = obj

    def options(self, **_: Any) -> _LocalModel:
        return self

    def __getattr__(self, method: str) -> Any:
        fn = getattr(self._obj, method)
        if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
            return SimpleNamespace(remote=fn)
        return SimpleNamespace(remote=lambda *args, **kwargs: _value(fn(*args, **kwargs)))


async def _value(x: Any) -> Any:
    return x


def _kinds(endpoint: str) -> str:
    """The tasks whose models answer `endpoint`, for error messages."""
    return " or ".join(n for n, t in TASKS.items() if endpoint in t.endpoints) + " model"


def model_deployment(cfg: ServeConfig, name: str, task: str) -> tuple[Any, tuple]:
    """The Serve deployment for a model of `task` and its constructor arguments."""
    path, batch = str(cfg.models[name]), cfg.batch.model_dump()
    serve_with = get_task(task).serve_with
    if serve_with is None:
        raise ValueError(
            f"serve.models.{name}: {path} is a {task} model, which Serve has no endpoint for; "
            "fine-tune it (model.path) for a task that has one"
        )
    deployment = DEPLOYMENTS[serve_with]
    return deployment, (name, path, batch, cfg.limits.model_dump(), task)


def _load(cfg: ServeConfig, name: str, task: str) -> Any:
    """The model built in this process: what its deployment's replica would build."""
    deployment, args = model_deployment(cfg, name, task)
    return deployment.func_or_class(*args)


async def _rest(gen: Any) -> Any:
    """The rest of a replica's stream, a lost replica surfacing as an in-band 503 error."""
    try:
        async for item in gen:
            yield item
    except (BackPressureError, DeploymentUnavailableError) as err:
        raise ApiError(503, f"model replica unavailable ({err})", "overloaded_error") from None
    except REPLICA_LOST as err:
        raise _lost(err) from None


# --------------------------------------------------------------------------------- building
def model_task(path: str | Path, name: str = "?") -> str:
    """The task of the exported folder `serve.models.<name>` (ConfigError if it is none)."""
    if not is_model_folder(path):
        raise ConfigError(
            f"serve.models.{name}: {path} is not an exported model "
            "(no config.json, no adapter_config.json)"
        )
    return task_of_model_dir(path)


def replica_options(cfg: ServeConfig) -> dict[str, Any]:
    """`Deployment.options` of the deployment holding the models: replicas or autoscaling,
    queue limits, resources."""
    opts: dict[str, Any] = {
        "max_ongoing_requests": cfg.max_ongoing_requests,
        "max_queued_requests": cfg.max_queued_requests,
        "ray_actor_options": {"num_cpus": cfg.num_cpus, "num_gpus": cfg.num_gpus},
    }
    if cfg.autoscaling is not None:
        opts["autoscaling_config"] = cfg.autoscaling.model_dump()
    else:
        opts["num_replicas"] = cfg.num_replicas
    return opts


def model_options(cfg: ServeConfig, name: str) -> dict[str, Any]:
    """`Deployment.options` for one model's own deployment."""
    return {"name": f"model_{name}", **replica_options(cfg)}


def build_application(cfg: ServeConfig) -> Any:
    """The bound Serve application for a validated config."""
    if not cfg.models:
        raise ConfigError("serve.models: no models to serve (give MODEL_DIR or serve.models)")
    tasks = {name: model_task(path, name) for name, path in cfg.models.items()}
    token = os.environ.get(cfg.auth_token_env)
    args = (tasks, cfg.model_dump(mode="json"), token_digest(token) if token else None)
    if cfg.colocate:  # one deployment: the ingress holds the models (see Ingress.__init__)
        return Ingress.options(**replica_options(cfg)).bind({}, *args)
    handles = {}
    for name, task in tasks.items():
        deployment, init_args = model_deployment(cfg, name, task)
        handles[name] = deployment.options(**model_options(cfg, name)).bind(*init_args)
    ingress = Ingress.options(
        max_ongoing_requests=cfg.ingress_max_ongoing_requests,
        # The ingress only awaits handles: let it queue as much as it runs, so overload is
        # refused by the model deployments' queues (JSON 503) rather than by the proxy (text).
        max_queued_requests=cfg.ingress_max_ongoing_requests,
        ray_actor_options={"num_cpus": 0},
    )
    return ingress.bind(handles, *args)


def build_app(args: dict[str, Any]) -> Any:
    """Application builder for `serve run`/`serve deploy`/RayService; args = a `serve:` mapping.

    `config: FILE` reads a recipe's serve section (or a bare serve YAML) first; dotted keys, as
    `serve run` passes them (`models.sentiment=/abs/model port=8001`), set nested fields.
    """
    args = dict(args)
    merged = read_serve_section(args.pop("config", None))
    for key, value in args.items():
        set_dotted(merged, key, value, where=f"build_app args: '{key}'")
    return build_application(load_serve_config(merged, source="build_app args"))
