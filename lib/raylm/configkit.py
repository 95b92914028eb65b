"""The config toolkit every section shares: one strict base model, one error formatter, one YAML
reader and one dotted-key setter.

    data = read_yaml("examples/sentiment_zh.yaml")          # ConfigError naming the file
    set_dotted(data, "train.lr", 3e-4)                       # creates missing sections
    cfg = validate(Config, data, "examples/sentiment_zh.yaml")

Pure pydantic + yaml: no Ray, torch or DeepSpeed import. `raylm.config` (the recipe), the serve
section (`raylm.serve.schemas`) and the tune section (`raylm.tune.settings`) are built on it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError


class ConfigError(ValueError):
    """A configuration problem, with a message fit to show a user as is."""


class StrictModel(BaseModel):
    """Base of every config section. Unknown keys are errors (a typo like `train.leraning_rate`
    must not be silently ignored), and so are bad values assigned after validation and
    non-finite numbers (`train.lr=.inf` would train to NaN)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


M = TypeVar("M", bound=BaseModel)


def format_errors(err: ValidationError, source: str, prefix: str = "") -> str:
    """`source: invalid configuration (N problem(s))` and one `- field: message (got x)` line
    per problem; `prefix` (e.g. "serve") names the section a sub-model was validated for."""
    lines = [f"{source}: invalid configuration ({err.error_count()} problem(s))"]
    for e in err.errors():
        field = ".".join([*([prefix] if prefix else []), *(str(p) for p in e["loc"])])
        # An unknown key may hold a newline: escaped, so that each problem stays one line.
        field = "".join(c if c.isprintable() else repr(c)[1:-1] for c in field)
        got = e.get("input")
        got_s = "" if isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"  - {field or '(top level)'}: {e['msg']}{got_s}")
    return "\n".join(lines)


def problems_error(problems: list[str], source: str) -> ConfigError:
    """The same shape as `format_errors` for checks made outside pydantic."""
    lines = [f"{source}: invalid configuration ({len(problems)} problem(s))"]
    return ConfigError("\n".join([*lines, *(f"  - {p}" for p in problems)]))


def validate(model: type[M], data: Any, source: str, prefix: str = "") -> M:
    """`model.model_validate(data)`, a ValidationError becoming a ConfigError naming each field."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_errors(err, source, prefix)) from None


# PyYAML's constructors raise more than YAMLError on a malformed scalar: ValueError for a date
# such as 2001-13-01 or `!!int x`, KeyError for `!!bool maybe`, AttributeError for
# `!!timestamp 5`, TypeError for some tagged nodes.
YAML_ERRORS = (yaml.YAMLError, ValueError, LookupError, AttributeError, TypeError)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML file's top-level mapping; ConfigError naming the file when it is missing, not YAML,
    or not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except YAML_ERRORS as err:  # UnicodeDecodeError is a ValueError
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def set_dotted(data: dict[str, Any], key: str, value: Any, where: str = "") -> None:
    """`data[a][b][c] = value` for `key = "a.b.c"`, creating missing sections. A parent that
    holds something other than a mapping (or None) is a ConfigError: it is never overwritten."""
    *parents, leaf = parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"{where or key}: '{key}' is not a dotted field name (e.g. train.lr)")
    node = data
    for part in parents:
        if node.get(part) is None:
            node[part] = {}
        if not isinstance(node[part], dict):
            raise ConfigError(f"{where or key}: '{part}' is not a section")
        node = node[part]
    node[leaf] = value


def parse_value(raw: str) -> Any:
    """Parse an override's value as YAML, so `3e-4`, `true`, `[a, b]` and `null` work; a value
    that is not YAML (`[a`, `2001-13-01`) is the string as written."""
    try:
        return yaml.safe_load(raw)
    except YAML_ERRORS:
        return raw


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `section.field=value` overrides to a raw config mapping (in place; returned)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}': expected KEY=VALUE, e.g. train.lr=3e-4")
        key, raw = item.split("=", 1)
        set_dotted(data, key, parse_value(raw), where=f"override '{item}'")
    return data
