"""`raylm serve MODEL_DIR_OR_RUN [--config serve.yaml] [--build]`: the command's body.

    raylm serve outputs/serve_demo --config examples/serve.yaml          # serve until Ctrl-C
    raylm serve outputs/serve_demo --config examples/serve.yaml --build  # write a Serve config
    serve deploy outputs/serve_demo/serve_deploy.yaml                    # ...for a running cluster

A run folder means its exported `<run>/model`. `--config` takes a recipe (its `serve:` section is
used) or a bare serve mapping. Errors raise `ConfigError` / `FileNotFoundError` with a message fit
to show as is.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from raylm.models.export import is_model_folder
from raylm.serve.launch import deploy
from raylm.serve.schemas import ServeConfig, http_options, load_serve_config, read_serve_section

IMPORT_PATH = "raylm.serve.app:build_app"


def resolve_model_dir(target: str | Path) -> Path:
    """An exported model folder, or a run folder holding one in `model/`."""
    target = Path(target)
    for candidate in (target, target / "model"):
        if is_model_folder(candidate):
            return candidate.resolve()
    raise FileNotFoundError(
        f"{target}: no exported model here or in {target / 'model'} (run `raylm export` first)"
    )


def model_name(model_dir: Path) -> str:
    """A deployment-safe name: the run's name for `<run>/model`, else the folder's name."""
    base = model_dir.parent.name if model_dir.name == "model" else model_dir.name
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", base).lstrip("_.-")[:64]
    return name or "model"


def deploy_config(cfg: ServeConfig) -> dict[str, Any]:
    """A `serve deploy` / RayService `serveConfigV2` document for this serve config."""
    args = cfg.model_dump(mode="json", exclude_defaults=True)
    args["models"] = {name: str(Path(path).resolve()) for name, path in cfg.models.items()}
    app = {
        "name": cfg.app_name,
        "route_prefix": cfg.route_prefix,
        "import_path": IMPORT_PATH,
        "args": args,
    }
    return {"http_options": http_options(cfg), "applications": [app]}


def write_deploy_config(cfg: ServeConfig, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    header = (
        "# Written by `raylm serve --build`. Deploy to a running cluster: serve deploy "
        f"{out.name}\n# Model paths must exist on every node that runs a replica. "
        "serve.ingress takes effect where the\n# cluster's Ray starts "
        "(raylm.serve.launch.INGRESS_ENV; cluster.yaml sets `direct`'s).\n"
    )
    body = yaml.safe_dump(deploy_config(cfg), sort_keys=False, allow_unicode=True)
    out.write_text(header + body, encoding="utf-8")
    return out


def serve_command(
    target: str, config_path: str | None = None, build: bool = False, output: str | None = None
) -> str:
    """Serve the model at `target` (plus any in `serve.models`); return the URL or YAML path.

    `build` writes the Serve config (default `<run>/serve_deploy.yaml`) instead of serving;
    otherwise this blocks until Ctrl-C.
    """
    section = read_serve_section(config_path)
    model_dir = resolve_model_dir(target)
    extra = section.get("models") or {}
    models = {model_name(model_dir): str(model_dir), **extra} if isinstance(extra, dict) else extra
    source = str(config_path or "serve")
    cfg = load_serve_config({**section, "models": models}, source=source)
    if build:
        out = write_deploy_config(cfg, output or model_dir.parent / "serve_deploy.yaml")
        print(f"wrote {out}; deploy with: serve deploy {out}")
        return str(out)
    return deploy({}, cfg, blocking=True)
