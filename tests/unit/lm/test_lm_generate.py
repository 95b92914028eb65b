"""Batched generation on a tiny GPT-2: greedy determinism, left padding, the token cap, eos
stops, streaming and seeded sampling.

Run: python -m pytest tests/unit/lm/test_lm_generate.py -q
"""

import pytest
import torch

from raylm.generate import GenerationResult, generate, generate_texts, stream_generate

PROMPTS = ["中共中央总书记", "国家主席江泽民发表一九九八年新年讲话", "新", "人民日报"]
N = 16


@pytest.fixture
def boost_eos(tiny_lm, lm_tokenizer):
    """Make the model emit eos: from the `at`-th generated token on, for the given rows."""
    handles = []

    def install(at: int = 1, rows: list[int] | None = None):
        calls = {"n": 0}

        def hook(module, inputs, logits):
            calls["n"] += 1
            if calls["n"] < at:
                return logits
            logits = logits.clone()
            logits[rows if rows is not None else slice(None), -1, lm_tokenizer.eos_token_id] += 1e4
            return logits

        handles.append(tiny_lm.lm_head.register_forward_hook(hook))

    yield install
    for h in handles:
        h.remove()


def test_greedy_is_deterministic_and_batched_equals_one_by_one(tiny_lm, lm_tokenizer):
    batched = generate(tiny_lm, lm_tokenizer, PROMPTS, N, stop_at_eos=False)
    again = generate(tiny_lm, lm_tokenizer, PROMPTS, N, stop_at_eos=False)
    single = [generate(tiny_lm, lm_tokenizer, [p], N, stop_at_eos=False)[0] for p in PROMPTS]
    assert [r.token_ids for r in batched] == [r.token_ids for r in again]
    assert [r.token_ids for r in batched] == [r.token_ids for r in single]
    assert [r.text for r in batched] == [r.text for r in single]
    # The rows differ from each other: the model reads its context, it does not echo a constant.
    assert len({tuple(r.token_ids) for r in batched}) == len(PROMPTS)


def test_exactly_max_new_tokens_without_eos(tiny_lm, lm_tokenizer):
    for n in (1, 7, N):
        results = generate(tiny_lm, lm_tokenizer, PROMPTS, n, stop_at_eos=False)
        for r, prompt in zip(results, PROMPTS, strict=True):
            assert r.completion_tokens == len(r.token_ids) == n
            assert r.finish_reason == "length"
            assert r.prompt_tokens == len(lm_tokenizer(prompt)["input_ids"])
    # With stop_at_eos on, a model that never produces eos also stops at the cap.
    free = generate(tiny_lm, lm_tokenizer, PROMPTS, N, stop_at_eos=False)
    assert all(lm_tokenizer.eos_token_id not in r.token_ids for r in free)  # precondition
    capped = generate(tiny_lm, lm_tokenizer, PROMPTS, N)
    assert [r.token_ids for r in capped] == [r.token_ids for r in free]
    assert generate(tiny_lm, lm_tokenizer, PROMPTS, 0) == [
        GenerationResult("", len(lm_tokenizer(p)["input_ids"]), 0, "length", []) for p in PROMPTS
    ]


def test_eos_stops_a_row_and_leaves_the_others_alone(tiny_lm, lm_tokenizer, boost_eos):
    free = generate(tiny_lm, lm_tokenizer, PROMPTS[:2], N)
    boost_eos(at=5, rows=[0])  # row 0 is pushed to eos at its 5th token
    stopped, other = generate(tiny_lm, lm_tokenizer, PROMPTS[:2], N)
    assert stopped.finish_reason == "stop"
    assert stopped.completion_tokens == 5 and stopped.token_ids[-1] == lm_tokenizer.eos_token_id
    assert stopped.token_ids[:4] == free[0].token_ids[:4]
    assert stopped.text == lm_tokenizer.decode(free[0].token_ids[:4])  # eos not in the text
    assert other == free[1]


def test_stream_concatenation_equals_generate(tiny_lm, lm_tokenizer):
    for prompt in PROMPTS:
        expected = generate(tiny_lm, lm_tokenizer, [prompt], N)[0]
        deltas = list(stream_generate(tiny_lm, lm_tokenizer, prompt, N))
        assert "".join(deltas) == expected.text
        assert all(deltas) and not any(d.endswith("\ufffd") for d in deltas[:-1])


def test_stream_returns_usage_and_stops_at_eos(tiny_lm, lm_tokenizer, boost_eos):
    def collect(prompt: str):
        result = yield from stream_generate(tiny_lm, lm_tokenizer, prompt, N)
        yield result

    *deltas, result = collect(PROMPTS[1])
    assert result.finish_reason == "length" and result.completion_tokens == N
    assert "".join(deltas) == result.text
    boost_eos(at=1)
    *deltas, result = collect(PROMPTS[1])
    assert deltas == [] and result.text == ""
    assert result.finish_reason == "stop" and result.completion_tokens == 1


def test_seeded_sampling_is_reproducible(tiny_lm, lm_tokenizer):
    def sample(seed, prompts=PROMPTS):
        kw = {"do_sample": True, "temperature": 1.0, "seed": seed, "stop_at_eos": False}
        return [r.token_ids for r in generate(tiny_lm, lm_tokenizer, prompts, N, **kw)]

    assert sample(7) == sample(7)
    assert sample(7) != sample(8)
    assert sample(7) != [r.token_ids for r in generate(tiny_lm, lm_tokenizer, PROMPTS, N)]
    streamed = stream_generate(tiny_lm, lm_tokenizer, PROMPTS[0], N, do_sample=True, seed=3)
    assert (
        "".join(streamed)
        == generate_texts(
            tiny_lm, lm_tokenizer, PROMPTS[:1], max_new_tokens=N, do_sample=True, seed=3
        )[0]
    )


def test_tiny_top_p_or_zero_temperature_is_greedy(tiny_lm, lm_tokenizer):
    greedy = generate_texts(tiny_lm, lm_tokenizer, PROMPTS, max_new_tokens=N)
    nucleus = generate_texts(
        tiny_lm, lm_tokenizer, PROMPTS, max_new_tokens=N, do_sample=True, top_p=1e-6, seed=1
    )
    cold = generate_texts(
        tiny_lm, lm_tokenizer, PROMPTS, max_new_tokens=N, do_sample=True, temperature=0.0
    )
    assert nucleus == greedy == cold


def test_mode_is_restored_and_bad_requests_are_refused(tiny_lm, lm_tokenizer):
    tiny_lm.train()
    generate(tiny_lm, lm_tokenizer, PROMPTS[:1], 2)
    assert tiny_lm.training
    tiny_lm.eval()
    assert not tiny_lm.training and not torch.is_inference_mode_enabled()
    limit = tiny_lm.config.max_position_embeddings
    with pytest.raises(ValueError, match="context"):
        generate(tiny_lm, lm_tokenizer, PROMPTS[:1], limit)
    with pytest.raises(ValueError, match="top_p"):
        generate(tiny_lm, lm_tokenizer, PROMPTS, 4, do_sample=True, top_p=0.0)
    with pytest.raises(ValueError, match="empty prompt"):
        generate(tiny_lm, lm_tokenizer, [""], 4)
    assert generate(tiny_lm, lm_tokenizer, [], 4) == []
