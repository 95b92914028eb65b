"""Model FLOPs per token and MFU (model FLOPs utilisation). Pure arithmetic plus one optional
matmul probe for CPUs.

Training FLOPs per token follow the PaLM appendix B accounting: 6N for the dense weights
(forward 2N + backward 4N, N = non-embedding parameters) plus 12 * layers * hidden * seq_len for the
attention score and value products (QK^T and AV, forward and backward).
"""

from __future__ import annotations

import time

# Dense bf16/fp16 tensor-core peaks (no sparsity), FLOP/s, from the vendors' data sheets.
PEAK_FLOPS: dict[str, float] = {
    "H200": 989e12,
    "H100": 989e12,  # SXM; PCIe is 756e12
    "H100 PCIE": 756e12,
    "A100": 312e12,
    "A10G": 125e12,
    "L4": 121e12,
    "L40S": 362e12,
    "V100": 125e12,
    "T4": 65e12,
    "B200": 2250e12,
}


def flops_per_token(
    non_embedding_params: int, num_layers: int, hidden_size: int, seq_len: int
) -> float:
    """Training FLOPs for one token: 6N + 12 * L * H * T."""
    return 6.0 * non_embedding_params + 12.0 * num_layers * hidden_size * seq_len


def mfu(tokens_per_second: float, flops_token: float, peak_flops_total: float) -> float:
    """Achieved model FLOP/s over the peak of all devices used (a fraction, 0..1)."""
    if peak_flops_total <= 0:
        return 0.0
    return tokens_per_second * flops_token / peak_flops_total


def gpu_peak_flops(device_name: str) -> float | None:
    """Look a GPU up by its CUDA name ('NVIDIA H200' -> 989e12); None when unknown."""
    name = device_name.upper()
    for key in sorted(PEAK_FLOPS, key=len, reverse=True):
        if key in name:
            return PEAK_FLOPS[key]
    return None


def measured_matmul_flops(size: int = 1024, repeats: int = 5) -> float:
    """Best observed fp32 matmul FLOP/s on this process's CPU threads (the CPU 'peak')."""
    import torch

    # A private generator: the probe must not advance the global RNG that dropout draws from
    # (a resumed run restores that RNG and must see the same masks as an uninterrupted one).
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=gen)
    b = torch.randn(size, size, generator=gen)
    a @ b  # warm up the BLAS threads
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2.0 * size**3 / best


def device_peak_flops(use_gpu: bool, configured: float | None = None) -> float:
    """Peak FLOP/s of one worker's device: the configured value, the GPU table, or a CPU probe."""
    if configured:
        return configured
    if use_gpu:
        import torch

        found = gpu_peak_flops(torch.cuda.get_device_name())
        if found:
            return found
    return measured_matmul_flops()
