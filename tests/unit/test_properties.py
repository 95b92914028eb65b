"""Property-based tests (hypothesis) of every input raylm takes before any work starts: the recipe
(YAML, `--set key.path=value` overrides, the schema and the task's rules) and each HTTP request
body Serve accepts. Whatever a user or a client sends, the answer is a value or a ConfigError /
ValidationError naming what is wrong, never another exception (a traceback).

    python -m pytest tests/unit/test_properties.py -q          # ~10 s
    HYPOTHESIS_PROFILE=thorough python -m pytest tests/unit/test_properties.py   # 10x examples

The strategies are derived from the schema itself (every leaf field of `Config`, its type and
its bounds), so a new field is covered without editing this file.
"""

from __future__ import annotations

import copy
import json
import math
import os
import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import pytest
import yaml
from hypothesis import HealthCheck, event, example, given, note, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from raylm.config import Config, _absolute_if_local, dump_config, parse_config
from raylm.configkit import ConfigError, apply_overrides, parse_value, set_dotted
from raylm.recipe import config_from_dict, load_config
from raylm.serve import schemas
from raylm.serve.schemas import ApiError, ServeConfig, load_serve_config

settings.register_profile(
    "default", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("thorough", parent=settings.get_profile("default"), max_examples=1500)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# Recipes the overrides start from: one per task, as small as the tasks allow.
BASES = [
    {
        "data": {"source": "jsonl", "paths": ["corpus.jsonl"], "labels": ["neg", "pos"]},
        "model": {"task": "classification", "hidden_size": 32, "num_heads": 2},
        "run": {"name": "props", "baseline": False},
    },
    {
        "data": {"source": "text", "paths": ["a.txt"], "tokenizer": {"kind": "bytelevel_bpe"}},
        "model": {"task": "causal_lm"},
        "run": {"baseline": False},
    },
]
REQUESTS = [
    schemas.CompletionRequest,
    schemas.ChatCompletionRequest,
    schemas.ClassifyRequest,
    schemas.QARequest,
]


# ------------------------------------------------------------------------ schema-derived data
def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The model class of a section field (`X` or `X | None`), else None (a list of models,
    such as `data.also`, is a leaf: an override sets the whole list)."""
    if get_origin(annotation) is list:
        return None
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _leaves(model: type[BaseModel], prefix: str = "") -> dict[str, Any]:
    """Dotted key -> FieldInfo of every leaf field under `model` (sections walked into)."""
    out: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        sub = _model_of(info.annotation)
        if sub is not None and sub is not Config:
            out.update(_leaves(sub, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = info
    return out


LEAVES = _leaves(Config)
SECTIONS = {key.rsplit(".", i)[0] for key in LEAVES for i in range(key.count(".") + 1)}
KEYS = sorted(LEAVES)
FIELD_NAMES = sorted({key.rsplit(".", 1)[-1] for key in KEYS})

# Text that YAML and JSON carry unchanged: no lone surrogates, no control characters (YAML
# refuses most and reads NEL, U+0085, as a line break), no line or paragraph separators.
TEXT = st.text(st.characters(exclude_categories=("Cs", "Cc", "Zl", "Zp")), max_size=12)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | TEXT
JSONISH = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3)
)
# What a client may send: JSON's strings may hold anything, lone surrogates ("\ud800") included
# (hypothesis draws them only when asked).
CLIENT_TEXT = st.text(max_size=8) | st.builds(
    str.__add__, st.text(max_size=4), st.characters(categories=["Cs"])
)
ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | CLIENT_TEXT,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
)


def _bound(info: Any, name: str) -> Any:
    for item in getattr(info, "metadata", []):
        if getattr(item, name, None) is not None:
            return getattr(item, name)
    return None


def _numbers(annotation: type, info: Any, wild: bool) -> st.SearchStrategy:
    """Numbers within the field's bounds, and (wild) anywhere, non-finite floats included."""
    lo = _bound(info, "ge") if _bound(info, "ge") is not None else _bound(info, "gt")
    hi = _bound(info, "le") if _bound(info, "le") is not None else _bound(info, "lt")
    if annotation is int:
        inside = st.integers(lo if lo is not None else -(2**31), hi if hi is not None else 2**31)
        return inside | st.integers() if wild else inside
    inside = st.floats(lo, hi, allow_nan=False, allow_infinity=False)
    return inside | st.floats() if wild else inside


def _model_values(model: type[BaseModel], wild: bool, text: Any = TEXT) -> st.SearchStrategy:
    """Mappings for a model: its required fields always, the others sometimes."""
    typed = {n: values_for(f.annotation, f, wild, text) for n, f in model.model_fields.items()}
    required = {n: typed.pop(n) for n, f in model.model_fields.items() if f.is_required()}
    return st.fixed_dictionaries(required, optional=typed)


def values_for(
    annotation: Any, info: Any = None, wild: bool = True, text: Any = TEXT
) -> st.SearchStrategy:
    """Values of the field's own type: what a user means to set. Numbers are within the field's
    bounds, or (wild) anywhere; strings are drawn from `text`, patterns or not."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return values_for(args[0], info, wild, text)
    if annotation is type(None):
        return st.none()
    if annotation is bool:
        return st.booleans()
    if annotation in (int, float):
        return _numbers(annotation, info, wild)
    if annotation is str:
        return text
    if annotation is Any:
        return JSONISH
    if origin is Literal:
        return st.sampled_from(args)
    if origin in (Union, types.UnionType):
        return st.one_of(*(values_for(a, info, wild, text) for a in args))
    if origin is list:
        return st.lists(values_for(args[0], None, wild, text), max_size=3)
    if origin is tuple:
        return st.tuples(*(values_for(a, None, wild, text) for a in args))
    if origin is dict:
        keys, values = (values_for(a, None, wild, text) for a in args)
        return st.dictionaries(keys, values, max_size=2)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _model_values(annotation, wild, text)
    raise AssertionError(f"no strategy for {annotation!r}: add one to values_for")


def yaml_text(value: Any) -> str:
    """How a user writes `value` after `--set key=`: YAML flow style, one line."""
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=10**6)
    # Strip spaces and newlines only: str.strip() also took a value's own NBSP ('\xa0').
    return text.removesuffix("\n").removesuffix("\n...").strip(" \n")


def dotted(data: Any, key: str) -> Any:
    for part in key.split("."):
        data = data[part]
    return data


def _alone_invalid(key: str, value: Any) -> bool:
    """Whether `value` breaks the field's own type or bounds (whatever the other fields hold)."""
    info = LEAVES[key]
    adapter = TypeAdapter(
        Annotated[info.annotation, info], config=ConfigDict(allow_inf_nan=False, strict=False)
    )
    try:
        adapter.validate_python(value)
    except ValidationError:
        return True
    return False


def _problems(message: str) -> list[str]:
    """The `  - field: message` lines of a ConfigError (configkit.format_errors' shape)."""
    first, *lines = message.split("\n")
    assert first.endswith("problem(s))") and all(line.startswith("  - ") for line in lines), message
    return [line[4:] for line in lines]


def _known(field: str) -> bool:
    # A loc may go into a list or dict (data.paths.0, serve.models.x): a known prefix names it.
    parts = field.split(".")
    return any(".".join(parts[:i]) in SECTIONS | set(KEYS) for i in range(1, len(parts) + 1))


def _named_fields_exist(message: str) -> None:
    """Every problem names a field or section of the schema, or (an unknown key) the key as the
    user wrote it (which may itself hold dots)."""
    for problem in _problems(message):
        if ": Extra inputs are not permitted" in problem:
            continue  # the unknown key as written, which may hold anything, ": " included
        field = problem.split(": ", 1)[0]
        assert _known(field) or field == "(top level)", (field, message)


keys = st.sampled_from(KEYS)
bases = st.sampled_from(BASES)


@st.composite
def typed_override(draw: Any, wild: bool = True) -> tuple[str, Any]:
    key = draw(keys)
    return key, draw(values_for(LEAVES[key].annotation, LEAVES[key], wild))


# ------------------------------------------------------------------------ override syntax
@given(TEXT | st.text())
@example("2001-13-01")  # PyYAML: ValueError (a date with month 13)
@example("!!bool maybe")  # KeyError
@example("!!timestamp 5")  # AttributeError
def test_parse_value_never_raises_and_is_yaml_or_the_text_itself(raw):
    value = parse_value(raw)
    try:
        expected = yaml.safe_load(raw)
    except Exception:  # not YAML (PyYAML raises more than YAMLError): the text as written
        expected = raw
    assert value == expected or (value != value and expected != expected)  # NaN


@given(JSONISH)
def test_parse_value_reads_back_what_yaml_writes(value):
    got = parse_value(yaml_text(value))
    assert json.dumps(got, sort_keys=True) == json.dumps(value, sort_keys=True)


@given(
    st.dictionaries(TEXT, JSONISH, max_size=3),
    st.lists(TEXT.filter(lambda s: "." not in s and s.strip() == s), min_size=1, max_size=4),
    JSONISH,
)
def test_set_dotted_then_reading_the_path_gives_the_value(data, parts, value):
    key, before = ".".join(parts), copy.deepcopy(data)
    try:
        set_dotted(data, key, value)
    except ConfigError as err:
        assert key in str(err) and data == before  # named, and nothing half-written
        if not all(parts):  # "", "a..b", "a.": no field is called ""
            assert "is not a dotted field name" in str(err)
            return
        # Otherwise only a parent holding something other than a mapping or None is refused.
        node = before
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict) and node.get(part) is not None:
                assert f"'{part}' is not a section" in str(err)
                return
            node = node.get(part) or {}
        raise AssertionError(f"refused {key} though every parent is a mapping: {err}") from None
    assert all(parts) and dotted(data, key) is value
    assert {k: v for k, v in data.items() if k != parts[0]} == {
        k: v for k, v in before.items() if k != parts[0]
    }


@given(st.lists(st.text(max_size=8), max_size=3), st.text(max_size=20))
def test_any_override_text_applies_or_raises_a_config_error_naming_it(parts, tail):
    item = ".".join(parts) + tail
    data = copy.deepcopy(BASES[0])
    try:
        apply_overrides(data, [item])
    except ConfigError as err:
        assert f"override '{item}'" in str(err)
        return
    try:
        config_from_dict(data)
    except ConfigError as err:
        _named_fields_exist(str(err))


# ------------------------------------------------------------------------ recipe schema
@given(bases, typed_override())
@example(BASES[0], ("train.best_mode", "min"))  # was replaced by the task's default mode
@example(BASES[0], ("model.task", ["classification"]))  # TypeError: unhashable list
@example(BASES[1], ("model.path", "~nosuchuser/model"))  # RuntimeError from expanduser
@example(BASES[1], ("data.tokenizer.path", "t" * 300))  # OSError: file name too long
@example(BASES[0], ("run.tracking.mlflow_uri", "\xa0"))  # the helper once stripped it to ''
def test_an_override_reads_back_or_fails_naming_the_field(base, override):
    key, value = override
    item = f"{key}={yaml_text(value)}"
    note(item)
    data = apply_overrides(copy.deepcopy(base), [item])
    try:
        cfg = config_from_dict(data)
    except ConfigError as err:
        _named_fields_exist(str(err))
        alone = _alone_invalid(key, value)
        event("refused: the value alone" if alone else "refused: with the other fields")
        if alone:
            assert f"  - {key}" in str(err), (item, str(err))
        return
    event("applied")
    expected = _absolute_if_local(value) if key.endswith(".path") else value
    got = dotted(cfg.model_dump(mode="json"), key)
    assert json.dumps(got) == json.dumps(expected) or got == expected, (item, got)


@given(
    st.dictionaries(
        st.sampled_from(sorted(s for s in SECTIONS if "." not in s)) | TEXT,
        JSONISH | st.dictionaries(st.sampled_from(FIELD_NAMES), JSONISH, max_size=4),
        max_size=5,
    )
)
@example({"train": {"lr\nx": 1}})  # each problem stays one line (the key's newline escaped)
def test_any_mapping_is_a_config_or_a_config_error_naming_real_fields(raw):
    try:
        cfg = config_from_dict(raw)
    except ConfigError as err:
        _named_fields_exist(str(err))
        return
    _within_bounds(cfg)


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(bases, st.lists(typed_override(wild=False), max_size=3))
def test_dump_config_then_load_config_gives_the_same_config(tmp_path, base, overrides):
    items = [f"{key}={yaml_text(value)}" for key, value in overrides]
    try:
        cfg = config_from_dict(apply_overrides(copy.deepcopy(base), items))
    except ConfigError:
        event("refused")
        return  # a combination the rules refuse: the test above checks how
    event(f"loaded with {len(items)} override(s)")
    note(repr(items))
    _within_bounds(cfg)
    dump_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg
    assert parse_config(cfg.model_dump(mode="json")) == cfg


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.text(max_size=60) | st.builds(yaml_text, JSONISH))
def test_any_yaml_file_loads_or_fails_naming_the_file(tmp_path, text):
    path = tmp_path / "r.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_config(path)
    except ConfigError as err:
        assert str(err).startswith(str(path)), str(err)


# ------------------------------------------------------------------------ bounds
def _within_bounds(model: BaseModel, where: str = "") -> None:
    """Every field of a validated model meets its declared bounds; no StrictModel holds a NaN or
    an infinity (configkit refuses non-finite numbers in every config section)."""
    strict = model.model_config.get("allow_inf_nan") is False
    for name, info in type(model).model_fields.items():
        value, field = getattr(model, name), f"{where}{name}"
        if isinstance(value, BaseModel):
            _within_bounds(value, f"{field}.")
        if isinstance(value, list):
            for item in (v for v in value if isinstance(v, BaseModel)):
                _within_bounds(item, f"{field}[].")
        if isinstance(value, float) and strict:
            assert math.isfinite(value), field
        if value is None or isinstance(value, BaseModel):
            continue
        for bound, holds in [
            ("ge", lambda b, v=value: v >= b),
            ("gt", lambda b, v=value: v > b),
            ("le", lambda b, v=value: v <= b),
            ("lt", lambda b, v=value: v < b),
            ("min_length", lambda b, v=value: len(v) >= b),
            ("max_length", lambda b, v=value: len(v) <= b),
        ]:
            b = _bound(info, bound)
            assert b is None or holds(b), (field, value, bound, b)


def _texts(request: BaseModel) -> list[str]:
    """The texts a request hands to a tokenizer (each must be non-empty where Text says so)."""
    if isinstance(request, schemas.CompletionRequest):
        return [request.prompt] if isinstance(request.prompt, str) else list(request.prompt)
    if isinstance(request, schemas.ClassifyRequest):
        return list(request.texts)
    if isinstance(request, schemas.QARequest):
        return [request.context, request.question]
    return []


# ------------------------------------------------------------------------ request schemas
def _bodies(model: type[BaseModel]) -> st.SearchStrategy:
    """Request bodies: well-formed ones (typed values, in or out of bounds), ones with any JSON in
    the model's fields and unknown keys besides, and any JSON at all."""
    fields = {n: values_for(f.annotation, f) | ANY_JSON for n, f in model.model_fields.items()}
    mixed = st.fixed_dictionaries({}, optional=fields)
    extra = st.dictionaries(CLIENT_TEXT, ANY_JSON, max_size=2)
    garbage = st.builds(lambda a, b: {**b, **a}, mixed, extra)
    return _model_values(model, wild=True, text=CLIENT_TEXT) | garbage | ANY_JSON


@pytest.mark.parametrize("model", REQUESTS, ids=lambda m: m.__name__)
@given(data=st.data())
def test_any_request_body_validates_within_bounds_or_is_a_validation_error(model, data):
    body = data.draw(_bodies(model))
    try:
        request = model.model_validate(body)
    except ValidationError:
        event("refused")
        return
    event("valid")
    _within_bounds(request)
    for text in _texts(request):
        assert text and text.encode("utf-8")  # Text: non-empty, no lone surrogate
    if isinstance(request, schemas.ChatCompletionRequest):
        assert request.messages and all(isinstance(m.text(), str) for m in request.messages)
        assert all(m.text().encode("utf-8") for m in request.messages if m.text())
    if isinstance(request, schemas._OpenAIRequest):
        try:
            stops = request.stop_list()
        except ApiError as err:
            assert err.status == 400 and err.param == "stop"
        else:
            assert len(stops) <= 4 and all(stop and stop.encode("utf-8") for stop in stops)


@pytest.mark.parametrize("model", REQUESTS, ids=lambda m: m.__name__)
def test_a_model_name_that_is_not_unicode_is_refused(model):
    body = {"model": "\ud800", "prompt": "x", "texts": ["x"], "context": "c", "question": "q"}
    body["messages"] = [{"role": "user", "content": "x"}]
    fields = {k: v for k, v in body.items() if k in model.model_fields}
    with pytest.raises(ValidationError):
        model.model_validate(fields)


@given(values_for(ServeConfig) | JSONISH)
def test_any_serve_section_is_a_serve_config_or_a_config_error(raw):
    try:
        cfg = load_serve_config(raw)
    except ConfigError as err:
        assert str(err).startswith("<serve config>"), str(err)
        event("refused")
        return
    event("valid")
    _within_bounds(cfg)
    assert load_serve_config(cfg.model_dump()) == cfg
