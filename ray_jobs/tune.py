"""Ray Tune search over the training driver (the config's `tune:` section).

    python ray_jobs/tune.py --config examples/tune_sentiment.yaml [--set k=v ...] [--resume]
    ray job submit --working-dir . --runtime-env ray_jobs/runtime_env.yaml -- \
        python ray_jobs/tune.py --config examples/tune_sentiment.yaml
"""

import argparse

import _entry  # noqa: F401  (puts the shipped lib/ on sys.path)

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="recipe YAML with a `tune:` section")
    parser.add_argument("--set", action="append", default=[], help="override section.field=value")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted search")
    args = parser.parse_args()
    from raylm.tune.cli import tune_command

    tune_command(args.config, args.set, args.resume)
