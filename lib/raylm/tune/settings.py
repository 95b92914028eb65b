"""The `tune:` section's schema: sweep settings and the ASHA scheduler's.

Validated with the rest of the recipe (`raylm.config.Config.tune`), so a misspelt key such as
`tune.num_sampels` fails at load; the search space's own checks (fields exist, bounds, corners
that make a valid config) are in `raylm.tune.space.load_settings`. Pure pydantic.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from raylm.configkit import StrictModel


def _non_finite(value: Any) -> bool:
    """Whether a number anywhere inside `value` (nested lists and mappings) is inf or nan."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_non_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_non_finite(v) for v in value)
    return False


class AshaSettings(StrictModel):
    grace_period: int = Field(1, ge=1, description="Epochs every trial runs before it may stop.")
    reduction_factor: float = Field(2, gt=1, description="Keep 1/reduction_factor at each rung.")
    max_t: int | None = Field(None, ge=1, description="Epochs a trial may run (default: epochs).")
    metric: str | None = Field(
        None,
        description="Metric the stopping decisions use (default: the sweep's metric). A "
        "continuous one such as val_loss helps where accuracy-like metrics tie: ASHA never stops "
        "a trial tied with its rung's cutoff (e.g. every trial still at chance).",
    )
    mode: Literal["max", "min"] | None = Field(None, description="Default: min for *_loss.")


class TuneSettings(StrictModel):
    """Ray Tune search over the train driver; `space` maps a dotted Config field to a spec."""

    name: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_.-]+$", description="Sweep name (default: run.name)."
    )
    space: dict[str, dict[str, list[Any]]] = Field(
        ..., description="Field -> {loguniform|uniform|randint: [lo, hi]} or {choice|grid: [...]}"
    )
    metric: str | None = Field(None, description="Metric to optimise (default train.best_metric).")
    mode: Literal["max", "min"] | None = Field(None, description="Default train.best_mode.")
    num_samples: int = Field(8, ge=1, description="Trials (with grid: repeats of the grid).")
    search: Literal["random", "grid", "optuna"] = Field("random", description="Search algorithm.")
    scheduler: Literal["asha", "none"] = Field("asha", description="Early stopping scheduler.")
    asha: AshaSettings = Field(default_factory=AshaSettings)
    max_concurrent_trials: int | None = Field(None, ge=1, description="Trials run at once.")
    seed: int | None = Field(
        None, description="Seed of the sampler: the same seed samples the same trial configs."
    )
    include_default: bool = Field(
        True,
        description="First trial runs the config's own values of the searched fields (random and "
        "optuna search; counts toward num_samples), the reference the winner is compared with.",
    )
    resources_per_trial: dict[str, float] = Field(
        default_factory=lambda: {"CPU": 0.01},
        description="The trial driver's own share; its TorchTrainer workers reserve their own.",
    )

    @field_validator("space")
    @classmethod
    def _finite(cls, space: dict[str, dict[str, list[Any]]]) -> dict[str, dict[str, list[Any]]]:
        """The values are free-form (`Any`), so pydantic's inf/nan refusal does not reach them."""
        for name, spec in space.items():
            for kind, values in spec.items():
                if _non_finite(values):
                    raise ValueError(f"{name}.{kind}: {values} holds a non-finite number")
        return space

    @model_validator(mode="after")
    def _resources(self) -> TuneSettings:
        if not any(v > 0 for v in self.resources_per_trial.values()):
            raise ValueError("resources_per_trial needs a positive share, e.g. {CPU: 0.01}")
        return self
