"""Pipeline parallelism (`train.parallel.pipeline_stages: P`) through DeepSpeed's pipeline
engine, for GPT-2-style decoders: the Hugging Face model becomes a `PipelineModule` of layers
(embedding, blocks, final norm, head), cut into P stages of contiguous layers; each optimizer
step runs `train.grad_accum` micro-batches through the stages (`engine.train_batch`).

    module = pipeline_module(hf_model, cfg.train)      # this rank's stage, weights copied in
    engine = PipelineEngine.create(hf_model, cfg.train, total_steps)
    loss = engine.forward_backward(batch)              # None until grad_accum micro-batches wait
    engine.step()                                      # True when they ran (one optimizer step)

The loop (`train/loop.py`) drives it exactly as the data-parallel engine. What differs:

- Every rank of a pipeline reads the same micro-batches (`train.driver` cuts the data by
  data-parallel rank: DeepSpeed's topology puts stage `rank // D` and data-parallel rank
  `rank % D`); the first stage takes the token ids, the last the labels.
- Only causal attention, no padding mask: raylm pads on the right, so no real token attends to
  padding, and padding never scores (labels -100). Shapes may change between micro-batches
  (`dynamic_shape`: the last block of a split is shorter).
- The head is tied to the token embedding (GPT-2's default) through DeepSpeed's
  `TiedLayerSpec`: the last stage holds a copy whose gradient is summed with the first stage's;
  an untied head is a layer of its own.
- ZeRO-0's gradient clipping counts only the first stage's gradients in DeepSpeed (its
  `clip_fp32_gradients` counts model-parallel rank 0, and a stage id is a model-parallel rank):
  every parameter not replicated across stages is marked `model_parallel` so every stage counts.
- Export gathers every stage's layers to rank 0 under their Hugging Face names.

docs/parallel.md has the measured facts behind each step (`docs/parallel/pp_prototype.py`).
"""

from __future__ import annotations

import copy
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from raylm.config import TrainConfig
from raylm.train.deepspeed import Engine, ds_config, lr_lambda, param_groups


# ------------------------------------------------------------------------------------- layers
class EmbeddingPipe(nn.Module):
    """Token + position embeddings (GPT-2's wte, wpe, dropout): ids [B, T] -> hidden [B, T, D]."""

    def __init__(self, config: Any):
        super().__init__()
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.n_positions, config.n_embd)
        self.drop = nn.Dropout(config.embd_pdrop)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(input_ids.shape[-1], device=input_ids.device)
        return self.drop(self.wte(input_ids) + self.wpe(pos)[None])


def tied_head(embed: EmbeddingPipe, hidden: torch.Tensor) -> torch.Tensor:
    """The LM head tied to the token embedding: logits = hidden @ wte^T."""
    return F.linear(hidden, embed.wte.weight)


class BlockPipe(nn.Module):
    """One GPT2Block, tensor in, tensor out, causal attention (sdpa with no mask is causal)."""

    def __init__(self, config: Any, index: int):
        super().__init__()
        from transformers.models.gpt2.modeling_gpt2 import GPT2Block

        self.block = GPT2Block(config, layer_idx=index)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        out = self.block(hidden, attention_mask=None)
        return out[0] if isinstance(out, tuple) else out


class FinalNormPipe(nn.Module):
    def __init__(self, config: Any):
        super().__init__()
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.ln_f(hidden)


class HeadPipe(nn.Module):
    """An LM head of its own (a checkpoint saved with `tie_word_embeddings: false`)."""

    def __init__(self, config: Any):
        super().__init__()
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden)


def lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy, mean over scored positions: Hugging Face's causal-LM loss."""
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.size(-1)).float(),
        labels[:, 1:].reshape(-1),
        ignore_index=-100,
    )


# ----------------------------------------------------------------------------------- module
def _stage_config(hf_model: nn.Module) -> Any:
    config = copy.deepcopy(hf_model.config)
    # A block built outside PreTrainedModel falls back to eager attention, which with no mask
    # is not causal; sdpa with no mask is.
    config._attn_implementation = "sdpa"
    return config


def tied(hf_model: nn.Module) -> bool:
    return bool(getattr(hf_model.config, "tie_word_embeddings", True))


def layer_specs(hf_model: nn.Module) -> list[Any]:
    from deepspeed.pipe import LayerSpec, TiedLayerSpec

    config = _stage_config(hf_model)
    blocks = [LayerSpec(BlockPipe, config, i) for i in range(config.n_layer)]
    if not tied(hf_model):
        return [LayerSpec(EmbeddingPipe, config), *blocks, LayerSpec(FinalNormPipe, config),
                LayerSpec(HeadPipe, config)]  # fmt: skip
    embed = functools.partial(TiedLayerSpec, "embed", EmbeddingPipe, config)
    return [embed(tied_weight_attr=["wte.weight"]), *blocks, LayerSpec(FinalNormPipe, config),
            embed(forward_fn=tied_head, tied_weight_attr=["wte.weight"])]  # fmt: skip


def hf_key(key: str, n_layer: int) -> str | None:
    """The Hugging Face name of a PipelineModule state key (`<layer>.<name>`, tied ones
    `tied_modules.embed.<name>`); None for the tied head, which has no weights of its own."""
    if key.startswith("tied_modules.embed."):
        return "transformer." + key.removeprefix("tied_modules.embed.")
    layer, rest = key.split(".", 1)
    index = int(layer)
    if index == 0 or index == n_layer + 1:  # embedding (untied) or final norm
        return "transformer." + rest
    if index <= n_layer:
        return f"transformer.h.{index - 1}." + rest.removeprefix("block.")
    return rest if rest.startswith("lm_head.") else None


def pipeline_module(hf_model: nn.Module, train: TrainConfig) -> Any:
    """This rank's stage of `hf_model` as a DeepSpeed PipelineModule, with its weights."""
    import deepspeed
    import torch.distributed as dist
    from deepspeed.pipe import PipelineModule

    deepspeed.init_distributed(dist_backend=dist.get_backend())  # adopts Ray Train's group
    parallel = train.parallel
    checkpointing = {}
    if parallel.activation_checkpointing:
        checkpointing = {
            "activation_checkpoint_interval": 1,
            "activation_checkpoint_func": functools.partial(
                torch.utils.checkpoint.checkpoint, use_reentrant=False
            ),
        }
    module = PipelineModule(
        layers=layer_specs(hf_model),
        num_stages=parallel.pipeline_stages,
        loss_fn=lm_loss,
        partition_method=parallel.partition,
        dynamic_shape=True,
        **checkpointing,
    )
    n_layer = hf_model.config.n_layer
    source = hf_model.state_dict()
    with torch.no_grad():
        for key, tensor in module.state_dict().items():  # aliases of the parameters
            name = hf_key(key, n_layer)
            if name is not None:
                tensor.copy_(source[name])
    for p in module.parameters():  # see the module docstring: ZeRO-0 clipping counts all stages
        p.model_parallel = not getattr(p, "ds_pipe_replicated", False)
    return module


def stage_parameters(module: nn.Module) -> int:
    """Parameters this rank holds (a tied copy on the last stage counts)."""
    return sum(p.numel() for p in module.parameters())


# ----------------------------------------------------------------------------------- engine
@dataclass
class PipelineEngine(Engine):
    """The loop's Engine for a pipeline layout: micro-batches wait until `grad_accum` of them
    can run through the stages as one optimizer step."""

    hf_model: Any = None
    pending: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    stepped: bool = False

    @classmethod
    def create(
        cls, model: nn.Module, train: TrainConfig, total_steps: int, labelled_loss: bool = False
    ) -> PipelineEngine:
        """`labelled_loss` is not used: the last stage computes the model's own loss."""
        import warnings

        import deepspeed
        from torch.optim.lr_scheduler import LambdaLR

        # DeepSpeed broadcasts the tied embedding's Parameter itself when it syncs the stages'
        # copies; torch then warns on every backward that reaches it. The gradients are
        # DeepSpeed's to sum (tied-weight all-reduce), and they match one process's.
        warnings.filterwarnings("ignore", message="c10d::broadcast_: an autograd kernel")
        module = pipeline_module(model, train)
        engine, _, _, _ = deepspeed.initialize(
            model=module,
            model_parameters=param_groups(module, train.weight_decay, None),
            lr_scheduler=lambda opt: LambdaLR(opt, lr_lambda(train, total_steps)),
            config=ds_config(train),
            dist_init_required=False,
        )
        return cls(engine=engine, train=train, hf_model=model)

    @property
    def module(self) -> nn.Module:
        """The Hugging Face model (its config and save_pretrained; weights: full_state_dict)."""
        return self.hf_model

    @property
    def stage(self) -> int:
        return int(self.engine.stage_id)

    def forward_backward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        self.pending.append((batch["input_ids"], batch["labels"]))
        self.stepped = len(self.pending) == self.train.grad_accum
        if not self.stepped:
            return None
        loss = self.engine.train_batch(data_iter=iter(self.pending))  # mean of the micro-batches
        self.pending = []
        return loss.detach().float().cpu()

    def step(self) -> bool:
        stepped, self.stepped = self.stepped, False
        return stepped

    def save(self, ckpt_dir: str | Path, client_state: dict[str, Any]) -> None:
        """DeepSpeed's files (one per layer, written by its stage), and which layers and how
        many parameters this rank held (`layout_rank<r>.json`)."""
        import torch.distributed as dist

        super().save(ckpt_dir, client_state)
        module = self.engine.module
        held = {
            "stage": self.stage,
            "layers": [int(module.parts[self.stage]), int(module.parts[self.stage + 1])],
            "parameters": stage_parameters(module),
            "block_parameters": sum(
                p.numel() for m in module.modules() if isinstance(m, BlockPipe)
                for p in m.parameters()
            ),
        }  # fmt: skip
        path = Path(ckpt_dir) / f"layout_rank{dist.get_rank()}.json"
        path.write_text(json.dumps(held))

    def forward(self, batch: dict[str, torch.Tensor]) -> Any:
        """Validation: the micro-batch's mean loss on every stage (`out.loss`, as the model's)."""
        import torch.distributed as dist

        out = self.engine.eval_batch(
            iter([(batch["input_ids"], batch["labels"])]),
            compute_loss=True,
            reduce_output=None,  # this micro-batch's loss alone, not averaged over replicas
            bcast_loss=False,
            num_micro_batches=1,
        )
        loss = (
            out[0].detach().float().reshape(1)
            if self.engine.is_last_stage()
            else torch.zeros(1, device=self.device)
        )
        dist.broadcast(
            loss,
            src=self.engine._loss_stage_global_rank(),
            group=self.engine.grid.get_pipe_parallel_group(),
        )
        return SimpleNamespace(loss=loss[0].cpu())

    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        """Every stage's layers gathered to rank 0 under their Hugging Face names (None on the
        other ranks). Call on every rank."""
        import torch.distributed as dist

        n_layer = self.hf_model.config.n_layer
        local = {}
        if self.engine.grid.get_data_parallel_rank() == 0:  # one copy of each stage
            for key, tensor in self.engine.module.state_dict().items():
                name = hf_key(key, n_layer)
                if name is None or (key.startswith("tied_modules.") and self.stage != 0):
                    continue  # the tied head's copy on the last stage: the first stage's is it
                local[name] = tensor.detach().cpu().clone()
        rank = dist.get_rank()
        parts = [None] * dist.get_world_size() if rank == 0 else None
        dist.gather_object(local, parts, dst=0)
        if rank != 0:
            return None
        state = {k: v for part in parts for k, v in part.items()}
        if tied(self.hf_model):
            state["lm_head.weight"] = state["transformer.wte.weight"]
        return state
