"""`train.parallel`: how a run's workers share the model and the data, and the rules a layout
must meet that need nothing but the recipe. Pure pydantic, no torch.

    train: {num_workers: 4, zero_stage: 1, parallel: {pipeline_stages: 2}}
    # 2 pipeline stages x 1 tensor-parallel rank = 2 workers per model replica; 4 / 2 = 2 replicas

The workers form `data_parallel = num_workers / (pipeline_stages * tensor_parallel)` replicas
of the model. In a replica, pipeline parallelism gives each stage a contiguous run of layers
(DeepSpeed's PipelineModule; activations pass between stages, `grad_accum` micro-batches keep
every stage busy), and tensor parallelism splits every layer's matrices across ranks (DeepSpeed
AutoTP). Rules that need the model (stages against its layers, ranks against its heads) are
checked with the model's config before any worker starts (`raylm.preflight.check_layout`).
Elastic runs (`num_workers: [min, max]`, raylm.train.elastic) are data parallel only.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field

from raylm.configkit import StrictModel


class ParallelConfig(StrictModel):
    pipeline_stages: int = Field(
        1, ge=1, description="Pipeline stages per model replica (contiguous runs of layers)."
    )
    tensor_parallel: int = Field(
        1, ge=1, description="Ranks that split each layer's matrices (DeepSpeed AutoTP)."
    )
    partition: Literal["parameters", "uniform"] = Field(
        "parameters",
        description="How layers are cut into pipeline stages: balanced by parameter count, or "
        "the same number of layers per stage.",
    )
    activation_checkpointing: bool = Field(
        False, description="Recompute each pipeline stage's activations in the backward pass."
    )

    @property
    def model_parallel(self) -> int:
        """Workers that hold one replica of the model between them."""
        return self.pipeline_stages * self.tensor_parallel

    def data_rank(self, rank: int, world: int) -> int:
        """The model replica (data-parallel rank) worker `rank` belongs to, as DeepSpeed lays
        ranks out: a pipeline's stages are `world / P` ranks apart (stage `rank // D`, replica
        `rank % D`); a tensor-parallel group is T consecutive ranks (replica `rank // T`)."""
        if self.pipeline_stages > 1:
            return rank % (world // self.pipeline_stages)
        return rank // self.tensor_parallel


def layout_problems(
    parallel: ParallelConfig, num_workers: int, zero_stage: int, cache_data: bool | None = None
) -> list[str]:
    """Every rule of the layout that the recipe alone can break, each naming its fields."""
    p, t = parallel.pipeline_stages, parallel.tensor_parallel
    problems = []
    if p * t > 1 and cache_data is False:
        problems.append(
            "train.cache_data false: pipeline and tensor-parallel layouts read cached splits "
            "(the workers of one replica must read the same rows in the same order)"
        )
    if num_workers % (p * t):
        problems.append(
            f"train.num_workers {num_workers} is not a multiple of pipeline_stages x "
            f"tensor_parallel = {p} x {t} = {p * t} (the data-parallel degree is "
            f"num_workers / (pipeline_stages x tensor_parallel))"
        )
    if p > 1 and t > 1:
        problems.append(
            "train.parallel: pipeline_stages and tensor_parallel above 1 together are not "
            "supported; choose one of them"
        )
    if p > 1 and zero_stage > 1:
        problems.append(
            f"train.parallel.pipeline_stages {p} needs train.zero_stage 0 or 1: DeepSpeed's "
            f"pipeline engine does not combine with ZeRO-{zero_stage} (it partitions gradients "
            "or parameters that the stages' micro-batches accumulate)"
        )
    if t > 1 and zero_stage > 2:
        problems.append(
            f"train.parallel.tensor_parallel {t} needs train.zero_stage 0, 1 or 2: DeepSpeed's "
            "AutoTP training does not combine with ZeRO-3"
        )
    return problems


def elastic_problems(
    parallel: ParallelConfig,
    fewest: int | None,
    most: int,
    grad_accum: int,
    cache_data: bool | None = None,
) -> list[str]:
    """The rules of elastic training (train.num_workers [fewest, most]), each naming its fields.
    Every step takes one micro-batch from each of `most x grad_accum` fixed parts of the split
    (raylm.train.elastic), so every worker count the run may get must divide that number."""
    if fewest is None:
        return []
    if fewest > most:
        return [f"train.num_workers [{fewest}, {most}]: the fewest is more than the most"]
    problems = []
    if parallel.model_parallel > 1:
        problems.append(
            "train.num_workers [min, max] (elastic) is for data-parallel runs: set "
            "train.parallel.pipeline_stages and tensor_parallel to 1, or give one num_workers"
        )
    if cache_data is False:
        problems.append(
            "train.cache_data false: elastic training reads the training split from the object "
            "store, cut into fixed parts that any number of workers can share"
        )
    parts = most * grad_accum
    odd = [n for n in range(fewest, most + 1) if parts % n]
    if odd:
        fix = next(a for a in range(grad_accum, grad_accum * math.lcm(*odd) + 1)
                   if all(most * a % n == 0 for n in range(fewest, most + 1)))  # fmt: skip
        problems.append(
            f"train.num_workers [{fewest}, {most}] with train.grad_accum {grad_accum}: a step's "
            f"{parts} micro-batches cannot be shared evenly by {odd[0]} worker(s); set "
            f"train.grad_accum to {fix}"
        )
    return problems
