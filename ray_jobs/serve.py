"""Serve an exported model with Ray Serve (blocks; stop the job to take the app down).

    python ray_jobs/serve.py --config examples/serve.yaml [--target outputs/serve_demo/model]
    ray job submit --working-dir . --runtime-env ray_jobs/runtime_env.yaml -- \
        python ray_jobs/serve.py --config examples/serve.yaml

The target defaults to the config's run folder (`<run.output_dir>/<run.name>`), whose model/
the pipeline job exported; on a cluster that path must be on storage the Serve replicas can read.
"""

import argparse
import sys

import _entry  # noqa: F401  (puts the shipped lib/ on sys.path)

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="recipe or serve YAML (`serve:` section)")
    parser.add_argument("--set", action="append", default=[], help="override section.field=value")
    parser.add_argument("--target", help="exported model folder or run folder")
    args = parser.parse_args()
    from raylm.recipe import ConfigError, load_config

    target = args.target
    if target is None:
        try:
            target = str(load_config(args.config, args.set).run.run_dir)
        except ConfigError as err:
            sys.exit(f"{err}\n(pass --target when the config is not a full recipe)")
    from raylm.serve.cli import serve_command

    serve_command(target, args.config)
