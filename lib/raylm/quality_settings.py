"""`data.clean.quality`: the quality filters and PII scrubbing of the cleaning stage
(`raylm.data.quality` runs them). Pure pydantic, no Ray import.

    data: {clean: {quality: {filters: true, expected_script: cjk, scrub_pii: [email, phone]}}}
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from raylm.configkit import StrictModel

PiiKind = Literal["email", "phone", "id_card"]


class QualityConfig(StrictModel):
    """Quality filters, each rejecting with its own reason, and PII scrubbing; all off by
    default. `filters: true` runs every filter below whose threshold is set (null or 0: off),
    after the length and noise checks; scrubbing runs before them (`raylm.data.quality`)."""

    filters: bool = Field(False, description="Run the quality filters (false: none of them).")
    max_repeated_line_ratio: float | None = Field(
        0.3,
        ge=0,
        le=1,
        description="`repeated_lines`: share of lines (or sentences) repeating an earlier one "
        "above this (Gopher: 0.3).",
    )
    max_repeated_ngram_ratio: float | None = Field(
        0.2,
        ge=0,
        le=1,
        description="`repeated_ngrams`: share of characters inside an n-gram seen earlier in the "
        "text above this (Gopher: 0.15 for 5 words, 0.10 for 10; Chinese Wikipedia: 1% above "
        "0.2 at 8 characters).",
    )
    ngram_size: int = Field(
        8, ge=2, le=20, description="n of those n-grams, in units: CJK characters or words."
    )
    max_symbol_digit_ratio: float | None = Field(
        0.5,
        ge=0,
        le=1,
        description="`too_many_symbols_digits`: share of non-space chars that are digits or "
        "symbols (punctuation is neither) above this: tables, codes (Chinese news with dates "
        "and figures reaches 0.45, stock tables 0.7).",
    )
    expected_script: Literal["cjk", "latin"] | None = Field(
        None, description="`wrong_script`: the script the corpus is written in (null: any)."
    )
    min_script_ratio: float = Field(
        0.5,
        ge=0,
        le=1,
        description="`wrong_script`: least share of letter units (a CJK char, a Latin word) in "
        "`expected_script` (0: off).",
    )
    min_distinct_chars: int = Field(
        5,
        ge=0,
        description="`too_few_distinct_chars`: fewest different non-space characters a text "
        "may have (哈哈哈哈, ......; 0: off); lower it for short reviews.",
    )
    scrub_pii: list[PiiKind] = Field(
        default_factory=list,
        description="Replace these with <EMAIL>, <PHONE> (Chinese mobile and landline, "
        "+international), <ID_CARD> (resident ID numbers whose check digit holds), counted in "
        "pii_* columns; never rejects a text. []: off.",
    )

    @field_validator("scrub_pii")
    @classmethod
    def _once(cls, kinds: list[str]) -> list[str]:
        if len(set(kinds)) != len(kinds):
            raise ValueError("names a kind twice")
        return kinds

    @model_validator(mode="after")
    def _filters_on(self) -> QualityConfig:
        """A threshold changed while `filters` is off would silently do nothing."""
        fields = type(self).model_fields
        changed = [
            name
            for name in fields
            if name not in ("filters", "scrub_pii") and getattr(self, name) != fields[name].default
        ]
        if changed and not self.filters:
            raise ValueError(f"{', '.join(changed)} set, but no filter runs: set `filters: true`")
        return self
