"""The `raylm` command.

    raylm run examples/sentiment_zh.yaml [--output DIR] [--set train.lr=3e-4 ...]
    raylm preprocess|train|export|evaluate CONFIG [--output DIR] [--set k=v ...]
    raylm plan CONFIG --gpus 8 --gpu-memory 80     # which parallel layout fits
    raylm -q|-v COMMAND ...                        # quiet (warnings, results) or verbose
    raylm runs [OUTPUT_DIR] [--json]               # every run: state, best metric, steps, time
    raylm compare RUN RUN ... [-o compare.png]     # config differences, metrics, curves
    raylm predict RUN_OR_MODEL -i FILES -o DIR     # batch inference over files (Ray Data)

Each command loads and validates the config first (a bad field fails before any work starts),
then calls one library function.
"""

from __future__ import annotations

import sys
from typing import Annotated, NoReturn

import typer

from raylm.config import Config, ConfigError
from raylm.recipe import load_config

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.split("\n\n")[0])


@app.callback()
def _console(
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Warnings, errors and results only.")
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option("--verbose", "-v", help="Also Ray Data's progress bars and plans, anywhere."),
    ] = False,
):
    """Console level for every command (raylm.console): `raylm -q run ...`, `raylm -v run ...`."""
    from raylm.console import NORMAL, QUIET, VERBOSE, set_verbosity

    if quiet and verbose:
        raise typer.BadParameter("--quiet and --verbose together")
    set_verbosity(QUIET if quiet else VERBOSE if verbose else NORMAL)


ConfigArg = Annotated[str, typer.Argument(help="Recipe YAML, e.g. examples/sentiment_zh.yaml.")]
OutputOpt = Annotated[
    str | None, typer.Option("--output", "-o", help="Output folder (run.output_dir).")
]
NameOpt = Annotated[str | None, typer.Option("--name", help="Run name (run.name); reuse resumes.")]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", "-s", help="Override: section.field=value.")
]


def _fail(err: BaseException) -> NoReturn:
    """`error: <message>` in red on stderr, exit status 1."""
    typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1) from None


def _console_out():
    """Rich's console for tables: in a pipe or a log (no terminal width) 160 columns, not 80,
    so that run names and paths are not cut."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=160)


def _load(config: str, output: str | None, name: str | None, overrides: list[str] | None) -> Config:
    items = list(overrides or [])
    if output:
        items.append(f"run.output_dir={output}")
    if name:
        items.append(f"run.name={name}")
    try:
        return load_config(config, items)
    except ConfigError as err:
        typer.secho(str(err), fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None


def _message(err: BaseException) -> str:
    """An input error's own message. Ray re-raises a task's ValueError as a RayTaskError that is
    a ValueError too, but whose text is the worker's whole traceback: show what it wraps."""
    ray_exceptions = sys.modules.get("ray.exceptions")  # loaded if Ray raised it
    while ray_exceptions and isinstance(err, ray_exceptions.RayTaskError) and err.cause:
        err = err.cause
    return str(err)


def _stage(fn_name: str, config: str, output, name, overrides) -> None:
    from raylm import stages
    from raylm.train.driver import RunFailedError

    cfg = _load(config, output, name, overrides)
    try:
        getattr(stages, fn_name)(cfg)
    except (FileNotFoundError, ValueError, NotImplementedError, RunFailedError) as err:
        typer.secho(f"error: {_message(err)}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None


@app.command()
def run(config: ConfigArg, output: OutputOpt = None, name: NameOpt = None, set: SetOpt = None):
    """Preprocess -> train -> export -> evaluate, on an embedded Ray or `run.ray_address`."""
    _stage("run", config, output, name, set)


@app.command()
def preprocess(
    config: ConfigArg, output: OutputOpt = None, name: NameOpt = None, set: SetOpt = None
):
    """Clean, deduplicate, split and train a tokenizer (Ray Data); writes <run>/data/."""
    _stage("preprocess", config, output, name, set)


@app.command()
def train(config: ConfigArg, output: OutputOpt = None, name: NameOpt = None, set: SetOpt = None):
    """Train with DeepSpeed inside Ray Train's TorchTrainer; a reused run name resumes."""
    _stage("train", config, output, name, set)


@app.command()
def export(config: ConfigArg, output: OutputOpt = None, name: NameOpt = None, set: SetOpt = None):
    """Export the best checkpoint as a Hugging Face folder (safetensors) in <run>/model."""
    _stage("export", config, output, name, set)


@app.command()
def evaluate(config: ConfigArg, output: OutputOpt = None, name: NameOpt = None, set: SetOpt = None):
    """Score the exported model on the test split (and the baseline); writes metrics.json."""
    _stage("evaluate", config, output, name, set)


@app.command()
def serve(
    target: Annotated[str, typer.Argument(help="Exported model folder, or a run folder.")],
    config: Annotated[str | None, typer.Option("--config", "-c", help="Serve YAML.")] = None,
    build: Annotated[bool, typer.Option("--build", help="Write a Serve config only.")] = False,
    output: Annotated[str | None, typer.Option("--output", help="Where --build writes.")] = None,
):
    """Serve exported models over HTTP with Ray Serve (127.0.0.1 unless configured)."""
    from raylm.serve.cli import serve_command
    from raylm.serve.schemas import ServeStartupError

    try:
        serve_command(target, config, build=build, output=output)
    except (ConfigError, FileNotFoundError, ServeStartupError) as err:
        _fail(err)


@app.command()
def tune(
    config: ConfigArg,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue an interrupted sweep.")
    ] = False,
    output: OutputOpt = None,
    set: SetOpt = None,
):
    """Ray Tune search over training runs (ASHA); writes a trial table, best config, best model."""
    from raylm.tune.cli import tune_command

    items = list(set or []) + ([f"run.output_dir={output}"] if output else [])
    try:
        tune_command(config, items, resume)
    except (ConfigError, FileNotFoundError) as err:
        typer.secho(str(err), fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None


@app.command()
def checkpoints(
    run_dir: Annotated[str, typer.Argument(help="Run folder, e.g. outputs/sentiment_zh.")],
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] = False,
):
    """A run's checkpoints: step, complete / incomplete / corrupt (and why), validation metrics."""
    import json

    from raylm.train.checkpoint import list_checkpoints

    try:
        rows = list_checkpoints(run_dir)
    except (FileNotFoundError, ValueError) as err:
        _fail(err)
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row))
        return
    from rich.table import Table

    table = Table("checkpoint", "step", "state", "validation", "problem")
    for r in rows:
        shown = " ".join(f"{k} {v:.4f}" for k, v in r["metrics"].items())
        colour = {"complete": "green", "incomplete": "yellow"}.get(r["state"], "red")
        table.add_row(
            r["checkpoint"], str(r["step"]), f"[{colour}]{r['state']}", shown, r["detail"]
        )
    _console_out().print(table)


@app.command()
def runs(
    output_dir: Annotated[str, typer.Argument(help="Folder that holds the runs.")] = "outputs",
    as_json: Annotated[
        bool, typer.Option("--json", help="A JSON list instead of a table.")
    ] = False,
):
    """The runs in an output folder: task, model, state, best metric, steps, time, start."""
    import dataclasses
    import json

    from raylm.runs import list_runs, runs_table

    try:
        found = list_runs(output_dir)
    except (FileNotFoundError, ValueError) as err:
        _fail(err)
    if as_json:
        typer.echo(json.dumps([dataclasses.asdict(r) for r in found], indent=2, default=str))
        return
    if not found:
        typer.echo(f"no runs in {output_dir} (no subfolder holds a config.yaml)")
        return

    _console_out().print(runs_table(found))


@app.command()
def compare(
    run_dirs: Annotated[list[str], typer.Argument(help="Run folders, e.g. outputs/a outputs/b.")],
    output: Annotated[
        str | None,
        typer.Option("--output", "-o", help="Curves PNG (default: compare.png beside the runs)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
):
    """Runs side by side: the config fields that differ, metrics, and their curves in one PNG."""
    import json
    from pathlib import Path

    from raylm.runs import compare as compare_runs
    from raylm.runs import compare_table, plot_curves

    try:
        result = compare_runs(run_dirs)
        png = plot_curves(run_dirs, output or Path(run_dirs[0]).parent / "compare.png")
    except (OSError, ValueError) as err:  # OSError: the PNG's folder is not writable
        _fail(err)
    if as_json:
        typer.echo(json.dumps({**result, "plot": png}, indent=2, default=str))
        return

    console = _console_out()
    console.print(compare_table(result))
    console.print(f"curves: {png}" if png else "curves: none (no run has a training history)")


@app.command()
def predict(
    model: Annotated[str, typer.Argument(help="Run folder (its model/) or model folder.")],
    inputs: Annotated[
        list[str],
        typer.Option("--input", "-i", help="Input file, folder, glob or URI (repeatable)."),
    ],
    output: Annotated[
        str, typer.Option("--output", "-o", help="Folder for predictions/, rejects, summary.")
    ],
    task: Annotated[
        str | None, typer.Option(help="The model's task, if no raylm.json says it.")
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option("--format", help="text|jsonl|csv|parquet|squad (default: by extension)."),
    ] = None,
    text_column: Annotated[
        str | None, typer.Option(help="Column holding the text (default: the recipe's).")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Rows per model call.")] = 256,
    concurrency: Annotated[
        int | None, typer.Option(min=1, help="Model actors (default: GPUs, else CPUs - 1).")
    ] = None,
    num_gpus: Annotated[
        float | None, typer.Option(min=0, help="GPUs per actor (default: 1 if any).")
    ] = None,
    cpus_per_actor: Annotated[
        float, typer.Option(min=0.1, help="CPUs per actor (torch threads: rounded, >= 1).")
    ] = 1.0,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Tokens per generation.")] = 32,
    constrain: Annotated[
        bool | None,
        typer.Option("--constrain/--free", help="Generated answers on the page or free."),
    ] = None,
):
    """Batch inference: every row of the inputs through the model, as a Ray Data job."""
    from raylm.predict import predict_files

    try:
        predict_files(
            model, inputs, output, task=task, fmt=fmt, text_column=text_column,
            batch_size=batch_size, concurrency=concurrency, num_gpus=num_gpus,
            cpus_per_actor=cpus_per_actor, max_new_tokens=max_new_tokens, constrain=constrain,
        )  # fmt: skip
    except (OSError, ValueError) as err:
        _fail(_message(err))


@app.command()
def plan(
    config: ConfigArg,
    gpus: Annotated[int, typer.Option("--gpus", min=1, help="Devices in all.")] = 1,
    gpu_memory: Annotated[
        float, typer.Option("--gpu-memory", min=0.1, help="Memory per device, GB (GiB).")
    ] = 80.0,
    nodes: Annotated[int, typer.Option("--nodes", min=1, help="Nodes the devices are on.")] = 1,
    set: SetOpt = None,
):
    """Per-device memory of every data x pipeline x tensor-parallel x ZeRO layout on N devices,
    ranked, marking those that do not fit; prints the --set line of the best one."""
    from rich.table import Table

    from raylm.plan import GiB
    from raylm.plan import plan as make_plan

    cfg = _load(config, None, None, set)
    if gpus % nodes:
        typer.secho(f"error: --gpus {gpus} is not a multiple of --nodes {nodes}", err=True)
        raise typer.Exit(2)
    shape, rows = make_plan(cfg, gpus, gpu_memory, nodes)
    per_node = gpus // nodes
    console = _console_out()
    console.print(
        f"{cfg.model.task}: {shape.model_type}, {shape.layers} layers, hidden {shape.hidden}, "
        f"{shape.heads} heads, vocabulary {shape.vocab}; "
        f"{(shape.layers * shape.layer_params + shape.other_params) / 1e6:,.1f}M parameters; "
        f"micro-batch {cfg.train.batch_size} x {cfg.data.max_length} tokens, "
        f"{cfg.train.precision}; {gpus} device(s) of {gpu_memory:g} GiB on {nodes} node(s)"
    )
    table = Table("layout", "params/dev", "states", "activ.", "logits", "total GiB", "fits",
                  "note")  # fmt: skip
    table.columns[0].no_wrap = True
    for est, fits in rows:
        lay = est.layout
        note = "TP crosses nodes" if lay.tensor > per_node else ""
        table.add_row(
            lay.name, f"{est.params / 1e6:,.1f}M", f"{est.states / GiB:.2f}",
            f"{est.activations / GiB:.2f}", f"{est.logits / GiB:.2f}",
            f"{est.total / GiB:.2f}", "[green]yes" if fits else "[red]no", note,
        )  # fmt: skip
    console.print(table)
    best = next((est.layout for est, fits in rows if fits), None)
    if best is None:
        console.print(
            "[red]no layout fits: lower train.batch_size or data.max_length, or add devices"
        )
        raise typer.Exit(1)
    console.print(
        f"best: {best.name}: --set train.num_workers={gpus} --set train.zero_stage={best.zero} "
        f"--set train.parallel.pipeline_stages={best.pipeline} "
        f"--set train.parallel.tensor_parallel={best.tensor}"
    )


@app.command()
def validate(config: ConfigArg, set: SetOpt = None):
    """Check a config and print it fully resolved, without running anything."""
    import yaml

    cfg = _load(config, None, None, set)
    typer.echo(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True))


# --- cluster jobs (raylm.jobs.cli); paste into lib/raylm/cli.py above `def main()` ---
AddressOpt = Annotated[
    str | None,
    typer.Option("--address", "-a", help="Ray dashboard URL (else $RAY_ADDRESS, else :8265)."),
]
JobIdArg = Annotated[str, typer.Argument(help="Job id, as `raylm submit` printed it.")]


def _jobs(fn, *args) -> None:
    from raylm.jobs.submit import SubmitError

    try:
        fn(*args)
    except (SubmitError, ConfigError, FileNotFoundError) as err:
        _fail(err)


@app.command()
def submit(
    job: Annotated[
        str, typer.Argument(help="run|preprocess|train|tune|serve|predict (ray_jobs/*.py).")
    ],
    config: Annotated[
        str, typer.Argument(help="Recipe YAML; for predict, the run or model folder.")
    ],
    address: AddressOpt = None,
    set: SetOpt = None,
    num_cpus: Annotated[float, typer.Option("--num-cpus", help="CPUs for the driver.")] = 0,
    num_gpus: Annotated[float, typer.Option("--num-gpus", help="GPUs for the driver.")] = 0,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Stream the log.")] = False,
    job_args: Annotated[
        list[str] | None,
        typer.Argument(help="predict only, after --: its options (--input ... --output ...)."),
    ] = None,
):
    """Upload this checkout and run ray_jobs/JOB.py with CONFIG as a Ray job on a cluster.

    raylm submit predict RUN_OR_MODEL -- --input FILES --output DIR
    """
    from raylm.jobs.cli import submit_command

    _jobs(submit_command, job, config, address, set, num_cpus, num_gpus, follow, job_args)


@app.command()
def status(job_id: JobIdArg, address: AddressOpt = None):
    """A submitted job's state: PENDING, RUNNING, SUCCEEDED, FAILED or STOPPED."""
    from raylm.jobs.cli import status_command

    _jobs(status_command, job_id, address)


@app.command()
def logs(
    job_id: JobIdArg,
    address: AddressOpt = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Stream until it ends.")] = False,
):
    """A submitted job's driver log (with --follow: exit 1 unless it SUCCEEDED)."""
    from raylm.jobs.cli import logs_command

    _jobs(logs_command, job_id, address, follow)


@app.command()
def stop(job_id: JobIdArg, address: AddressOpt = None):
    """Stop a running job."""
    from raylm.jobs.cli import stop_command

    _jobs(stop_command, job_id, address)


@app.command("list")
def list_(address: AddressOpt = None):
    """Jobs submitted to the cluster, oldest first."""
    from raylm.jobs.cli import list_command

    _jobs(list_command, address)


def main() -> None:  # pragma: no cover - console entry point alias
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()
