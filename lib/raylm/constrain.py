"""Generation that stays on the page: a causal LM's answer restricted to a span of the context
(`run.qa.constrain_to_context`, or `constrain_to_context` on a /v1/qa request).

    c = ContextConstraint.of(tokenizer, context_window)    # one per question
    results = generate(model, tok, [prompt], max_new_tokens=24, constraints=[c])
    # results[0].text is a substring of context_window

The context is tokenized on its own, exactly as it appears inside the prompt (the template's
punctuation before it is a pre-token boundary, so no token crosses the seam). At each step only
the tokens that continue the answer so far as a contiguous run of the context's tokens are
allowed: the first token is any context token that begins a character, each next one follows
some occurrence of the tokens so far, and the end of sequence is allowed once the run ends on a
character boundary (byte-level BPE splits one CJK character over several tokens, and a cut
between them would decode to U+FFFD). The state is the set of context positions the run can
continue from, updated per token (O(context) a step); the mask is applied to the logits before
greedy or sampled selection (raylm.generate), so a small model only has to find where the answer
starts and ends.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ContextConstraint"]


class ContextConstraint:
    """The allowed next tokens of one row: continuations of substrings of a token sequence."""

    def __init__(self, ids: list[int], starts: list[bool], ends: list[bool], eos: int | None):
        self.ids, self.starts, self.ends, self.eos = ids, starts, ends, eos
        self.positions = [i for i, s in enumerate(starts) if s]  # where the next token may sit
        self.length = 0  # tokens of the answer so far
        self.boundary_at = 0  # answer length at its last character boundary

    @classmethod
    def of(cls, tokenizer: Any, context: str) -> ContextConstraint:
        """The constraint for `context` (tokenized without special tokens, with offsets)."""
        enc = tokenizer(context, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
        # A token begins a character unless it starts inside the previous token's span (the
        # byte-level pieces of one character share its offsets); it ends one unless the next
        # token starts inside it.
        starts = [i == 0 or offsets[i][0] >= offsets[i - 1][1] for i in range(len(ids))]
        ends = [i + 1 == len(ids) or starts[i + 1] for i in range(len(ids))]
        return cls(ids, starts, ends, tokenizer.eos_token_id)

    def allowed(self) -> list[int]:
        """Token ids that may come next (never empty: the end of sequence when nothing else)."""
        out = {self.ids[p] for p in self.positions if p < len(self.ids)}
        if self.length and self.eos is not None and self._on_boundary():
            out.add(self.eos)
        if not out and self.eos is not None:
            out.add(self.eos)
        return sorted(out)

    def advance(self, token: int) -> None:
        """Take `token` as the answer's next one (the end of sequence is ignored)."""
        if token == self.eos:
            return
        self.positions = [
            p + 1 for p in self.positions if p < len(self.ids) and self.ids[p] == token
        ]
        self.length += 1
        if self._on_boundary():
            self.boundary_at = self.length

    def _on_boundary(self) -> bool:
        return any(self.ends[p - 1] for p in self.positions if p > 0)

    def complete(self, tokens: list[int]) -> list[int]:
        """The answer's tokens cut back to its last character boundary (a run stopped by the
        token limit may end inside a character)."""
        return tokens[: self.boundary_at] if len(tokens) > self.boundary_at else tokens
