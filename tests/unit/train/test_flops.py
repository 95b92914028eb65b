"""FLOPs per token and MFU against hand computations."""

import pytest

from raylm.train.flops import flops_per_token, gpu_peak_flops, mfu


def test_flops_formula_matches_hand_computation():
    # GPT-2 small-like: 12 layers, hidden 768, 85M non-embedding params, 1024 tokens of context.
    n, layers, hidden, seq = 85_000_000, 12, 768, 1024
    expected = 6 * 85_000_000 + 12 * 12 * 768 * 1024  # 510e6 + 113.2e6
    assert flops_per_token(n, layers, hidden, seq) == pytest.approx(expected)
    assert flops_per_token(n, layers, hidden, seq) == pytest.approx(623_246_592)


def test_mfu_fraction():
    # 10k tokens/s * 1e9 FLOPs/token = 1e13 FLOP/s on a 1e14 peak -> 10%.
    assert mfu(10_000, 1e9, 1e14) == pytest.approx(0.10)
    assert mfu(1, 1, 0) == 0.0


def test_gpu_table_lookup():
    assert gpu_peak_flops("NVIDIA H200") == pytest.approx(989e12)
    assert gpu_peak_flops("NVIDIA H100 PCIe") == pytest.approx(756e12)
    assert gpu_peak_flops("NVIDIA A100-SXM4-80GB") == pytest.approx(312e12)
    assert gpu_peak_flops("Some Unknown Accelerator") is None
