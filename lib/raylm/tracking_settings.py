"""`run.tracking`: where a run's params, metrics and artifacts go besides its own folder
(`raylm.tracking` logs them). Pure pydantic, no MLflow import.

    run: {tracking: {mlflow: true}}    # sqlite:///<output_dir>/mlflow.db, artifacts beside it
    run: {tracking: {mlflow: true, mlflow_uri: "http://mlflow.internal:5000", experiment: reviews}}
"""

from __future__ import annotations

from pydantic import Field

from raylm.configkit import StrictModel


class TrackingConfig(StrictModel):
    """TensorBoard event files (on by default: they cost a run nothing measurable) and an MLflow
    run (off by default: its client and store add a few seconds to a run's start on 2 cores)."""

    tensorboard: bool = Field(
        True,
        description="Event files under <run dir>/tensorboard: `tensorboard --logdir outputs/` "
        "shows every run's curves.",
    )
    mlflow: bool = Field(
        False,
        description="Log to MLflow: params (the resolved config), metrics every train.log_every "
        "steps and at each validation, tags, and the report, plots and stats as artifacts.",
    )
    mlflow_uri: str | None = Field(
        None,
        description="Tracking URI: a team's server (http://host:5000) or a database URI. None: "
        "sqlite:///<output_dir>/mlflow.db (MLflow 3 refuses its old ./mlruns file store).",
    )
    experiment: str = Field("raylm", min_length=1, description="MLflow experiment of the run.")
    log_model: bool = Field(
        False, description="Also log the exported model folder as an MLflow artifact."
    )
