"""Shared argument parsing for the thin job entrypoints in this folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# A job's working dir is the repository root; make `lib/` importable when raylm isn't installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))


def run_stage(stage: str, description: str) -> None:
    from raylm.recipe import ConfigError, load_config

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", required=True, help="recipe YAML")
    parser.add_argument("--set", action="append", default=[], help="override section.field=value")
    args = parser.parse_args()
    try:
        cfg = load_config(args.config, args.set)
    except ConfigError as err:
        sys.exit(str(err))
    from raylm import stages

    getattr(stages, stage)(cfg)
