"""Ray Tune search over raylm training runs, with ASHA early stopping and an exported winner.

    raylm tune examples/tune_sentiment.yaml [--resume] [--set tune.num_samples=4]

Each Tune trial runs `_trial` (Train V2 style): it builds the trial's Config (base + sampled
overrides, run.name `<sweep>_<trial_id>`, the sweep's shared preprocessed data) and fits a full
TorchTrainer with its own workers + DeepSpeed. `TuneReportCallback` forwards every epoch's
`ray.train.report` to the trial, so ASHA can stop a trial between epochs.

Writes under `<run.output_dir>/<sweep>/`: data/ (preprocessed once), trials/<run>/ (each
trial's run folder), ray/ (Tune + Train storage unless run.storage_path), results.csv/.md,
trials.png, best_config.yaml, best_model/ and best/ (a run folder `raylm serve` accepts).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raylm.config import Config, ConfigError
from raylm.recipe import config_from_dict
from raylm.tune.settings import TuneSettings
from raylm.tune.space import apply_sample, load_settings, to_param_space


@dataclass
class SweepResult:
    sweep_dir: Path
    best_trial: str
    best_metric: float
    best_config: Path
    best_model: Path
    rows: list[dict[str, Any]]


def _say(msg: str) -> None:
    print(f"[raylm.tune] {msg}", flush=True)


def sweep_name(cfg: Config, settings: TuneSettings) -> str:
    return settings.name or cfg.run.name


def trial_config(base: dict[str, Any], sample: dict[str, Any], run_name: str) -> Config:
    """The trial's Config: base + sampled dotted overrides, its own run name, no tune section."""
    data = apply_sample(base, sample)
    data["run"]["name"] = run_name
    data["tune"] = None
    return config_from_dict(data, source=f"trial {run_name}")


def _make_trial(base: dict[str, Any], sweep: str, parent_run_id: str | None = None):
    """The Tune function trainable; closes over plain data only (it is pickled to workers).
    With MLflow tracking, each trial's run is a child of the sweep's (`parent_run_id`)."""

    def _trial(sample: dict[str, Any]) -> None:
        from ray import tune
        from ray.data import DataContext
        from ray.tune.integration.ray_train import TuneReportCallback

        from raylm.config import dump_config
        from raylm.runtime import configure_ray_data
        from raylm.train.driver import run_trainer

        configure_ray_data()  # a trial's process may be a worker of a Ray that raylm did not start
        # Several trials share one console: Ray Data's per-epoch progress bars from each would
        # bury the trial table and raylm's step lines, even with -v (configure_ray_data would
        # turn them on). Datasets copy this context when created.
        DataContext.get_current().enable_progress_bars = False

        trial_id = tune.get_context().get_trial_id()
        cfg = trial_config(base, sample, f"{sweep}_{trial_id}")
        run_dir = cfg.run.run_dir.resolve()
        run_dir.mkdir(parents=True, exist_ok=True)
        with (run_dir / "starts.log").open("a", encoding="utf-8") as f:  # resume bookkeeping
            f.write(f"{time.time():.3f}\n")
        dump_config(cfg, run_dir / "config.yaml")
        run_trainer(cfg, callbacks=[TuneReportCallback()], parent_run_id=parent_run_id)

    return _trial


def _sweep_config(cfg: Config, sweep: str) -> Config:
    return cfg.model_copy(update={"run": cfg.run.model_copy(update={"name": sweep})})


def _sweep_run(cfg: Config, sweep: str, base: dict[str, Any]) -> str | None:
    """With MLflow tracking: the sweep's own MLflow run (continued on resume), the parent of
    every trial's; the trials log into the sweep's store whatever their output_dir."""
    if not cfg.run.tracking.mlflow:
        return None
    from raylm.tracking import mlflow_uri, open_run

    target = open_run(_sweep_config(cfg, sweep))
    base["run"]["tracking"]["mlflow_uri"] = mlflow_uri(cfg)
    return target.mlflow_run_id if target else None


def _preprocess_once(cfg: Config, data_dir: Path) -> None:
    from raylm import stages

    if (data_dir / "stats.json").is_file():
        _say(f"reusing preprocessed data in {data_dir}")
        return
    prep = cfg.model_copy(deep=True)
    prep.run.data_dir = str(data_dir)
    stages.preprocess(prep)


def _base_for_trials(
    cfg: Config, settings: TuneSettings, sweep_dir: Path, data_dir: Path
) -> dict[str, Any]:
    base = cfg.model_dump(mode="json")
    base["run"]["data_dir"] = str(data_dir)
    base["run"]["output_dir"] = str(sweep_dir / "trials")
    # Trials keep their best checkpoints by the sweep's metric, so the winner's is among them.
    base["train"].update(best_metric=settings.metric, best_mode=settings.mode)
    if cfg.run.storage_path is None:  # trials' Train storage beside the sweep's Tune storage
        base["run"]["storage_path"] = str(sweep_dir / "ray" / "train")
    return base


def _scheduler(settings: TuneSettings, epochs: int):
    if settings.scheduler == "none":
        return None
    from ray.tune.schedulers import ASHAScheduler

    a = settings.asha
    return ASHAScheduler(
        metric=a.metric,  # may differ from the metric that picks the winner
        mode=a.mode,
        time_attr="epoch",  # the loop reports `epoch` with every validation
        max_t=a.max_t or epochs,
        grace_period=a.grace_period,
        reduction_factor=a.reduction_factor,
    )


def _search_alg(cfg: Config, settings: TuneSettings):
    from raylm.tune.space import default_point

    points = None
    if settings.include_default and settings.search != "grid":
        points = [default_point(cfg, settings)]
        _say(f"trial 1 runs the config's defaults: {points[0]}")
    if settings.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        from raylm.tune.space import outside_space

        if points and (outside := outside_space(points[0], settings)):  # Optuna refuses such points
            _say(f"optuna: the defaults lie outside the space ({', '.join(outside)}); not run")
            points = None

        return OptunaSearch(
            metric=settings.metric,
            mode=settings.mode,
            points_to_evaluate=points,
            seed=settings.seed,
        )
    from ray.tune.search.basic_variant import BasicVariantGenerator

    # Tune ignores TuneConfig.max_concurrent_trials for a generator passed in: give it here.
    return BasicVariantGenerator(  # random and grid
        points_to_evaluate=points,
        max_concurrent=settings.max_concurrent_trials or 0,
        random_state=settings.seed,
    )


def _tune_storage(cfg: Config, sweep_dir: Path) -> str:
    from raylm.runtime import storage_path

    return storage_path(cfg.run) if cfg.run.storage_path else str(sweep_dir / "ray")


def _tuner(
    cfg: Config, settings: TuneSettings, sweep: str, sweep_dir: Path, base, resume: bool, parent
):
    from ray import tune

    trial = _make_trial(base, sweep, parent)
    trainable = tune.with_resources(trial, settings.resources_per_trial)
    storage = _tune_storage(cfg, sweep_dir)
    path = f"{storage.rstrip('/')}/{sweep}"
    if resume and tune.Tuner.can_restore(path):
        _say(f"resuming sweep from {path}")
        return tune.Tuner.restore(
            path, trainable, resume_unfinished=True, restart_errored=True,
            param_space=to_param_space(settings),
        )  # fmt: skip
    if resume:
        _say(f"nothing to resume at {path}: starting the sweep")
    return tune.Tuner(
        trainable,
        param_space=to_param_space(settings),
        # The scheduler and the searcher carry their own metric (ASHA's may be another one);
        # Tune refuses a metric given twice. The winner is picked from the rows by tune.metric.
        tune_config=tune.TuneConfig(
            num_samples=settings.num_samples,
            scheduler=_scheduler(settings, cfg.train.epochs),
            search_alg=_search_alg(cfg, settings),
            max_concurrent_trials=settings.max_concurrent_trials,
        ),
        run_config=tune.RunConfig(name=sweep, storage_path=storage),
    )


def run_sweep(cfg: Config, resume: bool = False) -> SweepResult:
    """Preprocess once, run (or resume) the Tuner, write the table/plot, export the winner."""
    from raylm.runtime import ensure_ray
    from raylm.tracking import finish_run
    from raylm.tune.report import export_best, summarize, write_tables

    settings = load_settings(cfg)  # every check before any work starts
    sweep = sweep_name(cfg, settings)
    sweep_dir = (Path(cfg.run.output_dir) / sweep).resolve()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    data_dir = cfg.run.data_path.resolve() if cfg.run.data_dir else sweep_dir / "data"
    ensure_ray(cfg.run)
    _preprocess_once(cfg, data_dir)
    base = _base_for_trials(cfg, settings, sweep_dir, data_dir)
    parent = _sweep_run(cfg, sweep, base)
    t0 = time.perf_counter()
    try:
        grid = _tuner(cfg, settings, sweep, sweep_dir, base, resume, parent).fit()
    except BaseException:
        if parent:
            finish_run(_sweep_config(cfg, sweep), "FAILED")
        raise
    if parent:
        finish_run(_sweep_config(cfg, sweep), "FINISHED")
    _say(f"{len(grid)} trial(s) in {time.perf_counter() - t0:.0f}s")
    rows, curves = summarize(grid, settings, cfg.train.epochs)
    for row in rows:
        if row["error"]:
            _say(f"trial {row['trial_id']} failed: {row['error']}")
    if not any(r["best"] is not None for r in rows):
        errors = [str(r.error) for r in grid if r.error]
        raise RuntimeError(f"sweep {sweep}: no trial reported {settings.metric}; {errors[:2]}")
    write_tables(rows, curves, settings, sweep_dir)
    best = export_best(rows, settings, base, cfg.model_dump(mode="json"), sweep_dir, data_dir)
    _say(f"best trial {best['trial_id']}: {settings.metric}={best['best']:.4f} -> {sweep_dir}")
    (sweep_dir / "sweep_result.json").write_text(
        json.dumps({"best": best, "rows": rows}, indent=2, default=str), encoding="utf-8"
    )
    return SweepResult(
        sweep_dir,
        best["trial_id"],
        best["best"],
        sweep_dir / "best_config.yaml",
        sweep_dir / "best_model",
        rows,
    )


__all__ = ["ConfigError", "SweepResult", "TuneSettings", "load_settings", "run_sweep"]
