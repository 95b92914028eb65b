"""Run the benchmark suite and write benchmarks/results/SUMMARY.md (what `make bench` calls).

    python -m benchmarks.run --quick          # train_step, ingest, serve_latency, serve_stream,
                                              # lm_loss (each --quick)
    python -m benchmarks.run --quick --only train_step
    python -m benchmarks.run --skip serve_latency

Each benchmark writes its own results/<name>.{json,md}; the summary gathers every table found
in results/ (including ones from earlier runs of benchmarks not rerun now, marked by time),
after one table of every figure with its target, pass or miss, and spread
(benchmarks.scorecard); `--readme README.md` writes that table into the README (`make bench`).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import traceback
from pathlib import Path

from benchmarks import scorecard
from benchmarks.harness import RESULTS, markdown_table

SUITE = ("train_step", "ingest", "serve_latency", "serve_stream", "lm_loss")
# In words, under each detailed table (the scorecard checks them: benchmarks.scorecard.TARGETS).
TARGETS = {
    "train_step_1proc": "raylm step / plain PyTorch step <= 1.10",
    "train_step_2proc": "raylm step / DDP (gloo) step <= 1.10",
    "train_step_knobs_6x512": "raylm ZeRO-2 / plain PyTorch <= 1.05; each knob reported beside",
    "train_step_knobs_4x256_2proc": "raylm ZeRO-2 / DDP (gloo) <= 1.10; each knob reported beside",
    "ingest": "wait_share (streaming) <= 5%",
    "serve_direct_ingress": "HTTP p50 - in-process p50 <= 5 ms (the default layout)",
    "serve_direct_ingress_separate": "reported beside the default layout (serve.colocate: false)",
    "serve_direct_batching": "batched / unbatched req/s >= 2 (the default layout: colocated)",
    "serve_latency": "reported beside the default layout (serve.ingress: proxy)",
    "serve_batching": "reported beside the default layout (serve.ingress: proxy)",
    "serve_haproxy_ingress": "reported beside the default layout (serve.ingress: haproxy)",
    "serve_haproxy_batching": "reported beside the default layout (serve.ingress: haproxy)",
    "serve_stream": "first-token overhead (HTTP - in process) <= 10 ms (the default layout)",
    "lm_loss": "labelled-only loss / the model's loss, tokens/s: > 1 (QA recipe batches)",
    "lm_loss_mlm": "labelled-only loss / the model's loss, tokens/s: > 1 (masked-LM blocks)",
    "tune_overhead": "sweep wall per round / one trial <= 1.2",
    "tune_asha": "ASHA trial-epochs <= 1/2 of no stopping, best metric within 1 point",
    "plan_memory": "measured / raylm plan's estimate: reported, not a target (CPU RSS)",
}


def summary() -> str:
    parts = ["# Benchmark summary", "", scorecard.markdown(scorecard.figures()), ""]
    for path in sorted(RESULTS.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if "rows" not in data:
            continue
        name = data.get("name", path.stem)
        parts.append(markdown_table(name, data).rstrip())
        parts.append(f"\n_run {data.get('time', '?')}; repeats {data.get('repeats')}_")
        if name in TARGETS:
            parts.append(f"_target: {TARGETS[name]}_")
        parts.append("")
    return "\n".join(parts) + "\n"


def prometheus_check() -> str:
    """Scrape this node's Prometheus export; which raylm_train_* gauges appear?"""
    from benchmarks.common import node_metrics

    found: set[str] = set()
    for _ in range(6):  # the agent exports every few seconds; worker gauges arrive late
        found |= {
            line.split("{")[0].split(" ")[0]
            for text in node_metrics()
            for line in text.splitlines()
            if "raylm_train_" in line and not line.startswith("#")
        }
        if found:
            break
        time.sleep(5)
    return f"exported: {sorted(found)}" if found else "no raylm_train_* series in the export"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small step counts (~15 min)")
    parser.add_argument("--only", nargs="*", choices=SUITE, help="run just these")
    parser.add_argument("--skip", nargs="*", choices=SUITE, default=[], help="leave these out")
    parser.add_argument("--readme", type=Path, help="write the scorecard into this README")
    args = parser.parse_args()
    names = [n for n in (args.only or SUITE) if n not in args.skip]
    failed, notes = [], {}
    for name in names:
        t0 = time.perf_counter()
        print(f"== {name}", flush=True)
        try:
            module = importlib.import_module(f"benchmarks.{name}")
            sys.argv = [name, *(["--quick"] if args.quick else [])]  # serve_latency reads argv
            module.main()
            if name == "train_step":
                notes["prometheus"] = prometheus_check()
                print(f"prometheus: {notes['prometheus']}", flush=True)
        except Exception:  # one broken benchmark must not hide the others' results
            traceback.print_exc()
            failed.append(name)
        finally:
            import ray

            ray.shutdown()  # each benchmark starts its own Ray (serve_latency with 2 CPUs)
        print(f"== {name}: {time.perf_counter() - t0:.0f} s", flush=True)
    text = summary() + "".join(f"- {k}: {v}\n" for k, v in notes.items())
    (RESULTS / "SUMMARY.md").write_text(text, encoding="utf-8")
    print(text, flush=True)
    if args.readme:
        if not scorecard.rewrite_readme(args.readme, scorecard.markdown(scorecard.figures())):
            failed.append(f"{args.readme} (no scorecard markers)")
        else:
            print(f"scorecard written into {args.readme}", flush=True)
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
