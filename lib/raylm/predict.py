"""Batch inference with an exported model over files: `raylm predict`.

    raylm predict outputs/sentiment_zh --input reviews.jsonl --output preds/
    summary = predict_files("outputs/sentiment_zh", ["reviews.jsonl"], "preds")

The model is a run folder (its `model/`) or a model folder: its raylm.json names the task and
the cleaning its training data had (`--task` for a folder raylm did not write). Inputs are
files, folders, globs or URIs read by the recipe readers (text, jsonl, csv, parquet; QA models:
squad, jsonl, parquet with `question` and `context`), cleaned as the training data was, so the
model sees text in the form it learned from. A pool of Ray Data actors (one model each, a GPU
each where the cluster has GPUs) scores the rows; the driver writes them as they stream back:

    DIR/predictions/part-00000.parquet ...  source, line (id), the input and the prediction
    DIR/rejects.jsonl                      source, line, reason, text of every row not predicted
    DIR/summary.json                       rows, predicted, rejected by reason, rows/s, model

    task             prediction columns
    classification   label, label_id, score (the label's probability)
    causal_lm        completion (greedy, max_new_tokens)
    qa               answer (generated; on the page as the model's recipe chose)
    extractive_qa    answer, start, end, score (context[start:end] == answer)

DIR is written beside itself and swapped in whole when done: a failed run leaves an older
prediction there as it was, and a folder that holds anything else is never written into.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from raylm.console import say

QA_KINDS = ("answer", "extract")
SUMMARY = "summary.json"
PART_ROWS = 500_000  # rows per predictions part file
_FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet"}


@dataclass(frozen=True)
class Target:
    """The model to predict with, what it does and how its inputs are prepared."""

    model_dir: str
    task: str
    kind: str
    meta: dict[str, Any] = field(default_factory=dict)
    clean: Any = None  # raylm.config.CleanConfig of the training data; None: decode only
    convert: str | None = None  # data.convert (OpenCC) of the training data


# ------------------------------------------------------------------------------- the model
def resolve_target(model: str, task: str | None = None) -> Target:
    """A run folder (its model/), a model folder or a Hugging Face model id, with its task."""
    from raylm.models.export import is_model_folder, read_model_meta

    path = Path(model)
    if path.is_dir() and not is_model_folder(path) and is_model_folder(path / "model"):
        path = path / "model"  # a run folder
    elif path.exists() and not is_model_folder(path):
        raise FileNotFoundError(
            f"{model}: neither a run folder with model/ (run `raylm export` first) nor a model "
            "folder (config.json)"
        )
    meta = read_model_meta(path) if path.is_dir() else {}
    task = task or meta.get("task")
    if task is None:
        raise ValueError(f"{model}: no raylm.json says its task: pass --task ({_tasks()})")
    from raylm.tasks import TASKS

    if task not in TASKS or TASKS[task].predicts is None:
        raise ValueError(
            f"task '{task}' predicts nothing here ({_tasks()}); an mlm model is fine-tuned "
            "first (model.path) and then predicts as that task"
        )
    prep = meta.get("preprocess") or {}
    clean = None
    if prep.get("clean") is not None:
        from raylm.config import CleanConfig

        clean = CleanConfig.model_validate(prep["clean"])
    model_ref = str(path) if path.exists() else model  # else a hub id, for from_pretrained
    return Target(model_ref, task, TASKS[task].predicts, meta, clean, prep.get("convert"))


def _tasks() -> str:
    from raylm.tasks import TASKS

    return ", ".join(name for name, t in TASKS.items() if t.predicts)


# ------------------------------------------------------------------------------ the inputs
def infer_format(paths: list[str]) -> str:
    """The reader for `paths` from the first file's extension (.jsonl/.json, .csv, .parquet;
    anything else: text, one record a line). A .json file for a QA model is SQuAD."""
    from raylm.data.sources import resolve_paths

    found, _ = resolve_paths(paths)
    if not found:
        raise FileNotFoundError(f"no input files in {paths}")
    name = found[0].removesuffix(".gz")
    return _FORMATS.get(Path(name).suffix.lower(), "text")


def _data_config(target: Target, paths: list[str], fmt: str, text_column: str) -> Any:
    from raylm.config import CleanConfig, DataConfig

    return DataConfig(
        source=fmt,
        paths=paths,
        text_column=text_column,
        label_column=None,
        clean=target.clean or CleanConfig(),
        convert=target.convert,
    )


def _cleaned(batch: dict[str, np.ndarray], data_cfg: Any, clean: bool) -> pa.Table:
    from raylm.data import steps
    from raylm.data.reading import RECORD_SCHEMA, arrow_table

    out = steps.clean_batch(batch, data_cfg) if clean else dict(batch)
    if not clean:  # only decoded: an empty text is still nothing to predict from
        pairs = zip(out["reject_reason"], out["text"], strict=True)
        out["reject_reason"] = [r or ("" if str(t).strip() else "empty") for r, t in pairs]
    return arrow_table(out, RECORD_SCHEMA)


def read_texts(target: Target, paths: list[str], fmt: str, text_column: str) -> Any:
    """Records (RECORD_SCHEMA) of the inputs, cleaned as the model's training data was."""
    from raylm.data.reading import read_source

    data_cfg = _data_config(target, paths, fmt, text_column)
    records, _ = read_source(data_cfg)
    kwargs = {"data_cfg": data_cfg, "clean": target.clean is not None}
    return records.map_batches(_cleaned, fn_kwargs=kwargs, batch_format="numpy")


QUESTION_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("question", pa.string()),
        ("context", pa.string()),
        ("reject_reason", pa.string()),
        ("source", pa.string()),
        ("line", pa.int64()),
    ]
)


def _question(row_id: Any, question: Any, context: Any, source: str, line: int) -> dict:
    reason = ""
    if question is None or not str(question).strip():
        reason = "missing_question"
    elif context is None or not str(context).strip():
        reason = "missing_context"
    return {
        "id": "" if row_id is None else str(row_id),
        "question": "" if question is None else str(question),
        "context": "" if context is None else str(context),
        "reject_reason": reason,
        "source": source,
        "line": line,
    }


def question_rows(data: bytes, source: str, fmt: str) -> list[dict[str, Any]]:
    """One row per question of a SQuAD file or per line of a JSON Lines file (`id`, `question`,
    `context`). Rejects: invalid_utf8, empty, invalid_json, missing_question, missing_context."""
    from raylm.data import sources

    if fmt == "squad":
        found = sources.parse_squad(data, source)
        return [
            _question(q["id"], q["question"], q["context"], source, n)
            for n, q in enumerate(found, start=1)
        ] or [{**_question(None, None, None, source, 0), "reject_reason": "empty_file"}]
    rows = []
    for n, raw in enumerate(sources.split_lines(data), start=1):
        text, reason = sources.decode_line(raw)
        obj = None
        if not reason and not text.strip():
            reason = "empty"
        elif not reason:
            try:
                obj = json.loads(text)
            except json.JSONDecodeError:
                reason = "invalid_json"
            if not reason and not isinstance(obj, dict):
                reason = "invalid_json"
        if reason:
            rows.append({**_question(None, text, "", source, n), "reject_reason": reason})
            continue
        rows.append(_question(obj.get("id"), obj.get("question"), obj.get("context"), source, n))
    return rows or [{**_question(None, None, None, source, 0), "reject_reason": "empty_file"}]


def _question_files(batch: dict[str, np.ndarray], fmt: str) -> pa.Table:
    rows = []
    for data, path in zip(batch["bytes"], batch["path"], strict=True):
        rows += question_rows(data, str(path), fmt)
    return pa.Table.from_pylist(rows, schema=QUESTION_SCHEMA)


def _question_table(batch: dict[str, np.ndarray]) -> pa.Table:
    missing = [c for c in ("question", "context") if c not in batch]
    if missing:
        where = str(batch["path"][0]) if len(batch.get("path", [])) else "input"
        raise ValueError(f"{where}: no column {missing[0]!r} (columns: {sorted(batch)})")
    ids = batch["id"] if "id" in batch else [None] * len(batch["question"])
    rows = [
        _question(i, q, c, str(p), -1)
        for i, q, c, p in zip(ids, batch["question"], batch["context"], batch["path"], strict=True)
    ]
    return pa.Table.from_pylist(rows, schema=QUESTION_SCHEMA)


def _convert_questions(batch: pa.Table, config: str) -> pa.Table:
    from raylm.data.convert import converter

    convert = converter(config)
    for name in ("question", "context"):
        texts = [convert(t) for t in batch.column(name).to_pylist()]
        batch = batch.set_column(batch.schema.get_field_index(name), name, pa.array(texts))
    return batch


def read_questions(target: Target, paths: list[str], fmt: str) -> Any:
    """Rows of QUESTION_SCHEMA from SQuAD JSON, JSON Lines or Parquet (id, question, context),
    converted (OpenCC) as the training data was. Contexts are not cleaned: spans are offsets."""
    import ray

    from raylm.data.sources import resolve_paths

    if fmt not in ("squad", "jsonl", "parquet"):
        raise ValueError(f"a QA model reads squad, jsonl or parquet inputs, not {fmt}")
    found, fs = resolve_paths(paths)
    if fmt == "parquet":
        ds = ray.data.read_parquet(found, filesystem=fs, include_paths=True)
        ds = ds.map_batches(_question_table, batch_format="numpy")
    else:
        ds = ray.data.read_binary_files(found, filesystem=fs, include_paths=True)
        ds = ds.map_batches(
            _question_files, fn_kwargs={"fmt": fmt}, batch_format="numpy", batch_size=1
        )
    if target.convert:
        ds = ds.map_batches(
            _convert_questions, fn_kwargs={"config": target.convert}, batch_format="pyarrow"
        )
    return ds


# ------------------------------------------------------------------------------ the actors
class RowPredictor:
    """One model per Ray Data actor. Each batch comes back with its rows' ids and inputs, the
    prediction columns of the model's kind (empty for rows rejected before) and reject_reason
    (a row the model cannot take, e.g. a question too long for its window, is rejected here)."""

    def __init__(self, target: Target, options: dict[str, Any]):
        import torch

        torch.set_num_threads(int(options.get("threads") or 1))
        self.target, self.kind, self.options = target, target.kind, options
        self.device = "cuda" if options.get("num_gpus") and torch.cuda.is_available() else "cpu"
        max_length = int(options.get("max_length") or target.meta.get("max_length") or 512)
        if self.kind == "classify":
            from raylm.eval.predict import ClassifierPredictor

            self.model = ClassifierPredictor(target.model_dir, max_length)
            self.model.model.to(self.device)
            cap = int(getattr(self.model.model.config, "max_position_embeddings", max_length))
            self.model.max_length = min(max_length, cap)
            config = self.model.model.config
            id2label = {int(k): str(v) for k, v in (target.meta.get("id2label") or {}).items()}
            id2label = id2label or {int(k): str(v) for k, v in config.id2label.items()}
            self.labels = [id2label.get(i, f"LABEL_{i}") for i in range(config.num_labels)]
        elif self.kind == "extract":
            from raylm.span_reader import SpanReader

            self.model = SpanReader(target.model_dir, device=self.device)
        else:
            from transformers import AutoTokenizer

            from raylm.models.export import load_model

            self.tokenizer = AutoTokenizer.from_pretrained(target.model_dir)
            self.model = load_model(target.model_dir, "AutoModelForCausalLM").eval()
            self.model.to(self.device)
            self.max_length = max_length

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        reasons = [str(r or "") for r in batch["reject_reason"]]
        ok = [i for i, r in enumerate(reasons) if not r]
        return getattr(self, f"_{self.kind}")(batch, ok, reasons)

    def _classify(self, batch: dict[str, np.ndarray], ok: list[int], reasons: list[str]):
        n = len(reasons)
        label_ids, scores = np.full(n, -1, np.int64), np.full(n, np.nan)
        texts = [str(t) for t in batch["text"]]
        # Longest first in chunks of similar length: far less padding than the batch's order.
        order = sorted(ok, key=lambda i: len(texts[i]), reverse=True)
        chunk = int(self.options.get("micro_batch") or 64)
        for lo in range(0, len(order), chunk):
            rows = order[lo : lo + chunk]
            preds, probs = self.model.predict_texts([texts[i] for i in rows])
            label_ids[rows], scores[rows] = preds, probs.max(-1)
        labels = [self.labels[i] if i >= 0 else "" for i in label_ids]
        return {
            "source": batch["source"], "line": batch["line"], "text": texts,
            "label": labels, "label_id": label_ids, "score": scores, "reject_reason": reasons,
        }  # fmt: skip

    def _complete(self, batch: dict[str, np.ndarray], ok: list[int], reasons: list[str]):
        from raylm.generate import generate

        completions = [""] * len(reasons)
        prompts = [str(t) for t in batch["text"]]
        results = generate(
            self.model, self.tokenizer, [prompts[i] for i in ok], self._max_new_tokens()
        )
        for i, res in zip(ok, results, strict=True):
            completions[i] = res.text
        return {
            "source": batch["source"], "line": batch["line"], "prompt": prompts,
            "completion": completions, "reject_reason": reasons,
        }  # fmt: skip

    def _max_new_tokens(self) -> int:
        return int(self.options.get("max_new_tokens") or 32)

    def _answer(self, batch: dict[str, np.ndarray], ok: list[int], reasons: list[str]):
        from raylm.constrain import ContextConstraint
        from raylm.data.qa import DEFAULT_TEMPLATE, prompt_batch
        from raylm.generate import generate

        template = self.target.meta.get("prompt_template") or DEFAULT_TEMPLATE
        prompted = prompt_batch(
            {**batch, "reject_reason": reasons}, self.tokenizer, self.max_length,
            self._max_new_tokens(), template,
        )  # fmt: skip
        reasons = list(prompted["reject_reason"])
        ok = [i for i in ok if not reasons[i]]
        answers = [""] * len(reasons)
        rules = None
        if self.options.get("constrain", True):
            rules = [
                ContextConstraint.of(self.tokenizer, prompted["context_window"][i]) for i in ok
            ]
        prompts = [prompted["prompt"][i] for i in ok]
        results = generate(
            self.model, self.tokenizer, prompts, self._max_new_tokens(), constraints=rules
        )
        for i, res in zip(ok, results, strict=True):
            answers[i] = res.text.strip()
        return {
            "source": batch["source"], "line": batch["line"], "id": batch["id"],
            "question": batch["question"], "answer": answers, "reject_reason": reasons,
        }  # fmt: skip

    def _extract(self, batch: dict[str, np.ndarray], ok: list[int], reasons: list[str]):
        n = len(reasons)
        answers, starts, ends = [""] * n, np.full(n, -1, np.int64), np.full(n, -1, np.int64)
        scores = np.full(n, np.nan)
        if ok:
            found = self.model.answer(
                [str(batch["question"][i]) for i in ok], [str(batch["context"][i]) for i in ok]
            )
            for i, a in zip(ok, found, strict=True):
                answers[i], starts[i], ends[i], scores[i] = a.text, a.start, a.end, a.score
        return {
            "source": batch["source"], "line": batch["line"], "id": batch["id"],
            "question": batch["question"], "answer": answers, "start": starts, "end": ends,
            "score": scores, "reject_reason": reasons,
        }  # fmt: skip


# ------------------------------------------------------------------------------ the output
class _Output:
    """Writes the streamed batches into a staging folder: predictions as Parquet parts, rejects
    as JSON Lines; counts both."""

    def __init__(self, staging: Path):
        self.staging = staging
        (staging / "predictions").mkdir(parents=True)
        self.rejects = (staging / "rejects.jsonl").open("w", encoding="utf-8")
        self.writer: Any = None
        self.parts = self.part_rows = self.predicted = 0
        self.rejected: dict[str, int] = {}

    def add(self, batch: pa.Table) -> None:
        import pyarrow.compute as pc

        kept = pc.equal(batch.column("reject_reason"), "")
        self._predictions(batch.filter(kept).drop_columns(["reject_reason"]))
        self._rejects(batch.filter(pc.invert(kept)))

    def _predictions(self, table: pa.Table) -> None:
        import pyarrow.parquet as pq

        if not table.num_rows:
            return
        if self.writer is not None and self.part_rows >= PART_ROWS:
            self.writer.close()
            self.writer = None
        if self.writer is None:
            path = self.staging / "predictions" / f"part-{self.parts:05d}.parquet"
            self.writer = pq.ParquetWriter(str(path), table.schema)
            self.parts, self.part_rows = self.parts + 1, 0
        self.writer.write_table(table.cast(self.writer.schema))
        self.part_rows += table.num_rows
        self.predicted += table.num_rows

    def _rejects(self, table: pa.Table) -> None:
        text = "text" if "text" in table.column_names else "question"
        for row in table.select(["source", "line", "reject_reason", text]).to_pylist():
            reason = row["reject_reason"]
            self.rejected[reason] = self.rejected.get(reason, 0) + 1
            record = {"source": row["source"], "line": row["line"], "reason": reason,
                      "text": row[text]}  # fmt: skip
            self.rejects.write(json.dumps(record, ensure_ascii=False) + "\n")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.rejects.close()


def _check_output(out: Path) -> None:
    """DIR may be new, empty or an earlier prediction (its summary.json): anything else is a
    user's folder that predict must not replace."""
    if out.exists() and (
        not out.is_dir() or (any(out.iterdir()) and not (out / SUMMARY).is_file())
    ):
        raise FileExistsError(
            f"{out} exists and is not an earlier `raylm predict` output (no {SUMMARY}): choose "
            "a new or empty folder"
        )  # fmt: skip


def _check_room(actors: int, cpus_per_actor: float, num_gpus: float) -> None:
    """On a Ray of fixed size (embedded), refuse actors that would hold every CPU. A joined
    cluster may grow (autoscaler): it is trusted."""
    import ray

    from raylm import runtime

    if runtime.embedded() and not num_gpus:
        problem = room_problem(actors, cpus_per_actor, ray.cluster_resources().get("CPU", 0))
        if problem:
            raise ValueError(problem)


def room_problem(actors: int, cpus_per_actor: float, cpus: float) -> str | None:
    """Why `actors` of `cpus_per_actor` CPUs cannot run on `cpus` CPUs, or None: they would
    leave none for the tasks that read their inputs, and the job would wait forever."""
    if actors * cpus_per_actor <= cpus - 1:
        return None
    fit = int((cpus - 1) // cpus_per_actor) if cpus > 1 else 0
    share = max(cpus - 1, 0.1) / actors
    return (
        f"{actors} actor(s) of {cpus_per_actor:g} CPU leave none of this Ray's {cpus:g} CPUs "
        f"for reading the inputs: use --concurrency {fit} or fewer, or --cpus-per-actor "
        f"{share:.2g} or less"
    )


def default_concurrency(num_gpus: float) -> int:
    """Actors: one per GPU where the cluster has GPUs, else one per CPU but one (the readers)."""
    import ray

    resources = ray.cluster_resources()
    if num_gpus:
        return max(1, int(resources.get("GPU", 0) // num_gpus))
    return max(1, min(8, int(resources.get("CPU", 1)) - 1))


# ---------------------------------------------------------------------------------- the job
def predict_files(
    model: str,
    inputs: list[str],
    output: str | Path,
    *,
    task: str | None = None,
    fmt: str | None = None,
    text_column: str | None = None,
    batch_size: int = 256,
    concurrency: int | None = None,
    num_gpus: float | None = None,
    cpus_per_actor: float = 1.0,
    max_new_tokens: int = 32,
    constrain: bool | None = None,
    progress_every_s: float = 10.0,
) -> dict[str, Any]:
    """Predict every input row with `model` into `output` (see the module doc); the summary."""
    import ray

    from raylm.config import RunConfig
    from raylm.fsutil import replace_folder, write_atomic
    from raylm.runtime import ensure_ray

    target = resolve_target(model, task)
    out = Path(output).resolve()
    _check_output(out)
    fmt = fmt or infer_format(inputs)
    if target.kind in QA_KINDS and fmt == "jsonl" and all(p.endswith(".json") for p in inputs):
        fmt = "squad"
    if target.kind not in QA_KINDS and fmt == "squad":
        raise ValueError(f"squad inputs hold questions: model task '{target.task}' reads texts")
    ensure_ray(RunConfig())
    if num_gpus is None:
        num_gpus = 1.0 if ray.cluster_resources().get("GPU") else 0.0
    actors = concurrency or default_concurrency(num_gpus)
    _check_room(actors, cpus_per_actor, num_gpus)
    if target.kind in QA_KINDS:
        rows = read_questions(target, inputs, fmt)
    else:
        column = text_column or (target.meta.get("preprocess") or {}).get("text_column", "text")
        rows = read_texts(target, inputs, fmt, column)
    if constrain is None:  # as the model's recipe evaluated it
        prep = target.meta.get("preprocess") or {}
        constrain = bool(prep.get("constrain_to_context", True))
    options = {"num_gpus": num_gpus, "max_new_tokens": max_new_tokens, "constrain": constrain,
               "threads": max(1, round(cpus_per_actor))}  # fmt: skip
    # Blocks of a few batches, so that every actor has work even when the input is one file
    # (a file is read into one block).
    rows = rows.repartition(target_num_rows_per_block=batch_size * 4)
    predicted = rows.map_batches(
        RowPredictor,
        fn_constructor_kwargs={"target": target, "options": options},
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_gpus=num_gpus or None,
        num_cpus=cpus_per_actor,
    )
    say(f"predict: {target.task} model {target.model_dir}, {actors} actor(s), inputs {inputs}")
    staging = out.with_name(out.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    writer = _Output(staging)
    t0 = last = time.perf_counter()
    try:
        for batch in predicted.iter_batches(batch_format="pyarrow", batch_size=None):
            writer.add(batch)
            if time.perf_counter() - last >= progress_every_s:
                last = time.perf_counter()
                done = writer.predicted + sum(writer.rejected.values())
                say(f"predict: {done:,} rows ({done / (last - t0):,.0f} rows/s), "
                    f"{sum(writer.rejected.values()):,} rejected")  # fmt: skip
    except BaseException:
        writer.close()
        shutil.rmtree(staging, ignore_errors=True)
        raise
    writer.close()
    seconds = time.perf_counter() - t0
    rows_total = writer.predicted + sum(writer.rejected.values())
    summary = {
        "model": target.model_dir,
        "task": target.task,
        "inputs": list(inputs),
        "format": fmt,
        "rows": rows_total,
        "predicted": writer.predicted,
        "rejected": dict(sorted(writer.rejected.items())),
        "parts": writer.parts,
        "actors": actors,
        "num_gpus": num_gpus,
        "batch_size": batch_size,
        "cpus_per_actor": cpus_per_actor,
        "cleaned": target.clean is not None,
        "seconds": round(seconds, 2),
        "rows_per_second": round(rows_total / max(seconds, 1e-9), 1),
    }
    write_atomic(staging / SUMMARY, json.dumps(summary, indent=2, ensure_ascii=False))
    replace_folder(staging, out)
    say(f"predict: {writer.predicted:,} predicted, {rows_total - writer.predicted:,} rejected "
        f"{summary['rejected'] or ''} in {seconds:.1f}s ({summary['rows_per_second']:,.0f} "
        f"rows/s) -> {out}")  # fmt: skip
    return summary
