"""Chinese script conversion with OpenCC (`data.convert`, e.g. t2s: Traditional -> Simplified).

    to_simplified = converter("t2s"); to_simplified("臺灣大學") == "台湾大学"
    rows, counts = convert_squad(rows, "t2s")   # answers found again in the converted contexts

OpenCC converts phrase by phrase, so a converted text may differ in length from the original and
an answer's character offset no longer points at it. `convert_squad` checks every answer at its
old offset in the converted context; where it is not there, the occurrence nearest the old offset
is used (`offsets_mismatched` when conversion moved it, `offsets_wrong_in_source` when the file's
offset was already off, as in a few CMRC 2018 answers), and an answer that no longer occurs at
all is dropped (`answers_lost`; a question left without answers is then rejected as
`missing_answer` by the reader). The counts go to stats.json under `conversion`.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Callable
from typing import Any

__all__ = ["convert_squad", "converter", "nearest_span"]


@functools.lru_cache(maxsize=8)
def converter(config: str) -> Callable[[str], str]:
    """OpenCC's `convert` for a configuration name such as "t2s" (loaded once per process)."""
    try:
        import opencc
    except ImportError:  # pragma: no cover - a dependency of raylm
        raise ValueError(f"data.convert: {config} needs the opencc package") from None
    try:
        return opencc.OpenCC(config).convert
    except Exception as err:  # opencc raises its own RuntimeError for an unknown config
        raise ValueError(f"data.convert: OpenCC has no configuration {config!r} ({err})") from None


def nearest_span(context: str, answer: str, start: int | None) -> int | None:
    """Where `answer` starts in `context`: at `start` when it is there, else the occurrence
    nearest `start`, else None."""
    if not answer:
        return None
    if start is not None and context[start : start + len(answer)] == answer:
        return start
    hits = [m.start() for m in re.finditer(re.escape(answer), context)]
    return min(hits, key=lambda s: abs(s - (start or 0))) if hits else None


def convert_squad(rows: list[dict[str, Any]], config: str) -> tuple[list[dict], dict[str, Any]]:
    """SQuAD question rows (context, question, answers, answer_starts) converted; answers are
    looked up again in the converted context. Returns the rows and the counts."""
    convert = converter(config)
    contexts: dict[str, str] = {}
    counts: Counter = Counter()
    out = []
    for row in rows:
        old = row["context"]
        if old not in contexts:
            contexts[old] = convert(old)
            counts["contexts_changed"] += contexts[old] != old
            counts["contexts_longer_or_shorter"] += len(contexts[old]) != len(old)
        context = contexts[old]
        answers, starts = [], []
        old_starts = list(row.get("answer_starts") or [None] * len(row["answers"]))
        for answer, start in zip(row["answers"], old_starts, strict=False):
            text = convert(answer)
            found = nearest_span(context, text, start)
            counts["answers"] += 1
            if found is None:
                counts["answers_lost"] += 1
                continue
            if found != start:  # the file's own offset was wrong, or conversion moved it
                was_right = start is not None and old[start : start + len(answer)] == answer
                counts["offsets_mismatched" if was_right else "offsets_wrong_in_source"] += 1
            answers.append(text)
            starts.append(found)
        out.append(
            {**row, "context": context, "question": convert(row["question"]),
             "answers": answers, "answer_starts": starts}
        )  # fmt: skip
    summary = {"config": config, "questions": len(rows), **{k: counts[k] for k in _COUNTS}}
    return out, summary


_COUNTS = (
    "contexts_changed", "contexts_longer_or_shorter", "answers", "offsets_mismatched",
    "offsets_wrong_in_source", "answers_lost",
)  # fmt: skip
