"""The recipe sections that belong to one task: `data.mlm` (masked-LM pretraining), `data.qa`
(extractive QA windows, cloze questions, question-word marks) and `run.qa` (how generative QA
answers). Validated with the rest of the recipe (`raylm.config` holds them); a task that ignores
one fails at load when the recipe sets it (each task's `check_config`). Pure pydantic.
"""

from __future__ import annotations

from pydantic import Field

from raylm.configkit import StrictModel


class MLMConfig(StrictModel):
    """Masking for `model.task: mlm` (raylm.data.mlm)."""

    whole_word: bool = Field(
        False, description="Mask whole words (jieba's segmentation), as Chinese BERT-wwm does."
    )
    mask_prob: float = Field(0.15, gt=0, lt=1, description="Share of tokens predicted per block.")


# OpenCC conversions (opencc's own configuration names): t2s = Traditional -> Simplified, s2t back,
# tw/hk = Taiwan / Hong Kong standards, the `p` ones with phrases (e.g. tw2sp: 軟體 -> 软件).


class QAConfig(StrictModel):
    """Extractive QA features (`model.task: extractive_qa`, raylm.data.extractive_qa)."""

    doc_stride: int = Field(
        64, ge=0, description="Tokens shared by two neighbouring windows of a long context."
    )
    max_question_tokens: int = Field(
        48, ge=4, description="A longer question is cut to this many tokens."
    )
    max_answer_chars: int = Field(
        40, ge=1, description="Longest answer (in characters) decoding may pick."
    )
    n_best: int = Field(
        20, ge=1, description="Start and end candidates per window tried when decoding."
    )
    unanswerable_windows: float = Field(
        0.3,
        ge=0,
        le=1,
        description="Share of the training windows without the answer that are kept (they point "
        "at [CLS]: 'not in this window'); the rest are dropped, so they do not swamp the ones "
        "that hold it.",
    )
    mark_question_words: bool = Field(
        True,
        description="Give context tokens that repeat two consecutive question tokens token type "
        "2 (DrQA's exact-match feature; the model gets a third token type).",
    )
    cloze_questions: int = Field(
        0,
        ge=0,
        description="Cloze questions made from each training passage and trained on beside the "
        "real ones (raylm.data.cloze: a word of a sentence replaced by the question word it "
        "answers); 0: none. Validation and test passages never get any.",
    )


class RunQAConfig(StrictModel):
    """How generative QA answers when evaluated (`model.task: qa`)."""

    constrain_to_context: bool = Field(
        False,
        description="Only let the answer be a span of the context (raylm.constrain); both modes "
        "are scored, this one is `test`, the other is reported beside it.",
    )
