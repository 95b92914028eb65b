"""The `tune:` section's search space: checks against the Config schema, conversion to Ray Tune.

    settings = load_settings(cfg)          # ConfigError naming the field, before any trial runs
    param_space = to_param_space(settings)  # {"train.lr": tune.loguniform(...), ...}

The section's schema is `raylm.tune.settings`. Ray is imported only inside `to_param_space`.
"""

from __future__ import annotations

import itertools
from typing import Any

from pydantic import BaseModel

from raylm.config import Config
from raylm.configkit import ConfigError, set_dotted
from raylm.recipe import config_from_dict
from raylm.tune.settings import TuneSettings

KINDS = ("loguniform", "uniform", "choice", "grid", "randint")
_MAX_CORNERS = 256  # joint corner checks beyond this fall back to one field at a time


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
        set_dotted(data, field, value, where=f"tune.space.{field}")
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
    settings = cfg.tune.model_copy(deep=True)  # metric defaults are filled in below
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


def outside_space(point: dict[str, Any], settings: TuneSettings) -> list[str]:
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
