"""Batched text generation for causal LMs: a plain KV-cache loop (greedy or sampled) + streaming.

    results = generate(model, tok, ["问题：...答案："], max_new_tokens=32)   # GenerationResult list
    texts = generate_texts(model, tok, prompts, max_new_tokens=32, do_sample=True, seed=0)
    for delta in stream_generate(model, tok, prompt, max_new_tokens=32):  # text deltas (SSE)
        print(delta, end="")

Prompts are left-padded by hand (ids, attention mask and position ids built here), so the
tokenizer is never mutated and a padded row computes what it would alone. Pad = eos when the
tokenizer has no pad token. Results hold only the new text (special tokens skipped), the token
counts an OpenAI-style server reports, and finish_reason "stop" (eos produced; it counts as a
completion token but is not in the text) or "length" (exactly max_new_tokens produced).
Sampling with a `seed` draws from its own torch.Generator: same seed, same output. The model is
switched to eval mode while generating (dropout off) and put back as it was.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["GenerationResult", "generate", "generate_texts", "stream_generate"]


@dataclass
class GenerationResult:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" | "length"
    token_ids: list[int] = field(default_factory=list)  # completion ids, the eos included


@dataclass(frozen=True)
class _Sampling:
    do_sample: bool
    temperature: float
    top_p: float
    generator: torch.Generator | None


def _check(max_new_tokens: int, temperature: float, top_p: float) -> None:
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


def _sampling(model: Any, do_sample: bool, temperature: float, top_p: float, seed: int | None):
    generator = None
    if do_sample and seed is not None:
        generator = torch.Generator(device=model.device).manual_seed(seed)
    # temperature 0 means greedy, as in the OpenAI API.
    return _Sampling(do_sample and temperature > 0, temperature, top_p, generator)


def _next_tokens(logits: torch.Tensor, s: _Sampling) -> torch.Tensor:
    """Pick one token per row from last-position logits (batch, vocab)."""
    if not s.do_sample:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / s.temperature, dim=-1)
    if s.top_p < 1:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (the top token always stays).
        drop = sorted_p.cumsum(dim=-1) - sorted_p >= s.top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    return torch.multinomial(probs, 1, generator=s.generator).squeeze(-1)


def _left_pad(rows: list[list[int]], pad_id: int, device: Any):
    """(input_ids, attention_mask, position_ids), rows right-aligned; pads sit at position 0."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            mask[i, width - len(row) :] = 1
    positions = (mask.cumsum(dim=-1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), positions.to(device)


@contextmanager
def _eval_mode(model: Any):
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _forward_options(model: Any) -> tuple[str, dict[str, Any]]:
    """The KV-cache argument's name and fixed forward kwargs, by what the model accepts."""
    params = inspect.signature(model.forward).parameters
    # transformers 5.x renames `past_key_values` to `cache` (the old name warns; gone in 5.40).
    cache_name = "cache" if "cache" in params else "past_key_values"
    # Only the last position's logits: a long prompt's full (batch, len, vocab) tensor is large.
    fixed = {"use_cache": True, **({"logits_to_keep": 1} if "logits_to_keep" in params else {})}
    return cache_name, fixed


def _cache_of(out: Any) -> Any:
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def _steps(
    model: Any,
    rows: list[list[int]],
    pad_id: int,
    max_new_tokens: int,
    s: _Sampling,
    restrict: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Iterator[torch.Tensor]:
    """Yield each step's next tokens (batch,), feeding back one token per row with the KV cache.

    The caller stops iterating when every row is done; at most max_new_tokens steps run.
    `restrict(logits)` masks each step's last-position logits before a token is picked; it runs
    after the caller has seen the previous step's tokens.
    """
    pick = _next_tokens if restrict is None else (lambda x, s: _next_tokens(restrict(x), s))
    if max_new_tokens == 0:
        return
    ids, mask, positions = _left_pad(rows, pad_id, model.device)
    cache_name, fixed = _forward_options(model)
    # inference_mode only around the compute: it is thread-wide state, and a stream's consumer
    # runs its own code between our yields.
    with torch.inference_mode():
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, **fixed)
        tokens = pick(out.logits[:, -1, :], s)
    for step in range(max_new_tokens):
        yield tokens
        if step + 1 == max_new_tokens:
            return
        with torch.inference_mode():
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)
            positions = positions[:, -1:] + 1
            out = model(
                input_ids=tokens[:, None],
                attention_mask=mask,
                position_ids=positions,
                **fixed,
                **{cache_name: _cache_of(out)},
            )
            tokens = pick(out.logits[:, -1, :], s)


def _setup(tokenizer: Any, model: Any, prompts: Sequence[str], max_new_tokens: int):
    """Encode prompts; check the context length; resolve the eos and pad ids."""
    rows = [list(tokenizer(p)["input_ids"]) for p in prompts]
    if any(not r for r in rows):
        raise ValueError("empty prompt: give at least one token of text to continue")
    limit = getattr(model.config, "max_position_embeddings", None)
    longest = max(len(r) for r in rows)
    if limit is not None and longest + max_new_tokens > limit:
        raise ValueError(
            f"prompt ({longest} tokens) + max_new_tokens ({max_new_tokens}) exceeds the "
            f"model's context of {limit} tokens"
        )
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    return rows, eos, 0 if pad is None else pad


def _decode(tokenizer: Any, ids: list[int]) -> str:
    # No clean-up of spaces: it would make a stream's prefixes disagree with the final text.
    return tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


def _result(tokenizer: Any, prompt_len: int, ids: list[int], eos: int | None, stop: bool):
    stopped = stop and bool(ids) and ids[-1] == eos
    text_ids = ids[:-1] if stopped else ids
    return GenerationResult(
        _decode(tokenizer, text_ids), prompt_len, len(ids), "stop" if stopped else "length", ids
    )


def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    max_new_tokens: int,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int | None = None,
    stop_at_eos: bool = True,
    constraints: Sequence[Any | None] | None = None,
) -> list[GenerationResult]:
    """Continue each prompt (one left-padded batch); at most max_new_tokens new tokens each.

    `constraints`: per prompt, None or an object with `allowed()` (token ids that may come next),
    `advance(token)` and `complete(ids)` (the kept ids of a run cut by the token limit), such as
    raylm.constrain.ContextConstraint: only allowed tokens are picked.
    """
    _check(max_new_tokens, temperature, top_p)
    if not prompts:
        return []
    rows, eos, pad = _setup(tokenizer, model, prompts, max_new_tokens)
    sampling = _sampling(model, do_sample, temperature, top_p, seed)
    new: list[list[int]] = [[] for _ in rows]
    done = [False] * len(rows)
    rules = list(constraints) if constraints is not None else [None] * len(rows)
    if len(rules) != len(rows):
        raise ValueError(f"{len(rules)} constraints for {len(rows)} prompts")
    restrict = _restrictor(rules, done) if any(r is not None for r in rules) else None
    with _eval_mode(model):
        for tokens in _steps(model, rows, pad, max_new_tokens, sampling, restrict):
            for i, tok in enumerate(tokens.tolist()):
                if not done[i]:
                    new[i].append(tok)
                    done[i] = stop_at_eos and tok == eos
                    if rules[i] is not None:
                        rules[i].advance(tok)
            if all(done):
                break
    for i, rule in enumerate(rules):
        if rule is not None and not (new[i] and new[i][-1] == eos):
            new[i] = rule.complete(new[i])
    return [
        _result(tokenizer, len(r), ids, eos, stop_at_eos) for r, ids in zip(rows, new, strict=True)
    ]


def _restrictor(rules: list[Any], done: list[bool]) -> Callable[[torch.Tensor], torch.Tensor]:
    """Logits of the rows under a constraint masked to its allowed tokens (-inf elsewhere)."""

    def restrict(logits: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros_like(logits)
        for i, rule in enumerate(rules):
            if rule is not None and not done[i]:
                mask[i].fill_(float("-inf"))
                mask[i, rule.allowed()] = 0.0
        return logits + mask

    return restrict


def generate_texts(model: Any, tokenizer: Any, prompts: Sequence[str], **kwargs: Any) -> list[str]:
    """`generate`, texts only."""
    return [r.text for r in generate(model, tokenizer, prompts, **kwargs)]


def stream_generate(
    model: Any,
    tokenizer: Any,
    prompt: str,
    max_new_tokens: int,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int | None = None,
    stop_at_eos: bool = True,
) -> Generator[str, None, GenerationResult]:
    """Yield text deltas as tokens are produced; their concatenation is `generate`'s text.

    Text that ends in an incomplete character (a byte-level token holding part of a UTF-8
    sequence decodes to U+FFFD) is held back until the next token completes it. The generator's
    return value is the GenerationResult (`result = yield from stream_generate(...)`), which
    carries finish_reason and usage for the stream's last event.
    """
    _check(max_new_tokens, temperature, top_p)
    rows, eos, pad = _setup(tokenizer, model, [prompt], max_new_tokens)
    sampling = _sampling(model, do_sample, temperature, top_p, seed)
    ids: list[int] = []
    sent = ""
    with _eval_mode(model):
        for tokens in _steps(model, rows, pad, max_new_tokens, sampling):
            tok = int(tokens[0])
            ids.append(tok)
            if stop_at_eos and tok == eos:
                break
            text = _decode(tokenizer, ids)
            if not text.endswith("\ufffd") and len(text) > len(sent):
                yield text[len(sent) :]
                sent = text
    result = _result(tokenizer, len(rows[0]), ids, eos, stop_at_eos)
    if len(result.text) > len(sent):
        yield result.text[len(sent) :]
    return result
