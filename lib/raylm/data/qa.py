"""SQuAD/CMRC-style examples -> generative-QA features for a causal LM (prompt masked out).

    reason, feats = encode_qa(tok, context, question, "踢爆", max_length=256, answer_start=127)
    # reason == "" -> feats = {"input_ids": prompt + answer + eos, "labels": -100s + answer + eos}
    prompt = build_prompt(tok, context, question, max_length=256, max_new_tokens=32)

Over Ray Data numpy batches (columns `context`, `question`, `answers`, `answer_starts` as
`sources.read_squad` writes them): `encode_qa_batch` / `QAEncoder` add `input_ids`, `labels`,
`reject_reason`; `prompt_batch` adds `prompt`. Rejected rows keep empty lists and a reason.

The prompt is tokenized on its own and the answer after it, exactly as at inference, where the
model continues the encoded prompt; tokenizing prompt + answer as one string could merge tokens
across the seam and train on ids the model never sees when generating. Long contexts are cut to
a window of whole tokens centred on the answer span (from `answer_start`), so the answer stays
visible; for inference the head of the context is kept. The template is filled in one pass, so
braces or placeholder names inside the context or question are left as they are.
"""

from __future__ import annotations

import re
from typing import Any

IGNORE_INDEX = -100
DEFAULT_TEMPLATE = "阅读材料：{context}\n问题：{question}\n答案："
_PLACEHOLDER = re.compile(r"\{(context|question)\}")
_FIT_TRIES = 8  # re-measure rounds: a cut context can tokenize a few tokens longer

Batch = dict[str, Any]
Encoded = tuple[str, dict[str, list[int]] | None]

__all__ = [
    "DEFAULT_TEMPLATE",
    "IGNORE_INDEX",
    "QAEncoder",
    "build_prompt",
    "build_prompt_parts",
    "encode_qa",
    "encode_qa_batch",
    "prompt_batch",
    "render_prompt",
]


def render_prompt(template: str, context: str, question: str) -> str:
    """Fill `{context}` and `{question}` (each must appear exactly once) in one pass."""
    for name in ("context", "question"):
        if template.count("{" + name + "}") != 1:
            raise ValueError(f"QA template needs exactly one {{{name}}} placeholder: {template!r}")
    values = {"context": context, "question": question}
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def _ids(tokenizer: Any, text: str, specials: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=specials)["input_ids"])


def _char_span(context: str, answer: str, answer_start: int | None) -> tuple[int, int] | None:
    """The answer's char span: at answer_start when it matches, else the nearest occurrence."""
    if answer_start is not None and context[answer_start : answer_start + len(answer)] == answer:
        return answer_start, answer_start + len(answer)
    starts = [m.start() for m in re.finditer(re.escape(answer), context)] if answer else []
    if not starts:
        return None
    best = min(starts, key=lambda s: abs(s - (answer_start or 0)))
    return best, best + len(answer)


def _token_span(offsets: list[tuple[int, int]], span: tuple[int, int]) -> tuple[int, int]:
    """Token indices [t0, t1) of the context tokens that overlap the char span."""
    hits = [i for i, (s, e) in enumerate(offsets) if s < span[1] and e > span[0]]
    return hits[0], hits[-1] + 1


def _window(n_tokens: int, span: tuple[int, int] | None, budget: int) -> tuple[int, int] | None:
    """`budget` context tokens around `span` (centred), or the head when there is no span."""
    if span is None:
        return (0, min(n_tokens, budget)) if budget >= 0 else None
    need = span[1] - span[0]
    if budget < need:
        return None
    start = max(0, span[0] - (budget - need) // 2)
    end = min(n_tokens, start + budget)
    return max(0, end - budget), end


def _snap(offsets: list[tuple[int, int]], start: int, end: int) -> tuple[int, int]:
    """Narrow [start, end) so no character is cut: byte-level BPE splits one CJK char over
    several tokens, and a slice by char offsets would pull the whole char back in."""
    while 0 < start < end and offsets[start][0] < offsets[start - 1][1]:
        start += 1
    while start < end < len(offsets) and offsets[end][0] < offsets[end - 1][1]:
        end -= 1
    return start, end


def _fit_prompt(
    tokenizer: Any,
    context: str,
    question: str,
    template: str,
    room: int,
    char_span: tuple[int, int] | None,
) -> tuple[str, list[int], str] | None:
    """Prompt (text, ids, the context window in it) of at most `room` tokens, the context
    windowed around char_span."""
    enc = tokenizer(context, add_special_tokens=False, return_offsets_mapping=True)
    offsets = [tuple(o) for o in enc["offset_mapping"]]
    span = _token_span(offsets, char_span) if char_span else None
    fixed = len(_ids(tokenizer, render_prompt(template, "", question), True))
    budget = room - fixed
    for _ in range(_FIT_TRIES):
        window = _window(len(offsets), span, budget)
        if window is None:
            return None
        start, end = _snap(offsets, *window)
        text = context[offsets[start][0] : offsets[end - 1][1]] if end > start else ""
        prompt = render_prompt(template, text, question)
        ids = _ids(tokenizer, prompt, True)
        if len(ids) <= room:
            return prompt, ids, text
        budget -= len(ids) - room
    return None


def encode_qa(
    tokenizer: Any,
    context: str,
    question: str,
    answer: str,
    max_length: int,
    template: str = DEFAULT_TEMPLATE,
    answer_start: int | None = None,
) -> Encoded:
    """One training example -> `(reason, features)`; reason "" means kept.

    features: `input_ids` = prompt + answer + eos, `labels` = -100 over the prompt, then the
    answer's ids + eos. Reasons: `empty_answer`; `answer_not_in_context` (answer_start given but
    the answer text is nowhere in the context); `answer_too_long` (the answer target, its span in
    the context and the template + question cannot all fit in max_length).
    Without answer_start the answer is looked up in the context; a free-form answer that is not
    there keeps the head of the context.
    """
    if not answer:
        return "empty_answer", None
    char_span = _char_span(context, answer, answer_start)
    if char_span is None and answer_start is not None:
        return "answer_not_in_context", None
    target = _ids(tokenizer, answer, False) + [tokenizer.eos_token_id]
    fitted = _fit_prompt(
        tokenizer, context, question, template, max_length - len(target), char_span
    )
    if fitted is None:
        return "answer_too_long", None
    prompt = fitted[1]
    return "", {
        "input_ids": prompt + target,
        "labels": [IGNORE_INDEX] * len(prompt) + target,
    }


def build_prompt(
    tokenizer: Any,
    context: str,
    question: str,
    max_length: int,
    max_new_tokens: int,
    template: str = DEFAULT_TEMPLATE,
) -> str:
    """The inference prompt, its context cut (head kept) to leave `max_new_tokens` of room.

    Raises ValueError when the template and question alone leave no room.
    """
    return build_prompt_parts(tokenizer, context, question, max_length, max_new_tokens, template)[0]


def build_prompt_parts(
    tokenizer: Any,
    context: str,
    question: str,
    max_length: int,
    max_new_tokens: int,
    template: str = DEFAULT_TEMPLATE,
) -> tuple[str, str]:
    """`build_prompt` and the part of the context it holds (what a constrained answer may
    copy: raylm.constrain)."""
    room = max_length - max_new_tokens
    fitted = _fit_prompt(tokenizer, context, question, template, room, None)
    if fitted is None:
        raise ValueError(
            f"prompt_too_long: template + question need more than {room} tokens "
            f"(max_length {max_length} - max_new_tokens {max_new_tokens})"
        )
    return fitted[0], fitted[2]


# ------------------------------------------------------------------------------------ batches
def _first(values: Any, default: Any = None) -> Any:
    """First element of a list-like cell (answers / answer_starts), or a scalar cell itself."""
    if isinstance(values, str) or not hasattr(values, "__len__"):
        return values
    return values[0] if len(values) else default


def _reasons(batch: Batch, n: int) -> list[str]:
    raw = batch.get("reject_reason")
    return ["" for _ in range(n)] if raw is None else [str(r or "") for r in raw]


def encode_qa_batch(
    batch: Batch, tokenizer: Any, max_length: int, template: str = DEFAULT_TEMPLATE
) -> Batch:
    """Add `input_ids`, `labels`, `reject_reason` to a SQuAD batch (first answer trains).

    Rows already rejected upstream are passed through; rejected rows get empty id lists.
    """
    n = len(batch["context"])
    reasons = _reasons(batch, n)
    input_ids: list[list[int]] = []
    labels: list[list[int]] = []
    for i in range(n):
        feats = None
        if not reasons[i]:
            start = _first(batch["answer_starts"][i]) if "answer_starts" in batch else None
            reasons[i], feats = encode_qa(
                tokenizer,
                str(batch["context"][i]),
                str(batch["question"][i]),
                str(_first(batch["answers"][i], "") or ""),
                max_length,
                template,
                answer_start=None if start is None else int(start),
            )
        input_ids.append(feats["input_ids"] if feats else [])
        labels.append(feats["labels"] if feats else [])
    return {**batch, "input_ids": input_ids, "labels": labels, "reject_reason": reasons}


def prompt_batch(
    batch: Batch,
    tokenizer: Any,
    max_length: int,
    max_new_tokens: int,
    template: str = DEFAULT_TEMPLATE,
) -> Batch:
    """Add `prompt` (for generation) and `context_window` (the context part in it) columns;
    rows that cannot fit get `prompt_too_long`."""
    n = len(batch["context"])
    reasons = _reasons(batch, n)
    prompts: list[str] = []
    windows: list[str] = []
    for i in range(n):
        prompt = window = ""
        if not reasons[i]:
            try:
                prompt, window = build_prompt_parts(
                    tokenizer,
                    str(batch["context"][i]),
                    str(batch["question"][i]),
                    max_length,
                    max_new_tokens,
                    template,
                )
            except ValueError:
                reasons[i] = "prompt_too_long"
        prompts.append(prompt)
        windows.append(window)
    return {**batch, "prompt": prompts, "context_window": windows, "reject_reason": reasons}


class QAEncoder:
    """`map_batches` callable: loads the tokenizer once per process, then `encode_qa_batch`."""

    def __init__(self, tokenizer_dir: str, max_length: int, template: str = DEFAULT_TEMPLATE):
        from raylm.data.tokenizer import load_tokenizer

        render_prompt(template, "", "")  # a bad template fails here, not on the first batch
        self.tokenizer = load_tokenizer(tokenizer_dir)
        self.max_length = max_length
        self.template = template

    def __call__(self, batch: Batch) -> Batch:
        return encode_qa_batch(batch, self.tokenizer, self.max_length, self.template)
