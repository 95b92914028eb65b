"""Model deployments: one per exported model folder, called by the ingress through handles.

`ClassifierModel` wraps the offline evaluator (`ClassifierPredictor`), so served labels are the
labels `raylm evaluate` computes. `GeneratorModel` wraps `raylm.generate` for causal LMs and QA.
Both batch with `@serve.batch` (sizes from `serve.batch`) and run torch in a worker thread, so the
replica's event loop keeps filling the next batch while one computes.

A stream whose client went away is cancelled by Serve (asyncio.CancelledError at its next await),
and its generation stops before its next token (`WorkMeter`); `GeneratorModel.stats()` and the
Ray metrics `raylm_serve_tokens_computed` / `raylm_serve_active_generations` show what runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
from collections.abc import AsyncIterator
from typing import Any

from ray import serve

from raylm.data.qa import DEFAULT_TEMPLATE, build_prompt_parts, render_prompt
from raylm.models.export import read_model_meta
from raylm.serve.schemas import ApiError, GenParams


async def _in_thread(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run torch work off the event loop. Grad mode is per thread: switch it off in the worker."""

    def run() -> Any:
        import torch

        with torch.inference_mode():
            return fn(*args, **kwargs)

    return await asyncio.to_thread(run)


class AdaptiveBatchWait:
    """Batch waiting only when there is company to wait for.

    `@serve.batch` holds every batch's first item for `batch_wait_timeout_s`, even when no other
    request is in flight, so a lone request pays the whole wait. Here the wait applies only while
    other items are in flight in this replica; a lone one dispatches at once.
    """

    def __init__(self, batched: Any, batch: dict[str, Any]):
        self.batched, self.wait_s, self.items = batched, batch["batch_wait_timeout_s"], 0
        batched.set_max_batch_size(batch["max_batch_size"])

    @contextlib.contextmanager
    def track(self, items: int) -> Any:
        self.items += items
        self.batched.set_batch_wait_timeout_s(self.wait_s if self.items > 1 else 0.0)
        try:
            yield
        finally:
            self.items -= items


def _work_metrics() -> tuple[Any, Any] | None:
    """Ray metrics (Prometheus) of a generator replica; None outside a Ray worker."""
    import ray

    if not ray.is_initialized():
        return None
    from ray.serve.metrics import Counter, Gauge

    tokens = Counter(
        "raylm_serve_tokens_computed", description="tokens computed (one per row per forward)"
    )
    active = Gauge("raylm_serve_active_generations", description="generations in progress")
    return tokens, active


class GenerationStopped(Exception):
    """Raised in a forward pass of a generation whose stream was cancelled (its client left)."""


class WorkMeter:
    """What a generator replica computes, seen from inside the model: generations in progress,
    tokens computed, and a stop for the generations of cancelled streams.

    The count and the stop are forward hooks, run once per forward pass (one token per row): the
    count sees what was computed, whatever reached a client; the stop ends a cancelled stream's
    generation before its next token. The check is needed because one step of `stream_generate`
    runs until it has text to send, and a byte-level model can emit thousands of tokens that
    complete no character: that step would run on in its worker thread after the client left.
    Read by `GeneratorModel.stats()`; exported as Ray metrics (`raylm_serve_tokens_computed`,
    `raylm_serve_active_generations`).
    """

    def __init__(self, model: Any):
        self.tokens, self.active = 0, 0
        self._lock, self._local = threading.Lock(), threading.local()
        self._metrics = _work_metrics()
        model.register_forward_pre_hook(self._check_stop)
        model.register_forward_hook(self._count)

    def _check_stop(self, _module: Any, _args: Any) -> None:
        stop = getattr(self._local, "stop", None)
        if stop is not None and stop.is_set():
            raise GenerationStopped("the stream was cancelled: its client went away")

    def _count(self, _module: Any, _args: Any, output: Any) -> None:
        rows = int(output.logits.shape[0])
        with self._lock:  # forwards run in worker threads, several streams at once
            self.tokens += rows
        if self._metrics:
            self._metrics[0].inc(rows)

    def watched(self, stop: threading.Event, fn: Any, *args: Any) -> Any:
        """`fn(*args)` in this (worker) thread, its forward passes refused once `stop` is set."""
        self._local.stop = stop
        try:
            return fn(*args)
        finally:
            self._local.stop = None

    @contextlib.contextmanager
    def generating(self, n: int = 1) -> Any:
        """Count `n` generations as in progress while the block runs (event-loop side)."""
        self._set_active(n)
        try:
            yield
        finally:
            self._set_active(-n)

    def _set_active(self, delta: int) -> None:
        self.active += delta
        if self._metrics:
            self._metrics[1].set(self.active)

    def stats(self) -> dict[str, int]:
        return {"active_generations": self.active, "tokens_computed": self.tokens}


def _labels(meta: dict[str, Any], config: Any) -> list[str]:
    id2label = {int(k): str(v) for k, v in (meta.get("id2label") or {}).items()}
    if not id2label:
        id2label = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
    return [id2label.get(i, f"LABEL_{i}") for i in range(config.num_labels)]


@serve.deployment
class ClassifierModel:
    def __init__(self, name: str, path: str, batch: dict[str, Any], limits: dict, task: str):
        """Same arguments as GeneratorModel; the ingress checks a classify request's limits."""
        from raylm.eval.predict import ClassifierPredictor

        meta = read_model_meta(path)
        self.predictor = ClassifierPredictor(path, max_length=meta.get("max_length") or 512)
        config_len = int(getattr(self.predictor.model.config, "max_position_embeddings", 512))
        # A text longer than the position table would crash the model: truncate to fit.
        self.predictor.max_length = min(self.predictor.max_length, config_len)
        self.name, self.task = name, task
        self.labels = _labels(meta, self.predictor.model.config)
        self.batch_wait = AdaptiveBatchWait(self._score, batch)

    @serve.batch
    async def _score(self, texts: list[str]) -> list[list[float]]:
        _, probs = await _in_thread(self.predictor.predict_texts, texts)
        return probs.tolist()

    async def classify(self, texts: list[str]) -> list[dict[str, Any]]:
        """Per text: label, label_id, score and every class's probability."""
        # One item per text, so `max_batch_size` counts texts across concurrent requests.
        with self.batch_wait.track(len(texts)):
            rows = await asyncio.gather(*(self._score(t) for t in texts))
        out = []
        for probs in rows:
            best = max(range(len(probs)), key=probs.__getitem__)
            out.append(
                {
                    "label": self.labels[best],
                    "label_id": best,
                    "score": probs[best],
                    "probabilities": dict(zip(self.labels, probs, strict=True)),
                }
            )
        return out

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "task": self.task, "labels": self.labels}


@serve.deployment
class ExtractorModel:
    """An extractive-QA model: `/v1/qa` answers with a span of the given context, its character
    offsets and score. A context longer than the model's window is cut into overlapping windows
    (raylm.span_reader), never truncated."""

    def __init__(self, name: str, path: str, batch: dict[str, Any], limits: dict, task: str):
        from raylm.span_reader import SpanReader

        self.reader = SpanReader(path)
        config_len = int(getattr(self.reader.model.config, "max_position_embeddings", 512))
        self.reader.max_length = min(self.reader.max_length, config_len)
        self.name, self.task = name, task
        self.batch_wait = AdaptiveBatchWait(self._answer, batch)

    @serve.batch
    async def _answer(self, pairs: list[tuple[str, str]]) -> list[dict[str, Any]]:
        questions, contexts = [q for _, q in pairs], [c for c, _ in pairs]
        answers = await _in_thread(self.reader.answer, questions, contexts)
        return [dataclasses.asdict(a) for a in answers]

    async def answer(
        self, context: str, question: str, params: Any = None, constrain: bool = True
    ) -> dict[str, Any]:
        """The best span: answer, start, end (context[start:end] == answer), score, windows.
        (A span is always on the page: `constrain` is for generative models.)"""
        for field, text in (("context", context), ("question", question)):
            if not text.strip():
                raise ApiError(400, f"{field} is empty (whitespace only)", param=field)
        with self.batch_wait.track(1):
            found = await self._answer((context, question))
        return {"answer": found["text"], **{k: found[k] for k in SPAN_KEYS}}

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "task": self.task, "labels": None}


SPAN_KEYS = ("start", "end", "score", "windows")


def _apply_stop(text: str, stops: tuple[str, ...]) -> tuple[str, bool]:
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class StopHoldBack:
    """Streamed text with stop strings: `feed(piece)` returns the text that is safe to send now.

    A stop string can arrive split over several pieces, so the last `len(longest stop) - 1`
    characters are held back until the next piece shows they are not its start; once a stop
    string appears, the text before it is released and `hit` is set (send nothing after it)."""

    def __init__(self, stops: tuple[str, ...]):
        self.stops, self.pending, self.sent, self.hit = stops, "", "", False
        self.held = max((len(s) for s in stops), default=1) - 1

    def feed(self, piece: str) -> str:
        text, self.hit = _apply_stop(self.pending + piece, self.stops)
        ready = text if self.hit else text[: len(text) - self.held]
        self.pending = "" if self.hit else text[len(ready) :]
        self.sent += ready
        return ready


def _advance(gen: Any) -> tuple[str, Any]:
    """One step of a generator: ("piece", value) or ("done", its return value)."""
    try:
        return "piece", next(gen)
    except StopIteration as stop:
        return "done", stop.value


def _chat_prompt(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    if getattr(tokenizer, "chat_template", None):
        try:
            return tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        except Exception as err:  # templates raise on what they refuse (e.g. role order)
            msg = f"the model's chat template refused the messages: {err}"
            raise ApiError(400, msg, param="messages") from None
    # Models trained by raylm have no chat template: a plain transcript ending on the answer turn.
    lines = [f"{m['role']}: {m['content']}" for m in messages]
    return "\n".join([*lines, "assistant:"])


@serve.deployment
class GeneratorModel:
    def __init__(
        self, name: str, path: str, batch: dict[str, Any], limits: dict[str, Any], task: str
    ):
        import torch
        from transformers import AutoTokenizer

        from raylm.models.export import load_model

        torch.set_grad_enabled(False)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        # Ray hides GPUs from replicas that reserve none (serve.num_gpus: 0): CPU then.
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = load_model(path, "AutoModelForCausalLM").to(device).eval()
        self.meta = read_model_meta(path)
        self.task = task
        # The length `generate` checks against (GPT-2's n_positions under its generic name).
        self.context = int(getattr(self.model.config, "max_position_embeddings", 1024))
        self.template = self.meta.get("prompt_template") or DEFAULT_TEMPLATE
        render_prompt(self.template, "", "")  # a bad stored template fails at load, not per call
        self.name, self.limits = name, limits
        self.batch_wait = AdaptiveBatchWait(self._generate, batch)
        self.meter = WorkMeter(self.model)

    def _tokens(self, text: str, specials: bool = False) -> int:
        return len(self.tokenizer(text, add_special_tokens=specials)["input_ids"])

    def _count(self, prompt: str, params: GenParams, param: str) -> int:
        """Prompt tokens, counted as `generate` counts them; 400 when over a limit."""
        n = self._tokens(prompt, specials=True)
        if n == 0:
            raise ApiError(400, "the prompt encodes to no tokens", param=param)
        if n > self.limits["max_prompt_tokens"]:
            raise ApiError(
                400,
                f"prompt has {n} tokens, over the limit of {self.limits['max_prompt_tokens']}",
                param=param,
            )
        if n + params.max_new_tokens > self.context:
            raise ApiError(
                400,
                f"prompt ({n} tokens) + max_tokens ({params.max_new_tokens}) exceeds the "
                f"model's context of {self.context} tokens",
                param=param,
            )
        return n

    @serve.batch
    async def _generate(
        self, items: list[tuple[str, GenParams, str | None]]
    ) -> list[dict[str, Any]]:
        """Items: (prompt, params, the context the answer must be a span of, or None)."""
        from raylm.constrain import ContextConstraint
        from raylm.generate import generate

        # One generate() call per distinct setting; a seeded request runs alone (own RNG stream).
        groups: dict[Any, list[int]] = {}
        for i, (_, p, _) in enumerate(items):
            groups.setdefault(p if p.seed is None else (p, i), []).append(i)
        out: list[dict[str, Any]] = [{}] * len(items)
        for idx in groups.values():
            p = items[idx[0]][1]
            spans = [items[i][2] for i in idx]
            rules = [None if c is None else ContextConstraint.of(self.tokenizer, c) for c in spans]
            results = await _in_thread(
                generate,
                self.model,
                self.tokenizer,
                [items[i][0] for i in idx],
                p.max_new_tokens,
                do_sample=p.do_sample,
                temperature=p.temperature,
                top_p=p.top_p,
                seed=p.seed,
                constraints=rules if any(r is not None for r in rules) else None,
            )
            for i, r in zip(idx, results, strict=True):
                text, hit = _apply_stop(r.text, p.stop)
                out[i] = {
                    "text": text,
                    "prompt_tokens": r.prompt_tokens,
                    "completion_tokens": r.completion_tokens,
                    "finish_reason": "stop" if hit else r.finish_reason,
                }
        return out

    async def complete(
        self, prompts: list[str] | None, params: GenParams, messages: list | None = None
    ) -> list[dict[str, Any]]:
        """Generate for each prompt (or for the chat `messages`); batched across requests."""
        if messages is not None:
            prompts = [_chat_prompt(self.tokenizer, messages)]
        for i, prompt in enumerate(prompts):
            self._count(prompt, params, "messages" if messages else f"prompt.{i}")
        with self.batch_wait.track(len(prompts)), self.meter.generating(len(prompts)):
            calls = (self._generate((p, params, None)) for p in prompts)
            return list(await asyncio.gather(*calls))

    async def stream(
        self, prompt: str | None, params: GenParams, messages: list | None = None
    ) -> AsyncIterator[Any]:
        """Yield {"prompt_tokens"} first (after checks), then text pieces, then a closing dict."""
        from raylm.generate import stream_generate

        if messages is not None:
            prompt = _chat_prompt(self.tokenizer, messages)
        yield {"prompt_tokens": self._count(prompt, params, "messages" if messages else "prompt")}
        gen = stream_generate(
            self.model,
            self.tokenizer,
            prompt,
            params.max_new_tokens,
            do_sample=params.do_sample,
            temperature=params.temperature,
            top_p=params.top_p,
            seed=params.seed,
        )
        scan, result, stop = StopHoldBack(params.stop), None, threading.Event()
        try:
            with self.meter.generating():
                # A cancelled stream (client gone) gets CancelledError at this await; the step
                # then running in its thread ends at its next forward pass (WorkMeter).
                while result is None and not scan.hit:
                    kind, value = await _in_thread(self.meter.watched, stop, _advance, gen)
                    if kind == "done":
                        result = value
                    elif ready := scan.feed(value):
                        yield ready
        finally:
            stop.set()
            with contextlib.suppress(ValueError):  # a step still in its thread: `stop` ends it
                gen.close()
        if result is None:  # cut at a stop string: count what was sent
            yield {"finish_reason": "stop", "completion_tokens": self._tokens(scan.sent)}
            return
        if scan.pending:
            yield scan.pending
        yield {"finish_reason": result.finish_reason, "completion_tokens": result.completion_tokens}

    async def answer(
        self, context: str, question: str, params: GenParams, constrain: bool = False
    ) -> dict[str, Any]:
        """QA with the prompt template the model was trained with; `constrain`: the answer is a
        span of the context in the prompt (raylm.constrain)."""
        max_length = min(self.meta.get("max_length") or self.context, self.context)
        try:
            prompt, window = build_prompt_parts(
                self.tokenizer,
                context,
                question,
                max_length,
                params.max_new_tokens,
                self.template,
            )
        except ValueError as err:  # the question alone leaves no room for the answer
            raise ApiError(400, str(err), param="question") from None
        self._count(prompt, params, "context")
        with self.batch_wait.track(1), self.meter.generating():
            result = await self._generate((prompt, params, window if constrain else None))
        return {**result, "answer": result["text"].strip()}

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "task": self.task, "context": self.context}

    def stats(self) -> dict[str, int]:
        """Generations in progress and tokens computed so far, in this replica."""
        return self.meter.stats()
