"""data.cloze: questions made from a passage ask for a word that is really there, with the
question word its kind asks for, reproducibly; rows only ever carry the training split."""

from __future__ import annotations

from raylm.data.cloze import cloze_questions, cloze_rows, question_kind, question_word

PASSAGE = (
    "1998年，张伟在北京创办了一家公司。这家公司生产电脑和手机，员工有三百多人。"
    "后来公司搬到上海，改名为星光科技。"
)


def test_each_question_asks_for_a_word_at_its_place_in_the_passage():
    found = cloze_questions(PASSAGE, n=5)
    assert 1 <= len(found) <= 3  # at most one per sentence, three sentences
    for question, answer, start in found:
        assert PASSAGE[start : start + len(answer)] == answer
        assert question.endswith("？") and question_kind(question)
        # the question is the clause with the answer replaced by its question word
        asked = question_kind(question)
        assert question[:-1].replace(asked, answer, 1) in PASSAGE


def test_the_same_passage_gives_the_same_questions_and_n_bounds_them():
    assert cloze_questions(PASSAGE, 3) == cloze_questions(PASSAGE, 3)
    assert len(cloze_questions(PASSAGE, 1)) == 1
    assert cloze_questions(PASSAGE, 0) == []
    assert cloze_questions("短。", 3) == []  # no sentence long enough


def test_question_words_follow_the_kind_of_word():
    assert question_word("nr", "张伟") == "谁"
    assert question_word("ns", "北京") == "哪里"
    assert question_word("m", "1998年") == "什么时候"
    assert question_word("t", "后来") == "什么时候"
    assert question_word("m", "三百") == "多少"
    assert question_word("n", "公司") == "什么"
    assert question_kind("什么时候创办的？") == "什么时候"  # not 什么


def test_rows_are_training_rows_of_the_qa_schema_with_distinct_ids():
    other = "星光科技的总部在上海浦东，员工超过一千人。公司的创始人是张伟。"
    rows = cloze_rows([PASSAGE, other, PASSAGE], n=2)
    assert rows and {r["split"] for r in rows} == {"train"}
    assert len({r["id"] for r in rows}) == len(rows)
    assert {r["context"] for r in rows} <= {PASSAGE, other}
    for r in rows:
        start, answer = r["answer_starts"][0], r["answers"][0]
        assert r["context"][start : start + len(answer)] == answer
