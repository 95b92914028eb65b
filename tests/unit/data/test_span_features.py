"""Extractive QA pieces without Ray: OpenCC conversion of SQuAD rows, windows over long contexts
and their span targets, n-best decoding, the overlap baseline, and the split by passage of the
real QA data the repository ships.

    python -m pytest tests/unit/data/test_span_features.py -q
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from raylm.config import TokenizerConfig
from raylm.data.convert import convert_squad, converter
from raylm.data.extractive_qa import (
    QUESTION_WORD_TYPE,
    context_range,
    cut_question,
    encode_span_batch,
    mark_question_words,
    span_targets,
    windows,
)
from raylm.data.tokenizer import train_tokenizer
from raylm.eval.qa_baseline import overlap_answer
from raylm.span_reader import best_span

ROOT = Path(__file__).resolve().parents[3]
CHARS = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动"


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    rng = random.Random(0)
    lines = ["".join(rng.choices(CHARS, k=40)) + "。" for _ in range(200)]
    lines += ["蔡伦改进了造纸术，他是东汉人。谁改进了造纸术？"]
    out = tmp_path_factory.mktemp("tok")
    return train_tokenizer(lines, TokenizerConfig(vocab_size=300, min_frequency=1), out)


# ------------------------------------------------------------------------------ conversion
def test_t2s_converts_context_question_answers_and_keeps_offsets():
    rows = [
        {"id": "1", "context": "臺灣大學的圖書館藏書豐富。", "question": "哪裡藏書豐富？",
         "answers": ["圖書館"], "answer_starts": [5]},
    ]  # fmt: skip
    out, counts = convert_squad(rows, "t2s")
    assert out[0]["context"] == "台湾大学的图书馆藏书丰富。"
    assert out[0]["question"] == "哪里藏书丰富？" and out[0]["answers"] == ["图书馆"]
    assert out[0]["context"][5:8] == "图书馆" and out[0]["answer_starts"] == [5]
    assert counts["contexts_changed"] == 1 and counts["offsets_mismatched"] == 0


def test_answers_at_wrong_offsets_are_found_again_and_lost_ones_counted():
    rows = [
        # the file's offset is one off (as in a few CMRC answers): moved, counted as the source's
        {"id": "a", "context": "本魚分布於印度洋。", "question": "分布在哪？",
         "answers": ["印度洋"], "answer_starts": [4]},
        # an answer that is nowhere in the context is dropped, counted
        {"id": "b", "context": "本魚分布於印度洋。", "question": "吃什麼？",
         "answers": ["小魚"], "answer_starts": [0]},
    ]  # fmt: skip
    out, counts = convert_squad(rows, "t2s")
    assert out[0]["answer_starts"] == [5] and out[0]["context"][5:8] == "印度洋"
    assert out[1]["answers"] == []
    assert counts["offsets_wrong_in_source"] == 1 and counts["answers_lost"] == 1


def test_a_text_source_with_convert_is_converted_before_cleaning():
    import pyarrow as pa

    from raylm.data.reading import RECORD_SCHEMA, _convert

    rows = [{"text": t, "label": None, "reject_reason": "", "source": "f", "line": i}
            for i, t in enumerate(["臺灣的圖書館", None])]  # fmt: skip
    out = _convert(pa.Table.from_pylist(rows, schema=RECORD_SCHEMA), "t2s")
    assert out.schema == RECORD_SCHEMA
    assert out.column("text").to_pylist() == ["台湾的图书馆", None]


def test_an_unknown_opencc_configuration_is_named():
    with pytest.raises(ValueError, match="no_such"):
        converter("no_such")


# --------------------------------------------------------------------------------- windows
def test_windows_cover_the_whole_context_and_targets_point_at_the_answer(tok):
    rng = random.Random(1)
    context = "".join(rng.choices(CHARS, k=300))
    context = context[:200] + "蔡伦改进了造纸术" + context[200:]
    start = context.index("造纸术")
    enc = windows(tok, ["谁改进了造纸术？"], [context], max_length=64, stride=16,
                  max_question_tokens=12)  # fmt: skip
    n = len(enc["input_ids"])
    assert n > 5 and set(enc["overflow_to_sample_mapping"]) == {0}
    covered = set()
    holding = 0
    for w in range(n):
        offsets, seq = enc["offset_mapping"][w], enc.sequence_ids(w)
        first, last = context_range(seq)
        covered.update(range(offsets[first][0], offsets[last][1]))
        s, e = span_targets(offsets, seq, start, start + 3)
        if (s, e) != (0, 0):
            holding += 1
            assert context[offsets[s][0] : offsets[e][1]] == "造纸术"
        else:  # a window without the whole answer points at [CLS]
            assert offsets[first][0] > start or offsets[last][1] < start + 3
    assert covered == set(range(len(context)))  # nothing of the context is dropped
    assert holding >= 1


def test_a_stable_share_of_answerless_windows_is_kept_for_training(tok):
    rng = random.Random(2)
    contexts = ["".join(rng.choices(CHARS, k=300)) + "蔡伦改进了造纸术。" for _ in range(20)]
    batch = {
        "question": np.array(["谁改进了造纸术？"] * 20, dtype=object),
        "context": np.array(contexts, dtype=object),
        "answers": [np.array(["蔡伦"])] * 20,
        "answer_starts": [np.array([300])] * 20,
    }

    def answerless(share):
        rows = encode_span_batch(batch, tok, 64, 16, 12, share).to_pylist()
        held = sum(1 for r in rows if r["start_positions"] > 0)
        return held, [r["input_ids"] for r in rows if r["start_positions"] == 0]

    held_all, every = answerless(1.0)
    held_some, some = answerless(0.3)
    assert held_all == held_some == 20  # every window holding the answer stays
    assert 0.2 * len(every) < len(some) < 0.4 * len(every)
    assert some == answerless(0.3)[1]  # the same windows every time
    assert answerless(0.0)[1] == []


def test_long_questions_are_cut_and_batches_count_unanswerable_rows(tok):
    assert cut_question(tok, "蔡伦改进了造纸术" * 10, 5) == "蔡伦改进了"
    batch = {
        "question": np.array(["谁改进了造纸术？", "他是哪里人？"], dtype=object),
        "context": np.array(["蔡伦改进了造纸术，他是东汉人。"] * 2, dtype=object),
        "answers": [np.array(["蔡伦"]), np.array(["西汉"])],
        "answer_starts": [np.array([0]), np.array([11])],
    }
    table = encode_span_batch(batch, tok, 64, 16, 12).to_pylist()
    kept = [r for r in table if not r["reject_reason"]]
    assert [r["reject_reason"] for r in table if r["reject_reason"]] == ["answer_not_in_context"]
    assert len(kept) == 1 and (kept[0]["start_positions"], kept[0]["end_positions"]) != (0, 0)
    # token_type_ids: 0 over [CLS] question [SEP], 1 over the context and its [SEP]
    assert kept[0]["token_type_ids"][0] == 0 and kept[0]["token_type_ids"][-1] == 1


def test_context_tokens_repeating_two_question_tokens_are_marked():
    # [CLS] 1 2 3 [SEP] | context: 9 1 2 8 2 3 1 [SEP]   (pairs of the question: 12, 23)
    ids = [0, 1, 2, 3, 0, 9, 1, 2, 8, 2, 3, 1, 0]
    seq = [None, 0, 0, 0, None, 1, 1, 1, 1, 1, 1, 1, None]
    types = [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1]
    marked = mark_question_words(ids, seq, list(types))
    assert [i for i, t in enumerate(marked) if t == QUESTION_WORD_TYPE] == [6, 7, 9, 10]
    assert marked[11] == 1  # a lone 1: a single shared token is not a match
    assert marked[:5] == types[:5]  # the question keeps its type


def test_windows_mark_the_passage_where_it_repeats_the_question(tok):
    question, context = "谁改进了造纸术？", "蔡伦改进了造纸术，他是东汉人。"
    marked = windows(tok, [question], [context], 64, 8, 16)
    plain = windows(tok, [question], [context], 64, 8, 16, mark=False)
    assert plain["token_type_ids"][0].count(QUESTION_WORD_TYPE) == 0
    offsets, types = marked["offset_mapping"][0], marked["token_type_ids"][0]
    spans = [offsets[i] for i, t in enumerate(types) if t == QUESTION_WORD_TYPE]
    assert spans and context[spans[0][0] : spans[-1][1]] == "改进了造纸术"
    assert "蔡伦" not in "".join(context[a:b] for a, b in spans)  # the answer stays unmarked


def test_a_window_too_small_for_its_stride_is_a_clear_error(tok):
    with pytest.raises(ValueError, match="doc_stride"):
        windows(tok, ["谁？"], ["蔡伦"], max_length=32, stride=20, max_question_tokens=12)


# -------------------------------------------------------------------------------- decoding
def test_best_span_pairs_starts_and_ends_within_the_length_cap():
    offsets = [(0, 0)] + [(i, i + 1) for i in range(10)] + [(0, 0)]
    start, end = np.zeros(12), np.zeros(12)
    start[3], end[2] = 5.0, 6.0  # the best end lies before the best start: not a span
    end[5] = 4.0
    start[0], end[0] = 1.0, 0.5  # [CLS]: the score is how far a span beats it
    assert best_span(start, end, offsets, (1, 10), n_best=5, max_answer_chars=10) == (7.5, 2, 5)
    end[9] = 4.5  # better but 7 characters long: over a cap of 4
    assert best_span(start, end, offsets, (1, 10), n_best=5, max_answer_chars=4)[1:] == (2, 5)
    assert best_span(start, end, offsets, (1, 10), n_best=1, max_answer_chars=10) is None


# -------------------------------------------------------------------------------- baseline
def test_overlap_baseline_answers_the_hole_of_the_question_pattern():
    context = "东汉时期，蔡伦改进了造纸术。他被封为龙亭侯。"
    answer, start = overlap_answer("蔡伦改进了什么技术？", context)
    assert answer == "造纸术" and context[start : start + len(answer)] == answer
    answer, start = overlap_answer("蔡伦被封为什么？", context)
    assert context[start : start + len(answer)] == answer and "龙亭侯" in answer
    assert overlap_answer("谁？", "") == ("", 0)


# ------------------------------------------------------------------ the shipped QA data split
def test_the_shipped_qa_data_is_split_by_passage_and_converted(tmp_path):
    from raylm.data.lm_pipeline import read_qa
    from raylm.recipe import load_config

    cfg = load_config(ROOT / "examples" / "qa_extractive_zh.yaml")
    cfg.data.paths = [str(ROOT / p) for p in cfg.data.paths]
    rows, rejected, n_input, conversion = read_qa(cfg, tmp_path)
    assert n_input > 8000 and len(rows) > 7900
    split_of: dict[str, str] = {}
    for row in rows:
        assert split_of.setdefault(row["context"], row["split"]) == row["split"], row["id"]
    counts = {s: sum(1 for r in rows if r["split"] == s) for s in ("train", "validation", "test")}
    assert counts["test"] > 600 and counts["validation"] > 600
    assert conversion["config"] == "t2s" and conversion["contexts_changed"] > 1900
    # DRCD is Traditional: after t2s no row keeps 臺 or 灣
    assert not any("臺" in r["context"] or "灣" in r["context"] for r in rows)
