"""Checks a stage runs before it writes anything or starts Ray, each failing in one line that
names the field: the run folder and Ray's storage can be written, and the pretrained model and
tokenizer a recipe names can be loaded. (Whether the workers fit the cluster needs Ray:
`runtime.preflight`.)

    check_run(cfg)        # stages.preprocess and stages.train call it first
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from raylm.config import Config, RunConfig
from raylm.configkit import ConfigError

# The files a Hugging Face model folder keeps its weights in (one of them is enough).
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def check_run(cfg: Config) -> None:
    check_storage(cfg.run)
    check_pretrained(cfg)


def check_storage(run: RunConfig) -> None:
    """The run folder and Ray's storage (when a local path) must be folders this process can
    write: a probe file is created and removed in the deepest folder that exists."""
    places = [("run.output_dir", Path(run.output_dir))]
    if run.storage_path and "://" not in run.storage_path:
        places.append(("run.storage_path", Path(run.storage_path)))
    for field, path in places:
        _check_writable(field, path.expanduser().absolute())


def _check_writable(field: str, path: Path) -> None:
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{field}: {path} cannot be a folder: {existing} is a file")
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".raylm-probe-"):
            pass
    except OSError as err:
        raise ConfigError(f"{field}: {path} is not writable ({existing}: {err.strerror})") from err


def check_pretrained(cfg: Config) -> None:
    """A `model.path` must be a model folder (its config and weights) or a model id this machine
    can resolve; a `data.tokenizer.path` must load as a tokenizer."""
    model = _check_model(cfg.model.path) if cfg.model.path else None
    tok = _check_tokenizer(cfg.data.tokenizer.path) if cfg.data.tokenizer.path else None
    if model is None:
        return
    if cfg.model.lora is not None:
        _check_lora_targets(model, cfg.model.lora.target_modules)
    if tok is None:
        raise ConfigError(
            f"data.tokenizer.path: not set, while model.path is ({cfg.model.path}): a tokenizer "
            "trained here would not match the pretrained embeddings; set it to the model's own "
            "tokenizer (usually the same folder or id)"
        )
    embeddings = getattr(model, "vocab_size", None)
    if embeddings is not None and len(tok) > embeddings:
        raise ConfigError(
            f"data.tokenizer.path: {cfg.data.tokenizer.path} has {len(tok)} tokens, but "
            f"model.path {cfg.model.path} has embeddings for {embeddings}: the tokenizer does "
            "not belong to this model"
        )


def _check_lora_targets(config: Any, targets: list[str] | None) -> None:
    """Every `model.lora.target_modules` name must name layers of the model (built without
    weights from its config, so this costs no load)."""
    import torch
    from transformers import AutoModel

    from raylm.models.lora import target_problem

    if not targets:
        return
    with torch.device("meta"):
        body = AutoModel.from_config(config)
    problem = target_problem(
        body, targets, ", ".join(config.architectures or []) or config.model_type
    )
    if problem:
        raise ConfigError(problem)


def _looks_like_a_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or name.count("/") > 1 or "\\" in name


def _check_model(name: str) -> Any:
    """The model's config (transformers), or a ConfigError saying why it cannot be loaded."""
    from transformers import AutoConfig

    folder = Path(name).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise ConfigError(f"model.path: {folder} has no config.json: not a model folder")
        if not any((folder / f).is_file() for f in WEIGHT_FILES):
            raise ConfigError(
                f"model.path: {folder} holds no weights (looked for {', '.join(WEIGHT_FILES)})"
            )
        if "auto_map" in _read_json(folder / "config.json"):
            raise ConfigError(
                f"model.path: {folder} needs Python code of its own (auto_map in config.json); "
                "raylm does not run code from model folders"
            )
    elif folder.exists() or _looks_like_a_path(name):
        raise ConfigError(f"model.path: {folder} is not a folder")
    try:  # trust_remote_code=False: never import a folder's code, never ask whether to
        return AutoConfig.from_pretrained(
            str(folder) if folder.is_dir() else name, trust_remote_code=False
        )
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"model.path: '{name}' cannot be loaded here: {_first_line(err)}"
        ) from err


def _check_tokenizer(name: str) -> Any:
    from raylm.data.tokenizer import load_tokenizer

    folder = Path(name).expanduser()
    if not folder.is_dir() and (folder.exists() or _looks_like_a_path(name)):
        raise ConfigError(f"data.tokenizer.path: {folder} is not a folder")
    try:
        return load_tokenizer(folder if folder.is_dir() else name)
    except (OSError, ValueError, TypeError) as err:
        raise ConfigError(
            f"data.tokenizer.path: '{name}' cannot be loaded as a tokenizer: {_first_line(err)}"
        ) from err


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(f"model.path: {path} is not readable JSON ({err})") from err
    return data if isinstance(data, dict) else {}


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
