"""The `tune:` section: typed settings, search-space checks and conversion to Ray Tune.

    settings = load_settings(cfg)          # ConfigError naming the field, before any trial runs
    param_space = to_param_space(settings)  # {"train.lr": tune.loguniform(...), ...}

Pure pydantic: Ray is imported only inside `to_param_space`.
"""

from __future__ import annotations

import itertools
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from raylm.config import Config, ConfigError, config_from_dict

KINDS = ("loguniform", "uniform", "choice", "grid", "randint")
_MAX_CORNERS = 256  # joint corner checks beyond this fall back to one field at a time


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class AshaSettings(_Strict):
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


class TuneSettings(_Strict):
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

    @model_validator(mode="after")
    def _resources(self) -> TuneSettings:
        if not any(v > 0 for v in self.resources_per_trial.values()):
            raise ValueError("resources_per_trial needs a positive share, e.g. {CPU: 0.01}")
        return self


def _fmt(err: ValidationError) -> str:
    lines = [f"tune: invalid settings ({err.error_count()} problem(s))"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        lines.append(f"  - tune.{loc}: {e['msg']}")
    return "\n".join(lines)


def _leaf(path: str) -> bool:
    """Whether `path` (e.g. `train.lr`) names a value field in the Config schema."""
    model: Any = Config
    parts = path.split(".")
    for i, part in enumerate(parts):
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields or part in ("tune", "serve"):
            return False
        ann = fields[part].annotation
        nested = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        if i == len(parts) - 1:
            return nested is None
        model = nested
    return False


def _check_spec(field: str, spec: dict[str, list[Any]], search: str) -> list[Any]:
    """Raise ConfigError naming `tune.space.<field>`; return the values to try as corners."""
    where = f"tune.space.{field}"
    if not _leaf(field):
        raise ConfigError(f"{where}: no such config field (expected e.g. train.lr)")
    if len(spec) != 1 or next(iter(spec)) not in KINDS:
        raise ConfigError(f"{where}: expected one of {', '.join(KINDS)}, got {sorted(spec)}")
    kind, values = next(iter(spec.items()))
    if kind in ("choice", "grid"):
        if not values:
            raise ConfigError(f"{where}: {kind} needs at least one value")
        if kind == "grid" and search == "optuna":
            raise ConfigError(f"{where}: grid does not work with search: optuna (use choice)")
        return list(values)
    if len(values) != 2 or not all(isinstance(v, int | float) for v in values):
        raise ConfigError(f"{where}: {kind} needs [low, high] numbers, got {values!r}")
    lo, hi = values
    if lo > hi:
        raise ConfigError(f"{where}: low ({lo}) > high ({hi})")
    if kind == "loguniform" and lo <= 0:
        raise ConfigError(f"{where}: loguniform needs low > 0, got {lo}")
    if kind == "randint" and not all(isinstance(v, int) for v in values):
        raise ConfigError(f"{where}: randint needs integer bounds, got {values!r}")
    return [lo, hi]


def apply_sample(base: dict[str, Any], sample: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of a config mapping with dotted `sample` values set."""
    import copy

    data = copy.deepcopy(base)
    for field, value in sample.items():
        *parents, last = field.split(".")
        node = data
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[last] = value
    return data


def _check_corners(cfg: Config, corners: dict[str, list[Any]]) -> None:
    base = cfg.model_dump(mode="json")
    fields = list(corners)
    combos = 1
    for v in corners.values():
        combos *= len(v)
    if combos <= _MAX_CORNERS:
        samples = [dict(zip(fields, c, strict=True)) for c in itertools.product(*corners.values())]
    else:
        samples = [{f: v} for f in fields for v in corners[f]]
    for sample in samples:
        try:
            config_from_dict(apply_sample(base, sample), source="tune sample")
        except ConfigError as err:
            shown = ", ".join(f"{k}={v!r}" for k, v in sample.items())
            names = ", ".join(f"tune.space.{f}" for f in fields if f in sample)
            detail = "; ".join(line.strip("- ").strip() for line in str(err).splitlines()[1:])
            raise ConfigError(
                f"{names}: sample ({shown}) is not a valid config: {detail}"
            ) from None


def load_settings(cfg: Config) -> TuneSettings:
    """Validate `cfg.tune` and its space against the Config schema before any trial starts."""
    if not cfg.tune:
        raise ConfigError(
            "tune: this config has no `tune:` section (see examples/tune_sentiment.yaml)"
        )
    try:
        settings = TuneSettings.model_validate(cfg.tune)
    except ValidationError as err:
        raise ConfigError(_fmt(err)) from None
    if not settings.space:
        raise ConfigError("tune.space: empty; give at least one field to search")
    corners = {f: _check_spec(f, spec, settings.search) for f, spec in settings.space.items()}
    _check_corners(cfg, corners)
    if settings.metric is None:
        settings.metric = cfg.train.best_metric
    if settings.mode is None:
        settings.mode = cfg.train.best_mode
    if not settings.metric.startswith("val_"):
        raise ConfigError(f"tune.metric: '{settings.metric}' is not a validation metric (val_*)")
    asha = settings.asha
    if asha.metric is None:
        if asha.mode not in (None, settings.mode):  # ASHA would stop the best trials
            raise ConfigError(
                f"tune.asha.mode: '{asha.mode}' without tune.asha.metric applies to the sweep's "
                f"metric '{settings.metric}', whose mode is '{settings.mode}'; name "
                "tune.asha.metric or drop tune.asha.mode"
            )
        asha.metric, asha.mode = settings.metric, settings.mode
    elif not asha.metric.startswith("val_"):
        raise ConfigError(f"tune.asha.metric: '{asha.metric}' is not a validation metric (val_*)")
    elif asha.mode is None:
        asha.mode = "min" if asha.metric.endswith(("loss", "perplexity")) else "max"
    return settings


def to_param_space(settings: TuneSettings) -> dict[str, Any]:
    """Ray Tune search-space objects keyed by the dotted field (randint's high is inclusive)."""
    from ray import tune

    space: dict[str, Any] = {}
    for field, spec in settings.space.items():
        kind, v = next(iter(spec.items()))
        if kind == "loguniform":
            space[field] = tune.loguniform(v[0], v[1])
        elif kind == "uniform":
            space[field] = tune.uniform(v[0], v[1])
        elif kind == "randint":
            space[field] = tune.randint(v[0], v[1] + 1)
        elif kind == "choice":
            space[field] = tune.choice(list(v))
        else:
            space[field] = tune.grid_search(list(v))
    return space


_PRESET_FIELDS = {"model.num_layers": "layers", "model.hidden_size": "hidden"}


def default_point(cfg: Config, settings: TuneSettings) -> dict[str, Any]:
    """The config's own values of the searched fields (model sizes resolved from the preset)."""
    from raylm.models.build import resolved_preset

    base = cfg.model_dump(mode="json")
    point: dict[str, Any] = {}
    for field in settings.space:
        node: Any = base
        for part in field.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is None and field in _PRESET_FIELDS:
            node = getattr(resolved_preset(cfg.model), _PRESET_FIELDS[field])
        if node is None and field == "model.num_heads":
            node = resolved_preset(cfg.model).heads
        point[field] = node
    return point


def in_space(point: dict[str, Any], settings: TuneSettings) -> list[str]:
    """The fields whose value in `point` lies outside the searched space (empty: all inside)."""
    outside = []
    for field, spec in settings.space.items():
        kind, values = next(iter(spec.items()))
        v = point.get(field)
        if kind in ("choice", "grid"):
            ok = v in values
        else:
            ok = isinstance(v, int | float) and values[0] <= v <= values[1]
        if not ok:
            outside.append(f"{field}={v!r}")
    return outside
