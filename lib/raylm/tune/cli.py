"""`raylm tune CONFIG [--resume] [--set k=v ...]`: load and validate, then run the sweep.

raylm tune examples/tune_sentiment.yaml
raylm tune examples/tune_sentiment.yaml --resume     # continue an interrupted sweep
"""

from __future__ import annotations

from raylm.recipe import ConfigError, load_config


def tune_command(config_path: str, overrides: list[str] | None = None, resume: bool = False):
    """Validate the recipe and its `tune:` section (ConfigError before any work), then sweep."""
    from raylm.tune.search import load_settings, run_sweep

    cfg = load_config(config_path, list(overrides or []))
    load_settings(cfg)  # the space's errors surface here, naming the field
    result = run_sweep(cfg, resume=resume)
    print(
        f"[raylm.tune] results: {result.sweep_dir / 'results.md'}\n"
        f"[raylm.tune] best config: {result.best_config}\n"
        f"[raylm.tune] best model: {result.best_model}\n"
        f"[raylm.tune] serve it: raylm serve {result.sweep_dir / 'best'}",
        flush=True,
    )
    return result


__all__ = ["ConfigError", "tune_command"]
