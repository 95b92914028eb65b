"""The DeepSpeed engine: config, engine, step, checkpoint save/load, and the full state dict
(gathered under ZeRO-3 or tensor parallelism) that export writes (`raylm.models.export`). With
`train/tensor_parallel.py` (AutoTP's preparation) and `train/elastic.py` (universal-checkpoint
conversion), the only modules that import DeepSpeed.

Used from inside a Ray Train worker (torch.distributed is already initialised by TorchTrainer;
DeepSpeed picks its CPU accelerator and gloo on CPU machines, NCCL on GPUs):

    engine = Engine.create(model, cfg.train, total_steps)
    loss = engine.forward_backward(batch); engine.step()
    engine.save(ckpt_dir, client_state); engine.load(ckpt_dir)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from raylm.config import TrainConfig

NO_DECAY = (
    "bias",
    "LayerNorm.weight",
    "layer_norm.weight",
    "ln_1.weight",
    "ln_2.weight",
    "ln_f.weight",
)


def ds_config(train: TrainConfig) -> dict[str, Any]:
    """DeepSpeed JSON config derived from the few knobs in TrainConfig."""
    zero: dict[str, Any] = {"stage": train.zero_stage}
    if train.zero_stage >= 2:
        zero.update(overlap_comm=train.use_gpu, contiguous_gradients=True)
    if train.zero_stage == 3:
        # Needed for export: save_16bit_model gathers the shards into one state dict.
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    if train.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": train.use_gpu}
    if train.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": train.use_gpu}
    return {
        "train_micro_batch_size_per_gpu": train.batch_size,
        "gradient_accumulation_steps": train.grad_accum,
        "train_batch_size": train.global_batch_size,
        "gradient_clipping": train.max_grad_norm,
        "zero_optimization": zero,
        "bf16": {"enabled": train.precision == "bf16"},
        "fp16": {"enabled": train.precision == "fp16", "initial_scale_power": 12},
        "optimizer": {
            "type": "AdamW",
            "params": {
                "lr": train.lr,
                "betas": list(train.betas),
                "eps": 1e-8,
                "weight_decay": train.weight_decay,
                # torch's AdamW needs no compiled op; offload needs DeepSpeed's CPU Adam instead.
                "torch_adam": not train.offload_optimizer,
            },
        },
        "steps_per_print": 10**9,  # raylm logs progress itself
        "wall_clock_breakdown": False,
    }


def lr_lambda(train: TrainConfig, total_steps: int):
    """Warmup then linear / cosine decay to zero (or constant), as a multiplier of the peak lr."""
    warmup = int(round(train.warmup_ratio * total_steps))
    total = max(total_steps, 1)

    def fn(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if train.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if train.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return max(0.0, 1.0 - progress)

    return fn


def is_head(model: torch.nn.Module, name: str) -> bool:
    """Whether a parameter belongs to the task head: outside the model's base model (`bert.`,
    `transformer.`, ...), which is what a pretrained checkpoint supplies. Under LoRA (peft) the
    head is what peft trains beside the adapters (`modules_to_save`)."""
    if hasattr(model, "peft_config"):
        return ".modules_to_save." in name
    prefix = getattr(model, "base_model_prefix", "")
    return bool(prefix) and hasattr(model, prefix) and not name.startswith(f"{prefix}.")


def param_groups(
    model: torch.nn.Module, weight_decay: float, head_lr: float | None = None
) -> list[dict[str, Any]]:
    """AdamW groups: decay / no decay (biases, norms); with `head_lr`, the head's parameters
    in groups of their own at that peak lr (the schedule scales every group alike)."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            decays = not (name.endswith(NO_DECAY) or p.ndim < 2)
            head = head_lr is not None and is_head(model, name)
            groups.setdefault((head, decays), []).append(p)
    out = []
    # Body before head, decay before no decay: the order resumed optimizer states expect.
    for (head, decays), params in sorted(groups.items(), key=lambda kv: (kv[0][0], not kv[0][1])):
        group = {"params": params, "weight_decay": weight_decay if decays else 0.0}
        if head:
            group["lr"] = head_lr
        out.append(group)
    return out


@dataclass
class Engine:
    """A DeepSpeed engine plus the bits of state raylm needs around it."""

    engine: Any
    train: TrainConfig
    # Some weights never train (LoRA): checkpoints leave them out, as the model rebuilds them.
    frozen: bool = False
    # The loss of labelled positions only, the head run on them alone (raylm.train.lm_loss).
    labelled_loss: bool = False

    @classmethod
    def create(
        cls,
        model: torch.nn.Module,
        train: TrainConfig,
        total_steps: int,
        labelled_loss: bool = False,
        universal: bool = False,
    ) -> Engine:
        """`labelled_loss`: the task's labels are mostly -100 (Task.labelled_loss); used where
        the model supports it and its head is whole on every rank (ZeRO 0-2, no tensor
        parallelism). `universal`: the engine will load a universal checkpoint (one saved by
        another number of ranks, converted by raylm.train.elastic.to_universal)."""
        import deepspeed
        from torch.optim.lr_scheduler import LambdaLR

        from raylm.train.lm_loss import supports_labelled_loss

        config, extra = ds_config(train), {}
        tp = train.parallel.tensor_parallel
        if tp > 1:
            from raylm.train import tensor_parallel

            settings, extra["mpu"] = tensor_parallel.prepare(model, tp)
            config.update(settings)
        if universal:
            config["checkpoint"] = {"load_universal": True}
        engine, _, _, _ = deepspeed.initialize(
            model=model,
            model_parameters=param_groups(model, train.weight_decay, train.head_lr),
            lr_scheduler=lambda opt: LambdaLR(opt, lr_lambda(train, total_steps)),
            config=config,
            dist_init_required=False,
            **extra,
        )
        if tp > 1:
            tensor_parallel.finish(engine.module)
        frozen = any(not p.requires_grad for p in model.parameters())
        labelled_loss = (
            labelled_loss and train.zero_stage < 3 and tp == 1 and supports_labelled_loss(model)
        )
        return cls(engine=engine, train=train, frozen=frozen, labelled_loss=labelled_loss)

    @property
    def module(self) -> torch.nn.Module:
        return self.engine.module

    @property
    def device(self) -> torch.device:
        return self.engine.device

    @property
    def global_step(self) -> int:
        return int(self.engine.global_steps)

    @property
    def lr(self) -> float:
        return float(self.engine.get_lr()[0])

    def forward_backward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Forward + backward on one micro-batch; returns the (unscaled) loss."""
        if self.labelled_loss:
            from raylm.train.lm_loss import labelled_loss

            loss = labelled_loss(self.engine, batch)
        else:
            loss = self.engine(**batch).loss
        self.engine.backward(loss)
        return loss.detach()

    def forward(self, batch: dict[str, torch.Tensor]) -> Any:
        """The model's output on one batch (validation)."""
        return self.engine(**batch)

    def step(self) -> bool:
        """Optimizer/scheduler step at the accumulation boundary; True when a step was taken."""
        boundary = self.engine.is_gradient_accumulation_boundary()
        self.engine.step()
        return bool(boundary)

    def train_mode(self, on: bool = True) -> None:
        self.engine.train(on)

    def save(self, ckpt_dir: str | Path, client_state: dict[str, Any]) -> None:
        """Every rank writes its shards (DeepSpeed names the files by rank)."""
        self.engine.save_checkpoint(
            str(ckpt_dir),
            tag="ds",
            client_state=client_state,
            exclude_frozen_parameters=self.frozen,
        )

    def load(self, ckpt_dir: str | Path, tag: str = "ds") -> dict[str, Any]:
        """Restore model, optimizer, scheduler and step; returns the client state."""
        path, client_state = self.engine.load_checkpoint(
            str(ckpt_dir),
            tag=tag,
            load_module_strict=not self.frozen,  # frozen weights are not in the file
            load_optimizer_states=True,
            load_lr_scheduler_states=True,
        )
        if path is None:
            raise FileNotFoundError(f"no DeepSpeed checkpoint under {ckpt_dir}")
        return client_state or {}

    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        """The whole model's weights on rank 0 (None on other ranks). Call on every rank:
        under ZeRO-3 it gathers the shards."""
        import torch.distributed as dist

        rank = dist.get_rank() if dist.is_initialized() else 0
        if self.train.parallel.tensor_parallel > 1:
            from raylm.train.tensor_parallel import hf_state_dict

            return hf_state_dict(self.engine)
        if self.train.zero_stage == 3:
            # Despite the name, the weights keep the engine's dtype (fp32 when training fp32).
            return self.engine._zero3_consolidated_16bit_state_dict()
        if rank != 0:
            return None
        return {k: v.detach().cpu().clone() for k, v in self.module.state_dict().items()}
