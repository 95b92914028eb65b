"""Which layout fits: the per-device memory of every data x pipeline x tensor-parallel x ZeRO
layout of a recipe's model on N devices, and the rules a layout must meet that need the model.

    raylm plan examples/pretrain_zh.yaml --gpus 8 --gpu-memory 80 [--nodes 1]
    check_layout(cfg)        # the stages call it before any worker starts (train.parallel)

The model is the task's own skeleton (built on the meta device: no weights, no memory), so the
counts are those of the model the run would train. Per device, with D data-parallel replicas,
P pipeline stages, T tensor-parallel ranks, a micro-batch of b sequences of s tokens, hidden h,
a heads, L layers, vocabulary V:

  parameters held   Pd = (ceil(L/P) layers' parameters) / T + the embeddings and head
                         (pipeline: on the first and last stage; AutoTP keeps them whole)
  model states      Adam, DeepSpeed's own multipliers (bytes per parameter):
                      bf16/fp16: 2 (16-bit params) + 2 (16-bit grads) + 4 (fp32 grads)
                                 + 4 (fp32 master params) + 8 (Adam moments) = 20
                      ZeRO-0 20 Pd; ZeRO-1 4 Pd + 16 Pd/D;
                      ZeRO-2 2 Pd + 18 Pd/D   (deepspeed estimate_zero2_model_states_mem_needs)
                      ZeRO-3 18 Pd/D + 4 x the largest layer (estimate_zero3_..._mem_needs)
                      fp32: 4 params + 4 grads + 8 moments = 16: ZeRO-0 16 Pd; ZeRO-1
                      8 Pd + 8 Pd/D; ZeRO-2 4 Pd + 12 Pd/D; ZeRO-3 16 Pd/D + 4 x largest
  activations       per layer and micro-batch, 16-bit (Korthikanti et al. 2022, no sequence
                    parallelism): s b h (10 + 24/T + 5 a s / (h T)) bytes, twice that in
                    fp32; with activation checkpointing 2 s b h per layer (its input) plus
                    one layer recomputed. A pipeline's first stage keeps P micro-batches in
                    flight (1F1B), so it holds ceil(L/P) x P layers' worth.
  logits            s b V x 4 bytes x 2 (fp32 logits and their gradient), last stage.

The estimate leaves out allocator fragmentation, communication buffers and the framework's own
footprint (CUDA context about 0.5-1 GB): keep 10-20% of the device free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from raylm.config import Config
from raylm.configkit import ConfigError
from raylm.tasks import get_task
from raylm.train.settings import ParallelConfig, layout_problems

GiB = 1024**3


@dataclass(frozen=True)
class Shape:
    """What the estimate needs of a model (from its skeleton)."""

    model_type: str
    layers: int
    hidden: int
    heads: int
    vocab: int
    layer_params: int  # one transformer block
    other_params: int  # embeddings, final norm, heads: everything outside the blocks
    tied: bool


@dataclass(frozen=True)
class Layout:
    data: int
    pipeline: int
    tensor: int
    zero: int

    @property
    def name(self) -> str:
        return f"DP{self.data}-PP{self.pipeline}-TP{self.tensor} ZeRO-{self.zero}"


@dataclass(frozen=True)
class Estimate:
    layout: Layout
    params: int  # parameters one device holds
    states: float  # bytes: parameters, gradients, optimizer
    activations: float
    logits: float

    @property
    def total(self) -> float:
        return self.states + self.activations + self.logits


# ------------------------------------------------------------------------------------ model
def _blocks(model: Any) -> list[Any]:
    """The model's transformer blocks (GPT-2: transformer.h; BERT: encoder.layer)."""
    for path in ("transformer.h", "encoder.layer", "bert.encoder.layer", "model.layers"):
        obj = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if obj is not None:
            return list(obj)
    base = getattr(model, "base_model", None)
    if base is not None and base is not model:
        return _blocks(base)
    raise ValueError(f"{type(model).__name__}: cannot find its transformer blocks")


def model_shape(cfg: Config, vocab_size: int | None = None) -> Shape:
    """The recipe's model, counted on the meta device (a pretrained `model.path`: its config)."""
    import torch

    vocab = vocab_size or cfg.data.tokenizer.vocab_size
    with torch.device("meta"):
        model = get_task(cfg.model.task).skeleton(cfg.model, vocab, 2, 0)
    blocks = _blocks(model)
    per_block = sum(p.numel() for p in blocks[0].parameters())
    total = sum(p.numel() for p in model.parameters())  # tied weights counted once
    conf = model.config
    return Shape(
        model_type=conf.model_type,
        layers=len(blocks),
        hidden=conf.hidden_size,
        heads=conf.num_attention_heads,
        vocab=conf.vocab_size,
        layer_params=per_block,
        other_params=total - per_block * len(blocks),
        tied=bool(getattr(conf, "tie_word_embeddings", False)),
    )


# ----------------------------------------------------------------------------------- rules
PIPELINE_MODELS = ("gpt2",)
PIPELINE_TASKS = ("causal_lm", "qa")  # the next-token loss is the pipeline's last stage


def model_problems(parallel: ParallelConfig, shape: Shape) -> list[str]:
    """The layout rules that need the model: stages against layers, ranks against heads."""
    p, t = parallel.pipeline_stages, parallel.tensor_parallel
    problems = []
    if p > 1 and shape.model_type not in PIPELINE_MODELS:
        problems.append(
            f"train.parallel.pipeline_stages {p}: pipeline stages are built for GPT-2-style "
            f"decoders ({', '.join(PIPELINE_MODELS)}); this model is {shape.model_type}"
        )
    if p > shape.layers:
        problems.append(
            f"train.parallel.pipeline_stages {p} is more than the model's {shape.layers} "
            "layers (each stage needs at least one)"
        )
    if t > 1 and (shape.heads % t or shape.hidden % t):
        problems.append(
            f"train.parallel.tensor_parallel {t} does not divide the model's {shape.heads} "
            f"attention heads and hidden size {shape.hidden}"
        )
    return problems


def check_layout(cfg: Config, vocab_size: int | None = None) -> None:
    """Refuse a `train.parallel` layout the model cannot take, naming the rule (one line)."""
    parallel = cfg.train.parallel
    if parallel.model_parallel == 1:
        return
    if cfg.model.lora is not None:
        raise ConfigError("model.lora: adapters are not trained in pipeline or tensor layouts")
    problems = model_problems(parallel, model_shape(cfg, vocab_size))
    if parallel.pipeline_stages > 1 and cfg.model.task not in PIPELINE_TASKS:
        problems.append(
            f"train.parallel.pipeline_stages {parallel.pipeline_stages}: pipeline stages train "
            f"language-model tasks ({', '.join(PIPELINE_TASKS)}); model.task is {cfg.model.task}"
        )
    if problems:
        raise ConfigError("; ".join(problems))


# -------------------------------------------------------------------------------- estimate
def estimate(
    shape: Shape,
    layout: Layout,
    micro_batch: int,
    seq_len: int,
    precision: str = "bf16",
    activation_checkpointing: bool = False,
) -> Estimate:
    """Bytes per device of one layout (the module docstring gives the formula)."""
    p, t, d = layout.pipeline, layout.tensor, layout.data
    stage_layers = math.ceil(shape.layers / p)
    held = stage_layers * shape.layer_params / t + shape.other_params
    largest = max(shape.layer_params, shape.other_params)
    mixed = precision != "fp32"
    if mixed:
        per = {0: 20 * held, 1: 4 * held + 16 * held / d, 2: 2 * held + 18 * held / d}
        per[3] = 18 * held / d + 4 * largest
    else:
        per = {0: 16 * held, 1: 8 * held + 8 * held / d, 2: 4 * held + 12 * held / d}
        per[3] = 16 * held / d + 4 * largest
    s, b, h, a = seq_len, micro_batch, shape.hidden, shape.heads
    width = 1 if mixed else 2
    full_layer = s * b * h * (10 + 24 / t + 5 * a * s / (h * t)) * width
    per_layer = 2 * s * b * h * width if activation_checkpointing else full_layer
    in_flight = p  # 1F1B: the first stage holds P micro-batches' activations
    acts = stage_layers * in_flight * per_layer
    if activation_checkpointing:
        acts += full_layer
    logits = s * b * shape.vocab * 4 * 2
    return Estimate(layout, int(held), per[layout.zero], acts, logits)


def layouts(shape: Shape, devices: int) -> list[Layout]:
    """Every layout raylm trains on `devices` workers that the model can take."""
    out = []
    for p in range(1, devices + 1):
        for t in range(1, devices // p + 1):
            if devices % (p * t):
                continue
            for zero in range(4):
                parallel = ParallelConfig(pipeline_stages=p, tensor_parallel=t)
                if layout_problems(parallel, devices, zero) or model_problems(parallel, shape):
                    continue
                out.append(Layout(devices // (p * t), p, t, zero))
    return out


def plan(
    cfg: Config, devices: int, memory_gb: float, nodes: int = 1, vocab_size: int | None = None
) -> tuple[Shape, list[tuple[Estimate, bool]]]:
    """Every layout with its estimate and whether it fits. Ranked: fitting layouts first, the
    simplest that fits first (data parallel before model parallel;
    ZeRO-3, which gathers every layer's parameters each step, after ZeRO-0-2; tensor parallel
    inside a node before across nodes), then by memory."""
    shape = model_shape(cfg, vocab_size)
    budget = memory_gb * GiB
    rows = []
    for layout in layouts(shape, devices):
        est = estimate(
            shape,
            layout,
            cfg.train.batch_size,
            cfg.data.max_length,
            cfg.train.precision,
            cfg.train.parallel.activation_checkpointing,
        )
        rows.append((est, est.total <= budget))
    per_node = devices // nodes

    def rank(row: tuple[Estimate, bool]) -> tuple:
        lay = row[0].layout
        simple = (lay.pipeline * lay.tensor > 1, lay.zero == 3)
        return (not row[1], *simple, lay.tensor > per_node, row[0].total)

    rows.sort(key=rank)
    return shape, rows
