"""Tensor parallelism (`train.parallel.tensor_parallel: T`) through DeepSpeed AutoTP training:
each layer's matrices are split over T consecutive ranks, which form one model replica and
read the same micro-batches (`train.driver` cuts the data by data-parallel rank, rank // T).

    extra, mpu = prepare(model, T)      # before deepspeed.initialize: config keys, groups
    engine = deepspeed.initialize(..., config={**config, **extra}, mpu=mpu)
    finish(engine.module)               # after: what AutoTP does not update itself
    state = hf_state_dict(engine)       # every rank calls it; rank 0 gets the whole model

AutoTP shards BERT-style encoders with its own rules. GPT-2 it refuses (its Conv1D layers keep
weights as [in, out]), so a GPT-2 model's Conv1D layers become `nn.Linear` (the same function,
weights transposed) with explicit rules: the fused Q/K/V projection split per block, so a rank
keeps whole heads of each; the first MLP layer by columns; both output projections by rows.
The export transposes them back, so the folder is a plain GPT-2 one. The groups are DeepSpeed's
(dp, tp) mesh, passed as `mpu` so the config's batch arithmetic counts data-parallel ranks
(DeepSpeed builds its config before its groups otherwise, against the whole world).
docs/parallel.md has the measured facts behind each step.
"""

from __future__ import annotations

from typing import Any

import torch

GPT2_CONV1D = (".attn.c_attn", ".attn.c_proj", ".mlp.c_fc", ".mlp.c_proj")
GPT2_RULES = {
    "use_default_specs": False,
    "layer_specs": [
        {"patterns": [r".*\.attn\.c_attn\.weight$"], "partition_type": "column",
         "shape": [3, -1], "partition_dim": 0},
        {"patterns": [r".*\.mlp\.c_fc\.weight$"], "partition_type": "column"},
        {"patterns": [r".*\.attn\.c_proj\.weight$", r".*\.mlp\.c_proj\.weight$"],
         "partition_type": "row"},
    ],
}  # fmt: skip


def _is_gpt2(model: torch.nn.Module) -> bool:
    return getattr(getattr(model, "config", None), "model_type", None) == "gpt2"


def prepare(model: torch.nn.Module, tp: int) -> tuple[dict[str, Any], Any]:
    """DeepSpeed config keys and the `mpu` for T-way tensor parallelism; converts a GPT-2
    model's Conv1D layers in place."""
    import deepspeed
    import torch.distributed as dist
    from deepspeed.utils import groups

    # deepspeed.comm adopts the process group Ray Train made (no second init), then the mesh.
    deepspeed.init_distributed(dist_backend=dist.get_backend())
    groups._init_tp_mesh_device(tensor_model_parallel_size=tp)
    settings: dict[str, Any] = {"autotp_size": tp}
    if _is_gpt2(model):
        _conv1d_to_linear(model)
        settings["partition_config"] = GPT2_RULES
    return {"tensor_parallel": settings}, groups


def finish(module: torch.nn.Module) -> None:
    """AutoTP shards GPT-2 attention's head count and width, not `split_size`, which cuts the
    fused Q/K/V output: set it to the shard's width."""
    from transformers.models.gpt2.modeling_gpt2 import GPT2Attention

    for m in module.modules():
        if isinstance(m, GPT2Attention):
            m.split_size = m.c_attn.weight.shape[0] // 3


def hf_state_dict(engine: Any) -> dict[str, torch.Tensor] | None:
    """The whole model's weights on rank 0, shards gathered (None elsewhere); a GPT-2 model's
    converted layers transposed back to Conv1D's layout. Every rank must call it."""
    state = engine._consolidated_16bit_state_dict()  # keeps the engine's dtype despite the name
    if state is None:
        return None
    state = {k: v.detach().cpu().clone() for k, v in state.items()}
    if _is_gpt2(engine.module):
        for key, value in state.items():
            if key.endswith(".weight") and any(f"{n}.weight" in key for n in GPT2_CONV1D):
                state[key] = value.t().contiguous()
    return state


def _conv1d_to_linear(model: torch.nn.Module) -> None:
    from transformers.pytorch_utils import Conv1D

    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Conv1D):  # weight [in, out]: y = x @ W + b
                linear = torch.nn.Linear(*child.weight.shape, dtype=child.weight.dtype)
                with torch.no_grad():
                    linear.weight.copy_(child.weight.t())
                    linear.bias.copy_(child.bias)
                setattr(parent, name, linear)
