"""FLOPs per token against the FLOPs torch counts in a real model; MFU; the GPU peak table."""

import pytest

from raylm.train.flops import flops_per_token, gpu_peak_flops, mfu

LAYERS, HIDDEN, VOCAB = 2, 64, 300


def _tiny_gpt2():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(
        n_layer=LAYERS, n_embd=HIDDEN, n_head=2, n_positions=128, vocab_size=VOCAB,
        bos_token_id=0, eos_token_id=0, attn_implementation="eager",
    )  # fmt: skip
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(cfg)


def _measured_flops_per_token(model, seq_len: int) -> float:
    """FLOPs of one training step (forward + backward) over one [1, seq_len] sequence, as
    torch's FlopCounterMode counts them (matmuls and attention), per token."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    ids = torch.randint(0, VOCAB, (1, seq_len), generator=torch.Generator().manual_seed(0))
    with FlopCounterMode(display=False) as counter:
        model(input_ids=ids, labels=ids).loss.backward()
    model.zero_grad()
    return counter.get_total_flops() / seq_len


def test_flops_per_token_matches_the_flops_torch_counts():
    from raylm.models.build import count_parameters

    model = _tiny_gpt2()
    # GPT-2 ties lm_head to wte: named_parameters lists the shared tensor once, as wte, and
    # count_parameters drops wte/wpe, so N holds the blocks and ln_f but not the head. The head's
    # matmul is still real work: 2 * vocab * hidden per token forward, twice that backward.
    assert model.lm_head.weight is model.transformer.wte.weight
    n = count_parameters(model, exclude_embeddings=True)
    head = 6 * VOCAB * HIDDEN
    measured_at = {t: _measured_flops_per_token(model, t) for t in (64, 128)}
    for seq_len, measured in measured_at.items():
        predicted = flops_per_token(n, LAYERS, HIDDEN, seq_len)
        # 6N + 12LHT counts biases and LayerNorm weights in N (6 FLOPs each, ~1.4% here) where
        # FlopCounterMode counts only matmuls; softmax, GELU and the loss are left out by both.
        assert predicted == pytest.approx(measured - head, rel=0.02), (seq_len, measured)
        assert measured > 1.1 * predicted  # the head is real FLOPs outside N: not negligible
    # The attention term alone: doubling T adds 12 * L * H * (128 - 64) per token, in the model
    # as in the formula (the weights' 6N does not change with T).
    added = measured_at[128] - measured_at[64]
    assert added == pytest.approx(
        flops_per_token(n, LAYERS, HIDDEN, 128) - flops_per_token(n, LAYERS, HIDDEN, 64), rel=0.01
    )


def test_gpt2_small_has_its_published_parameter_counts():
    # GPT-2 small: 124M parameters, 85M of them outside the embeddings (the N of 6N). Built on
    # the meta device: shapes only, no memory or time spent on weights.
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from raylm.models.build import count_parameters

    with torch.device("meta"):
        model = transformers.GPT2LMHeadModel(transformers.GPT2Config())
    assert count_parameters(model) == pytest.approx(124e6, rel=0.01)
    assert count_parameters(model, exclude_embeddings=True) == pytest.approx(85e6, rel=0.01)


def test_mfu_fraction():
    # 10k tokens/s * 1e9 FLOPs/token = 1e13 FLOP/s on a 1e14 peak -> 10%.
    assert mfu(10_000, 1e9, 1e14) == pytest.approx(0.10)
    assert mfu(1, 1, 0) == 0.0


def test_gpu_table_lookup():
    assert gpu_peak_flops("NVIDIA H200") == pytest.approx(989e12)
    assert gpu_peak_flops("NVIDIA H100 PCIe") == pytest.approx(756e12)
    assert gpu_peak_flops("NVIDIA A100-SXM4-80GB") == pytest.approx(312e12)
    assert gpu_peak_flops("Some Unknown Accelerator") is None
