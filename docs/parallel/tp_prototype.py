#!/usr/bin/env python
"""DeepSpeed AutoTP tensor-parallel *training* of tiny Hugging Face models on CPU (gloo).

Prototype only. It checks, for one architecture and ZeRO stage:

  1. 2 (or 4) processes; torch.distributed is initialised with gloo by *us* before DeepSpeed
     (as Ray Train's TorchTrainer does), then deepspeed.initialize(config={"tensor_parallel":
     {"autotp_size": 2}, "zero_optimization": {"stage": 1|2}}) shards the model. fp32, and a
     plain torch.optim.AdamW handed in as a callable, so no DeepSpeed op is compiled for it.
  2. 20 training steps on fixed seeded random data; the per-step losses are compared with the
     same model trained in ONE plain-torch process (no DeepSpeed, no distributed).
  3. Parameter elements held by each rank: which tensors are split, which are kept whole.
  4. engine.save_checkpoint / load_checkpoint round trip, and ONE consolidated Hugging Face
     state dict (TP shards gathered) that plain transformers loads; its logits vs the TP engine's.
  5. Resume parity: the checkpoint saved at step 10 is loaded into a fresh engine, which trains
     steps 10..19; its losses and final weights must equal the uninterrupted run's.

Run (the two cores are shared, so every run is short):
    /work/main/.venv/bin/python docs/parallel/tp_prototype.py --arch llama --zero 1
    /work/main/.venv/bin/python docs/parallel/tp_prototype.py --arch bert  --zero 2
    /work/main/.venv/bin/python docs/parallel/tp_prototype.py --arch gpt2  --zero 1               # Conv1D -> Linear workaround
    /work/main/.venv/bin/python docs/parallel/tp_prototype.py --arch gpt2  --gpt2-native          # shows AutoTP refusing GPT-2
    /work/main/.venv/bin/python docs/parallel/tp_prototype.py --arch llama --world 4              # TP=2 x DP=2

Data layout rule (the one thing a data loader must get right): all ranks of one TP group form
ONE model replica and must see the SAME micro-batch; the data-parallel shard index is the
DP rank (groups.get_data_parallel_rank() = global_rank // tp_size, because DeepSpeed's mesh is
(dp, tp) row-major, so TP groups are runs of consecutive ranks), never the global rank. Here
each batch is generated from seed(step, dp_rank), so both TP ranks of a replica draw the same
tensor. With a DistributedSampler that means num_replicas=dp_world_size, rank=dp_rank (a
Ray Data shard per *replica*, then identical on the TP ranks, e.g. by broadcasting from the
TP-group source rank). DeepSpeed checks this once: a forward pre-hook on the first forward
broadcasts the inputs from TP rank 0 and asserts equality (runtime/engine.py
_configure_tensor_parallel_states, "Data inconsistency within the TP group").
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

# --- CPU gotchas, set before deepspeed is imported ------------------------------------------
# DeepSpeed picks its accelerator at import; without CUDA it falls back to CPU with a warning,
# but be explicit. The CPU accelerator's communication backend is 'ccl' only if oneCCL bindings
# are installed, otherwise 'gloo' (accelerator/cpu_accelerator.py:30-34); we init gloo ourselves.
os.environ.setdefault("DS_ACCELERATOR", "cpu")
# DeepSpeed's TorchBackend JIT-compiles a shared-memory all-reduce C++ op on CPU at init
# (comm/torch.py:47 build_shm_op, called from TorchBackend.__init__ at :207) even though AutoTP
# training uses plain dist.all_reduce. It needs g++/ninja and writes to TORCH_EXTENSIONS_DIR
# (default ~/.cache/torch_extensions); the first build takes minutes on 2 cores, later runs
# load the cached .so. Keep it inside this prototype's folder.
os.environ.setdefault("TORCH_EXTENSIONS_DIR", "/tmp/tp_proto/.torch_extensions")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # 2 processes on 2 cores

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

VOCAB, SEQ, MICRO_BS, LR, WD, CLIP = 500, 32, 4, 1e-3, 0.01, 1.0
HERE = "/tmp/tp_proto"


# ------------------------------------------------------------------ models (config only, no hub)
def build_model(arch: str) -> nn.Module:
    """The same initial weights in every process: fixed seed, CPU, fp32, dropout off (dropout
    draws would differ from the single-process run, and every TP rank must draw the same masks
    for replicated activations anyway, i.e. seed all TP ranks identically)."""
    import transformers as T

    torch.manual_seed(0)
    if arch == "gpt2":
        cfg = T.GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=VOCAB, n_positions=64,
                           resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                           bos_token_id=0, eos_token_id=0)
        return T.GPT2LMHeadModel(cfg)
    if arch == "llama":
        cfg = T.LlamaConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=2,
                            num_key_value_heads=2, intermediate_size=128, vocab_size=VOCAB,
                            max_position_embeddings=64, bos_token_id=0, eos_token_id=0, pad_token_id=0)
        return T.LlamaForCausalLM(cfg)
    if arch == "bert":
        cfg = T.BertConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=2,
                           intermediate_size=128, vocab_size=VOCAB, max_position_embeddings=64,
                           hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        return T.BertForMaskedLM(cfg)
    raise ValueError(arch)


def make_batch(step: int, dp_rank: int) -> dict[str, torch.Tensor]:
    """Micro-batch of replica `dp_rank` at `step`; a pure function of (step, dp_rank) so that
    every TP rank of a replica, the single-process reference and a resumed run all get it."""
    g = torch.Generator().manual_seed(10_000 + 100 * step + dp_rank)
    ids = torch.randint(0, VOCAB, (MICRO_BS, SEQ), generator=g)
    # labels = inputs: causal LM shifts inside HF; for BERT every position is an MLM target.
    # All label positions valid -> equal token counts per replica, so the mean of replica means
    # equals the global mean the reference computes.
    return {"input_ids": ids, "labels": ids.clone()}


EVAL_BATCH = lambda: make_batch(999, 0)["input_ids"]  # noqa: E731


# ------------------------------------------------------------------ GPT-2 Conv1D workaround
# AutoTP's heuristic parser refuses GPT-2 outright (module_inject/auto_tp.py:292-303 lists
# 'gpt2' as unsupported -> AssertionError at :349). Its old Conv1D support (conv_LinearLayer,
# Conv_LinearALlreduce) is only reachable through the inference kernel-injection policy path.
# With a partition_config every module with a 2-D weight is routed to the nn.Linear layers
# (auto_tp.py:1079-1082), which would read Conv1D's [in, out] weight as [out, in]. So: swap
# Conv1D for nn.Linear (transposed weights; numerically the same layer) BEFORE deepspeed,
# give AutoTP explicit specs, and transpose back when exporting.
GPT2_CONV1D = (".attn.c_attn", ".attn.c_proj", ".mlp.c_fc", ".mlp.c_proj")
GPT2_PARTITION_CONFIG = {
    "use_default_specs": False,
    "layer_specs": [
        # fused [Q;K;V] on dim 0: split each of the 3 blocks, so a rank keeps whole heads of Q, K, V
        {"patterns": [r".*\.attn\.c_attn\.weight$"], "partition_type": "column",
         "shape": [3, -1], "partition_dim": 0},
        {"patterns": [r".*\.mlp\.c_fc\.weight$"], "partition_type": "column"},
        {"patterns": [r".*\.attn\.c_proj\.weight$", r".*\.mlp\.c_proj\.weight$"], "partition_type": "row"},
    ],
}


def gpt2_conv1d_to_linear(model: nn.Module) -> None:
    from transformers.pytorch_utils import Conv1D

    for mod in list(model.modules()):
        for name, child in list(mod.named_children()):
            if isinstance(child, Conv1D):  # Conv1D(nf=out, nx=in): weight [in, out], y = x @ W + b
                lin = nn.Linear(child.weight.shape[0], child.weight.shape[1])
                with torch.no_grad():
                    lin.weight.copy_(child.weight.t())
                    lin.bias.copy_(child.bias)
                setattr(mod, name, lin)


def gpt2_fix_split_size(model: nn.Module) -> None:
    # AutoTP shards GPT2Attention.embed_dim / num_heads (update_mp_params, auto_tp.py:970-999)
    # but not split_size, which GPT2Attention.forward uses to cut the fused c_attn output.
    from transformers.models.gpt2.modeling_gpt2 import GPT2Attention

    for m in model.modules():
        if isinstance(m, GPT2Attention):
            m.split_size = m.c_attn.weight.shape[0] // 3


def gpt2_state_dict_to_hf(sd: dict) -> dict:
    return {k: (v.t().contiguous() if k.endswith(".weight") and any(s + ".weight" in k for s in GPT2_CONV1D)
                else v) for k, v in sd.items()}


# ------------------------------------------------------------------ single-process reference
def reference_run(arch: str, steps: int, dp: int, clip: float) -> dict:
    """The plain-torch run: one process, the unmodified HF model (GPT-2 keeps its Conv1D), the
    replicas' micro-batches concatenated into one global batch, same AdamW and clipping."""
    model = build_model(arch)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WD)
    losses = []
    for step in range(steps):
        bs = [make_batch(step, r) for r in range(dp)]
        batch = {k: torch.cat([b[k] for b in bs]) for k in bs[0]}
        loss = model(**batch).loss
        loss.backward()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=EVAL_BATCH()).logits
    return {"losses": losses, "logits": logits, "numel": sum(p.numel() for p in model.parameters())}


# ------------------------------------------------------------------ distributed worker
def ds_config(args) -> dict:
    tp = {"autotp_size": args.tp}
    if args.arch == "gpt2" and not args.gpt2_native:
        tp["partition_config"] = GPT2_PARTITION_CONFIG
    cfg = {
        "train_micro_batch_size_per_gpu": MICRO_BS,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": args.clip,
        # no "optimizer" section: the client optimizer below is a torch one, so nothing is built.
        # (Alternative: "optimizer": {"type": "AdamW", "params": {..., "torch_adam": true}};
        # without torch_adam DeepSpeed would pick FusedAdam/CPUAdam, i.e. a C++ op build.)
        "zero_optimization": {"stage": args.zero},
        "tensor_parallel": tp,
        # fp32: neither "bf16" nor "fp16". (tensor_parallel.dtype defaults to fp16 but is only
        # compared with tp_model_init's dtype, runtime/tensor_parallel/init_utils.py:134-146.)
        "steps_per_print": 10**9,
    }
    if args.explicit_train_batch:
        # the true global batch: micro x grad_accum x DP degree (= world / tp). DeepSpeedConfig
        # checks train_batch == micro * gas * world_size (runtime/config.py:602), and its
        # world_size is the DP size only if an mpu is passed (runtime/config.py:457-471);
        # deepspeed.initialize builds the config (deepspeed/__init__.py:555) BEFORE the engine
        # creates the TP groups, so without --mpu world_size = global world and this asserts.
        cfg["train_batch_size"] = MICRO_BS * (args.world // args.tp)
    if args.ds_optimizer:
        # DeepSpeed-built optimizer without any C++ op: torch_adam -> torch.optim.AdamW
        cfg["optimizer"] = {"type": "AdamW", "params": {"lr": LR, "weight_decay": WD, "torch_adam": True}}
    return cfg


def new_engine(args):
    import deepspeed

    model = build_model(args.arch)
    if args.arch == "gpt2" and not args.gpt2_native:
        gpt2_conv1d_to_linear(model)
    kw = {}
    if args.mpu:
        # Build DeepSpeed's (dp, tp) groups ourselves and pass the groups module as mpu, so the
        # config's batch arithmetic uses the DP size. The engine would call this same function
        # later anyway (runtime/engine.py:958); it is idempotent (utils/groups.py:209).
        from deepspeed.utils import groups
        # deepspeed.comm must wrap the existing gloo group first ("DeepSpeed backend not set"
        # otherwise); with torch.distributed already initialised this only adopts it.
        deepspeed.init_distributed(dist_backend="gloo")
        groups._init_tp_mesh_device(tensor_model_parallel_size=args.tp)
        kw["mpu"] = groups
    if not args.ds_optimizer:
        # A callable is called with the (already sharded) parameters, so the optimizer only ever
        # sees the shards. AdamW is in ZERO_SUPPORTED_OPTIMIZERS (runtime/zero/utils.py:45).
        kw["optimizer"] = lambda params: torch.optim.AdamW(params, lr=LR, weight_decay=WD)
    engine, _, _, _ = deepspeed.initialize(model=model, config=ds_config(args), **kw)
    if args.arch == "gpt2" and not args.gpt2_native:
        gpt2_fix_split_size(engine.module)
    return engine


def train_steps(engine, steps, dp_rank, dp_group, dp):
    losses = []
    for step in steps:
        loss = engine(**make_batch(step, dp_rank)).loss
        engine.backward(loss)
        engine.step()
        l = loss.detach().clone()
        if dp > 1:  # the reference loss is the global-batch mean = mean over replicas
            dist.all_reduce(l, group=dp_group)
            l /= dp
        losses.append(l.item())
    return losses


def eval_logits(engine):
    engine.eval()  # all TP ranks must run the forward (collectives inside)
    with torch.no_grad():
        out = engine(input_ids=EVAL_BATCH()).logits
    engine.train()
    return out


def worker(rank: int, args, port: int):
    # What Ray Train's TorchTrainer does for us: env + init_process_group, before DeepSpeed.
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(args.world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(args.world))
    dist.init_process_group("gloo", rank=rank, world_size=args.world)
    torch.manual_seed(1234)  # identical on all TP ranks (see build_model)

    import deepspeed
    from deepspeed.utils import groups

    res: dict = {}
    out_dir = os.path.join(HERE, "runs", args.tag)
    ckpt_dir = os.path.join(out_dir, "ckpt")

    try:
        engine = new_engine(args)
    except Exception as e:  # GPT-2 without the workaround ends here
        res["init_error"] = f"{type(e).__name__}: {e}"
        if rank == 0:
            json.dump(res, open(os.path.join(out_dir, "result.json"), "w"), indent=1)
        dist.destroy_process_group()
        return

    tp_rank, dp_rank = groups.get_tensor_model_parallel_rank(), groups.get_data_parallel_rank()
    dp_group, dp = groups.get_data_parallel_group(), groups.get_data_parallel_world_size()

    # ---- 3. parameters per rank ---------------------------------------------------------
    from deepspeed.runtime.utils import is_model_parallel_parameter

    named = list(engine.module.named_parameters())  # tied params appear once
    mine = {
        "rank": rank, "tp_rank": tp_rank, "dp_rank": dp_rank,
        "numel": sum(p.numel() for _, p in named),
        "numel_tp_sharded": sum(p.numel() for _, p in named if is_model_parallel_parameter(p)),
        "numel_replicated": sum(p.numel() for _, p in named if not is_model_parallel_parameter(p)),
        "dtypes": sorted({str(p.dtype) for _, p in named}),
    }
    per_rank = [None] * args.world
    dist.all_gather_object(per_rank, mine)
    res["per_rank"] = per_rank
    res["shapes"] = {n: list(p.shape) for n, p in named}
    res["sharded"] = [n for n, p in named if is_model_parallel_parameter(p)]
    res["replicated"] = [n for n, p in named if not is_model_parallel_parameter(p)]
    res["tp_modules"] = {n: type(m).__name__ for n, m in engine.module.named_modules()
                         if type(m).__module__.startswith("deepspeed")}
    res["train_batch_size"] = engine.train_batch_size()

    # ---- 2. train 20 steps; save a checkpoint at step 10 on the way --------------------
    t0 = time.time()
    losses = train_steps(engine, range(0, args.steps // 2), dp_rank, dp_group, dp)
    # save_checkpoint: collective; every rank writes its own files (mp_rank_XX per TP rank,
    # ZeRO optimizer partitions per rank).
    engine.save_checkpoint(ckpt_dir, tag="half")
    # Exporting mid-run too: GatherReplacedLayerParams re-binds param.data to fresh tensors,
    # ZeRO-1/2 re-points params at its flat buffer at the next step (stage_1_and_2.py:3164),
    # so training continues correctly (the loss comparison below covers this).
    _ = engine._consolidated_16bit_state_dict()
    losses += train_steps(engine, range(args.steps // 2, args.steps), dp_rank, dp_group, dp)
    res["train_seconds"] = time.time() - t0
    res["losses"] = losses
    tp_logits = eval_logits(engine)

    # ---- 4a. save / load round trip at the end -------------------------------------------
    engine.save_checkpoint(ckpt_dir, tag="end")
    eng2 = new_engine(args)
    eng2.load_checkpoint(ckpt_dir, tag="end", load_optimizer_states=True, load_lr_scheduler_states=True)
    sd1, sd2 = engine.module.state_dict(), eng2.module.state_dict()
    rt = max((sd1[k].float() - sd2[k].float()).abs().max().item() for k in sd1)
    if args.zero > 0:  # ZeRO-1/2: flat fp32 master partitions + AdamW state keyed by them
        o1 = engine.optimizer.single_partition_of_fp32_groups
        o2 = eng2.optimizer.single_partition_of_fp32_groups
        st1, st2 = engine.optimizer.optimizer.state, eng2.optimizer.optimizer.state
    else:  # plain torch optimizer over the (sharded) module parameters
        o1 = [p for g in engine.optimizer.param_groups for p in g["params"]]
        o2 = [p for g in eng2.optimizer.param_groups for p in g["params"]]
        st1, st2 = engine.optimizer.state, eng2.optimizer.state
    rt_opt = max((a - b).abs().max().item() for a, b in zip(o1, o2))
    rt_m = max((st1[a]["exp_avg_sq"] - st2[b]["exp_avg_sq"]).abs().max().item()
               for a, b in zip(o1, o2))
    res["roundtrip_max_param_diff"] = rt
    res["roundtrip_max_fp32_master_diff"] = rt_opt
    res["roundtrip_max_exp_avg_sq_diff"] = rt_m
    res["roundtrip_global_steps"] = [engine.global_steps, eng2.global_steps]
    res["roundtrip_logits_diff"] = (eval_logits(eng2) - tp_logits).abs().max().item()
    del eng2

    # ---- 4b. ONE consolidated HF state dict ----------------------------------------------
    # engine._consolidated_16bit_state_dict(): collective; with autotp_size>1 and ZeRO<3 it is
    # _replace_module_consolidated_state_dict (runtime/engine.py:5571-5603): module by module it
    # all-gathers the TP shards (GatherReplacedLayerParams -> layer.gather_params), copies to CPU
    # on global rank 0, re-partitions. Despite the name it keeps the model dtype (fp32 here);
    # parameters only, no buffers; returns None on ranks != 0.
    # NOT engine.save_16bit_model(): for ZeRO<3 it saves module.state_dict() of rank 0, i.e. a
    # TP *shard* (runtime/engine.py:5742) -- shown below.
    full = engine._consolidated_16bit_state_dict()
    engine.save_16bit_model(os.path.join(out_dir, "save_16bit_model"))
    if rank == 0:
        import transformers as T

        if args.arch == "gpt2":
            full = gpt2_state_dict_to_hf(full)
        hf = build_model(args.arch)  # plain transformers model, full size
        missing, unexpected = hf.load_state_dict(full, strict=False)
        res["export_missing_keys"], res["export_unexpected_keys"] = list(missing), list(unexpected)
        res["export_shapes_match"] = all(tuple(full[k].shape) == tuple(v.shape)
                                         for k, v in hf.state_dict().items() if k in full)
        hf_dir = os.path.join(out_dir, "hf_export")
        hf.save_pretrained(hf_dir)  # safetensors; tied lm_head/embeddings saved once
        hf2 = getattr(T, type(hf).__name__).from_pretrained(hf_dir)
        hf2.eval()
        with torch.no_grad():
            hf_logits = hf2(input_ids=EVAL_BATCH()).logits
        res["export_vs_tp_logits_max_abs"] = (hf_logits - tp_logits).abs().max().item()
        torch.save(hf_logits, os.path.join(out_dir, "export_logits.pt"))
        s16 = torch.load(os.path.join(out_dir, "save_16bit_model", "pytorch_model.bin"))
        res["save_16bit_model_shapes_sample"] = {k: list(v.shape) for k, v in list(s16.items())[:4]}

    # ---- 5. resume: fresh engine loads "half", trains the second half ---------------------
    eng3 = new_engine(args)
    eng3.load_checkpoint(ckpt_dir, tag="half", load_optimizer_states=True, load_lr_scheduler_states=True)
    resumed = train_steps(eng3, range(args.steps // 2, args.steps), dp_rank, dp_group, dp)
    res["resumed_losses"] = resumed
    res["resume_max_loss_diff"] = max(abs(a - b) for a, b in zip(resumed, losses[args.steps // 2:]))
    sd3 = eng3.module.state_dict()
    res["resume_max_param_diff"] = max((sd1[k].float() - sd3[k].float()).abs().max().item() for k in sd1)
    res["resume_logits_diff"] = (eval_logits(eng3) - tp_logits).abs().max().item()

    # every rank's view of the resume diff (each rank holds different shards)
    diffs = [None] * args.world
    dist.all_gather_object(diffs, [res["resume_max_loss_diff"], res["resume_max_param_diff"]])
    res["resume_diffs_per_rank"] = diffs
    if rank == 0:
        torch.save(tp_logits, os.path.join(out_dir, "tp_logits.pt"))
        json.dump(res, open(os.path.join(out_dir, "result.json"), "w"), indent=1)
    dist.barrier()
    dist.destroy_process_group()


# ------------------------------------------------------------------ driver
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", choices=["gpt2", "llama", "bert"], default="llama")
    ap.add_argument("--zero", type=int, choices=[0, 1, 2], default=1)
    ap.add_argument("--tp", type=int, default=2)
    ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--clip", type=float, default=CLIP)
    ap.add_argument("--gpt2-native", action="store_true", help="hand GPT-2 to AutoTP unmodified")
    ap.add_argument("--port", type=int, default=29600)
    ap.add_argument("--explicit-train-batch", action="store_true",
                    help='also set "train_batch_size" = micro x DP degree')
    ap.add_argument("--mpu", action="store_true", help="pre-build the TP/DP groups and pass mpu=groups")
    ap.add_argument("--ds-optimizer", action="store_true",
                    help='DeepSpeed "optimizer" config section (AdamW, torch_adam) instead of a client optimizer')
    args = ap.parse_args()
    args.tag = (f"{args.arch}{'_native' if args.gpt2_native else ''}_z{args.zero}_tp{args.tp}_w{args.world}"
                + "_tb" * args.explicit_train_batch + "_mpu" * args.mpu + "_dsopt" * args.ds_optimizer)
    out_dir = os.path.join(HERE, "runs", args.tag)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)

    t0 = time.time()
    ref = reference_run(args.arch, args.steps, args.world // args.tp, args.clip)
    print(f"[ref] single process {time.time() - t0:.1f}s, params {ref['numel']}")

    t0 = time.time()
    mp.spawn(worker, args=(args, args.port), nprocs=args.world, join=True)
    print(f"[tp] {args.world} processes {time.time() - t0:.1f}s")

    res = json.load(open(os.path.join(out_dir, "result.json")))
    if "init_error" in res:
        print("deepspeed.initialize failed:", res["init_error"][:400])
        return
    tp_logits = torch.load(os.path.join(out_dir, "tp_logits.pt"))
    loss_diff = max(abs(a - b) for a, b in zip(res["losses"], ref["losses"]))
    summary = {
        "tag": args.tag,
        "train_batch_size": res["train_batch_size"],
        "max_abs_loss_diff_vs_single_process": loss_diff,
        "first_last_loss_tp": [res["losses"][0], res["losses"][-1]],
        "first_last_loss_ref": [ref["losses"][0], ref["losses"][-1]],
        "final_logits_tp_vs_single_process": (tp_logits - ref["logits"]).abs().max().item(),
        "params_full_model": ref["numel"],
        "params_per_rank": [{k: r[k] for k in ("rank", "numel", "numel_tp_sharded", "numel_replicated", "dtypes")}
                            for r in res["per_rank"]],
        "export_vs_tp_logits_max_abs": res["export_vs_tp_logits_max_abs"],
        "export_missing/unexpected": [res["export_missing_keys"], res["export_unexpected_keys"]],
        "export_shapes_match": res["export_shapes_match"],
        "save_16bit_model_shapes_sample": res["save_16bit_model_shapes_sample"],
        "roundtrip": {k: res[k] for k in res if k.startswith("roundtrip")},
        "resume_max_loss_diff": res["resume_max_loss_diff"],
        "resume_max_param_diff": res["resume_max_param_diff"],
        "resume_logits_diff": res["resume_logits_diff"],
        "resume_diffs_per_rank": res["resume_diffs_per_rank"],
        "tp_modules": sorted(set(res["tp_modules"].values())),
        "replicated": res["replicated"],
    }
    json.dump(summary, open(os.path.join(out_dir, "summary.json"), "w"), indent=1)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
