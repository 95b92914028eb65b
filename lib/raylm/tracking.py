"""Experiment tracking: an MLflow run and TensorBoard event files, written from rank 0 by a
background thread, so that no training step waits on a disk or a tracking server.

    target = open_run(cfg)                  # driver, before the TorchTrainer starts
    tracker = Tracker(target, resume_step)  # rank 0 of the workers
    tracker.log(step, {"train_loss": 2.31, "lr": 3e-4, ...}); tracker.close()
    finish_run(cfg, "FINISHED")             # driver: FINISHED, FAILED or KILLED
    log_results(cfg)                        # driver, after evaluation: test metrics, artifacts

Per-step metrics do not go through `ray.train.report`: it waits for the Train controller's
poll (docs/architecture.md, facts checked). One MLflow run per raylm run: its id is kept in
`<run dir>/tracking.json`, so a resumed run logs into the same MLflow run. A resumed run
repeats, bit-exactly, the steps between its checkpoint and the kill; the steps MLflow already
holds are not logged again, and TensorBoard's writer is opened with `purge_step` just past the
resume step, so TensorBoard drops what the killed run wrote past its checkpoint. A sink that fails
(server down, disk full) is reported once and switched off: tracking never stops a run.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raylm.config import Config
from raylm.fsutil import write_atomic
from raylm.runfolder import flatten

RECORD = "tracking.json"
PARAM_CHARS = 6000  # MLflow's limit on a param value


@dataclass(frozen=True)
class TrackingTarget:
    """Where rank 0 logs; plain data, pickled into the workers."""

    tensorboard_dir: str | None = None
    mlflow_uri: str | None = None
    mlflow_run_id: str | None = None


def mlflow_uri(cfg: Config) -> str:
    """The configured tracking URI, else a SQLite store shared by every run of output_dir."""
    if cfg.run.tracking.mlflow_uri:
        return cfg.run.tracking.mlflow_uri
    return f"sqlite:///{(Path(cfg.run.output_dir).resolve() / 'mlflow.db').as_posix()}"


def _client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _experiment_id(client: Any, cfg: Config) -> str:
    name = cfg.run.tracking.experiment
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    # A local store keeps artifacts beside its database; a server decides for itself.
    local = cfg.run.tracking.mlflow_uri is None
    root = (Path(cfg.run.output_dir).resolve() / "mlartifacts").as_uri() if local else None
    return client.create_experiment(name, artifact_location=root)


def _recorded_run(run_dir: Path, uri: str) -> str | None:
    try:
        record = json.loads((run_dir / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record.get("mlflow_run_id") if record.get("mlflow_uri") == uri else None


def open_run(cfg: Config, parent_run_id: str | None = None) -> TrackingTarget | None:
    """The run's tracking target: its TensorBoard folder, and its MLflow run (continued when
    tracking.json names one in the same store, else created with the config as params)."""
    settings, run_dir = cfg.run.tracking, cfg.run.run_dir.resolve()
    board = str(run_dir / "tensorboard") if settings.tensorboard else None
    if not settings.mlflow:
        return TrackingTarget(tensorboard_dir=board) if board else None
    from mlflow.entities import Param

    uri = mlflow_uri(cfg)
    client = _client(uri)
    run_id = _recorded_run(run_dir, uri)
    if run_id is not None:  # a resume: params were logged by the first launch (MLflow keeps them)
        client.update_run(run_id, status="RUNNING")
        return TrackingTarget(board, uri, run_id)
    tags = {"raylm.task": cfg.model.task, "raylm.model": cfg.model.path or cfg.model.preset}
    if commit := _git_commit():
        tags["mlflow.source.git.commit"] = commit
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    run = client.create_run(_experiment_id(client, cfg), run_name=cfg.run.name, tags=tags)
    run_id = run.info.run_id
    params = [
        Param(k, json.dumps(v) if not isinstance(v, str) else v)
        for k, v in flatten(cfg.model_dump(mode="json")).items()
    ]
    for i in range(0, len(params), 100):  # MLflow takes at most 100 params a call
        chunk = [Param(p.key, p.value[:PARAM_CHARS]) for p in params[i : i + 100]]
        client.log_batch(run_id, params=chunk)
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {"mlflow_uri": uri, "mlflow_run_id": run_id, "experiment": settings.experiment}
    write_atomic(run_dir / RECORD, json.dumps(record, indent=2) + "\n")
    return TrackingTarget(board, uri, run_id)


def finish_run(cfg: Config, status: str) -> None:
    """Mark the run's MLflow run FINISHED, FAILED or KILLED (nothing without MLflow)."""
    if cfg.run.tracking.mlflow and (run_id := _recorded_run(cfg.run.run_dir, mlflow_uri(cfg))):
        _client(mlflow_uri(cfg)).set_terminated(run_id, status)


def log_results(cfg: Config, data_dir: Path) -> None:
    """After evaluation: the test metrics as `test_*` metrics, and report.md, plots, metrics.json,
    config.yaml and stats.json (the exported model with `log_model`) as artifacts."""
    uri = mlflow_uri(cfg)
    run_dir = cfg.run.run_dir.resolve()
    if not cfg.run.tracking.mlflow or not (run_id := _recorded_run(run_dir, uri)):
        return
    from mlflow.entities import Metric

    client, now = _client(uri), int(time.time() * 1000)
    metrics_file = run_dir / "metrics.json"
    test = json.loads(metrics_file.read_text(encoding="utf-8")).get("test", {})
    found = [Metric(f"test_{k}", v, now, 0) for k, v in test.items() if isinstance(v, (int, float))]
    if found:
        client.log_batch(run_id, metrics=found)
    files = [run_dir / "report.md", metrics_file, run_dir / "config.yaml", data_dir / "stats.json"]
    for path in [*files, *sorted(run_dir.glob("*.png"))]:
        if path.is_file():
            client.log_artifact(run_id, str(path))
    if cfg.run.tracking.log_model and (run_dir / "model").is_dir():
        client.log_artifacts(run_id, str(run_dir / "model"), artifact_path="model")


class Tracker:
    """Rank 0's sink. `log` only queues: a daemon thread opens the sinks (their imports too)
    and writes, so a step costs one queue put."""

    def __init__(self, target: TrackingTarget, resume_step: int = 0) -> None:
        self.target, self.resume_step = target, resume_step
        self.problems: list[str] = []
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._drain, name="raylm-tracking", daemon=True)
        self._thread.start()

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        values = {
            k: float(v)
            for k, v in metrics.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        self._queue.put((int(step), values))

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until what is queued is written and on disk: the loop calls it before saving a
        checkpoint, so a kill after the checkpoint loses no event the resume would not repeat."""
        done = threading.Event()
        self._queue.put(done)
        done.wait(timeout_s)

    def close(self, timeout_s: float = 60.0) -> None:
        """Write what is queued, then stop (the run's end)."""
        self._queue.put(None)
        self._thread.join(timeout_s)

    # ---------------------------------------------------------------- the writing thread
    def _drain(self) -> None:
        sinks = [s for s in (self._board(), self._mlflow()) if s is not None]
        while (item := self._queue.get()) is not None:
            for sink in list(sinks):
                try:
                    sink.flush() if isinstance(item, threading.Event) else sink.write(*item)
                except Exception as err:  # noqa: BLE001 - a tracking failure never stops a run
                    self._problem(f"{type(sink).__name__} stopped: {err}")
                    sinks.remove(sink)
            if isinstance(item, threading.Event):
                item.set()
        for sink in sinks:
            sink.close()

    def _problem(self, message: str) -> None:
        self.problems.append(message)
        print(f"[raylm] warning: tracking: {message}", flush=True)

    def _board(self) -> _Board | None:
        if not self.target.tensorboard_dir:
            return None
        try:
            return _Board(self.target.tensorboard_dir, self.resume_step)
        except Exception as err:  # noqa: BLE001
            self._problem(f"TensorBoard off: {err}")
            return None

    def _mlflow(self) -> _MLflow | None:
        if not self.target.mlflow_run_id:
            return None
        try:
            return _MLflow(self.target.mlflow_uri, self.target.mlflow_run_id)
        except Exception as err:  # noqa: BLE001
            self._problem(f"MLflow off: {err}")
            return None


class _Board:
    def __init__(self, folder: str, resume_step: int) -> None:
        from tensorboardX import SummaryWriter

        # purge_step: TensorBoard discards events at or past it from this run's earlier files
        # (what the checkpoint's step logged stays). The suffix: two launches within one second
        # would otherwise share a file name.
        self.writer = SummaryWriter(
            folder,
            purge_step=resume_step + 1 if resume_step else None,
            flush_secs=10,
            filename_suffix=f".{os.getpid()}.from{resume_step}",
        )

    def write(self, step: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class _MLflow:
    def __init__(self, uri: str | None, run_id: str) -> None:
        from mlflow.entities import Metric

        self.metric, self.client, self.run_id = Metric, _client(uri), run_id
        self.last: dict[str, int] = {}  # key -> last step MLflow holds (a resume skips those)

    def _last_step(self, key: str) -> int:
        if key not in self.last:
            history = self.client.get_metric_history(self.run_id, key)
            self.last[key] = max((m.step for m in history), default=-1)
        return self.last[key]

    def write(self, step: int, metrics: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        new = [
            self.metric(k, v, now, step) for k, v in metrics.items() if step > self._last_step(k)
        ]
        if new:
            self.client.log_batch(self.run_id, metrics=new)
            self.last.update({m.key: step for m in new})

    def flush(self) -> None:  # every write is a committed call to the store
        pass

    def close(self) -> None:
        pass
