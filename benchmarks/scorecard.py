"""One table of every benchmark figure: what it compares, its value, its target, pass or miss, and
its spread, gathered from benchmarks/results/*.json (what `make bench` prints and writes into the
README's performance section).

    python -m benchmarks.scorecard                   # print the table from the results there
    python -m benchmarks.scorecard --readme README.md  # and rewrite the README's table

Each result file holds one side-by-side comparison (benchmarks.harness.compare): a baseline case
and the others, with medians and spreads. A figure is the ratio of a case's median to its
reference's (by default the file's baseline), the difference of the two (for latencies, where
the overhead in ms is what matters), or a value the case reports itself (e.g. a wait share).
Cases without a target are listed as reported.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.harness import RESULTS

START, END = "<!-- scorecard:start -->", "<!-- scorecard:end -->"


@dataclass(frozen=True)
class Target:
    result: str  # the results/<result>.json file
    case: str  # a regular expression on the case names: one figure per matching case
    kind: str  # "ratio" | "difference" | a key of the case's row
    op: str  # "<=" | ">=" | "" (reported, no target)
    bound: float = 0.0
    unit: str = ""
    # The reference case's name from the case's (default: the file's baseline).
    reference: Callable[[str], str] | None = None


def _unbatched(case: str) -> str:
    return case.replace("batched (16)", "unbatched (1)")


TARGETS = (
    Target("train_step_1proc", r"raylm_zero[02]_1w", "ratio", "<=", 1.10),
    Target("train_step_2proc", r"raylm_zero[02]_2w", "ratio", "<=", 1.10),
    Target("train_step_tracking", r"tracked", "ratio", "<=", 1.02),
    Target("train_step_size_4x256", r"raylm_zero2_1w$", "ratio", "<=", 1.10),
    Target("train_step_size_4x256_2proc", r"raylm_zero2_2w$", "ratio", "<=", 1.10),
    Target("train_step_size_6x512", r"raylm_zero2_1w$", "ratio", "<=", 1.05),
    Target("train_step_knobs_6x512", r"raylm_zero2_1w$", "ratio", "<=", 1.05),
    Target("train_step_knobs_4x256_2proc", r"raylm_zero2_2w$", "ratio", "<=", 1.10),
    Target("ingest", r"ray_data_stream", "wait_share", "<=", 0.05),
    # Serve: the targets hold for the default layout (serve.ingress: direct); the others are
    # reported beside it
    Target("serve_direct_ingress", r"HTTP /v1/classify", "difference", "<=", 5.0, "ms"),
    Target("serve_direct_ingress_separate", r"HTTP /v1/classify", "difference", "", 0.0, "ms"),
    Target("serve_direct_batching", r"^colocated.*: batched", "ratio", ">=", 2.0, "", _unbatched),
    Target("serve_direct_batching", r"^separate.*: batched", "ratio", "", 0.0, "", _unbatched),
    Target("serve_latency", r"HTTP /v1/classify", "difference", "", 0.0, "ms"),
    Target("serve_batching", r": batched", "ratio", "", 0.0, "", _unbatched),
    Target("serve_haproxy_ingress", r"HTTP /v1/classify", "difference", "", 0.0, "ms"),
    Target("serve_haproxy_batching", r": batched", "ratio", "", 0.0, "", _unbatched),
    Target("serve_stream", r"HTTP stream \(default", "difference", "<=", 10.0, "ms"),
    Target("serve_stream", r"HTTP stream \((?!default)", "difference", "", 0.0, "ms"),
    Target("lm_loss", r"labelled-only", "ratio", ">=", 1.0),
    Target("lm_loss_mlm", r"labelled-only", "ratio", ">=", 1.0),
    Target("tune_overhead", r"_trials_", "ratio", "<=", 1.2),
    Target("tune_asha", r"asha", "ratio", "<=", 0.5),
)


def _rows(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["case"]: r for r in data["rows"]}


def figures(results: Path = RESULTS) -> list[dict[str, Any]]:
    """Every figure of every result file, with its target and verdict where one is set."""
    out = []
    for path in sorted(results.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if "rows" not in data:
            continue
        name, rows = data.get("name", path.stem), _rows(data)
        targets = [t for t in TARGETS if t.result == name]
        for case, row in rows.items():
            if case == data["baseline"]:
                continue
            target = next((t for t in targets if re.search(t.case, case)), None)
            t = target or Target(name, "", "ratio", "")
            ref = rows.get(t.reference(case) if t.reference else data["baseline"])
            if ref is None:
                continue
            if t.kind == "ratio":
                value = row["median"] / ref["median"] if ref["median"] else float("nan")
            elif t.kind == "difference":
                value = row["median"] - ref["median"]
            else:
                value = row.get(t.kind, float("nan"))
            passed = None
            if t.op == "<=":
                passed = value <= t.bound
            elif t.op == ">=":
                passed = value >= t.bound
            out.append(
                {
                    "benchmark": name,
                    "case": case,
                    "reference": ref["case"] if t.kind in ("ratio", "difference") else "",
                    "figure": t.kind,
                    "value": value,
                    "unit": t.unit,
                    "target": f"{t.op} {t.bound:g} {t.unit}".rstrip() if t.op else "",
                    "passed": passed,
                    "spread": row["spread"],
                    "reference_spread": ref["spread"] if ref is not row else None,
                    "run": data.get("time", "?"),
                }
            )
    return out


def _cell(f: dict[str, Any]) -> str:
    value = f["value"]
    if f["figure"] == "ratio":
        return f"{value:.3f}"
    if f["unit"] == "ms":
        return f"{value:+.1f} ms"
    return f"{100 * value:.2f}%" if abs(value) < 1 else f"{value:.3g}"


def markdown(rows: list[dict[str, Any]]) -> str:
    """The scorecard as a markdown table (figures without a target marked `reported`)."""
    head = "| benchmark | case | against | figure | value | target | result | spread | run |"
    lines = [head, "|---|---|---|---|---|---|---|---|---|"]
    for f in rows:
        verdict = {True: "**pass**", False: "**miss**", None: "reported"}[f["passed"]]
        spread = f"{100 * f['spread']:.1f}%"
        if f["reference_spread"] is not None and f["reference"]:
            spread += f" / {100 * f['reference_spread']:.1f}%"
        lines.append(
            f"| {f['benchmark']} | {f['case']} | {f['reference'] or '-'} | {f['figure']} | "
            f"{_cell(f)} | {f['target'] or '-'} | {verdict} | {spread} | {f['run'][:10]} |"
        )
    return "\n".join(lines) + "\n"


def rewrite_readme(readme: Path, table: str) -> bool:
    """Put `table` between the README's scorecard markers; False when they are not there."""
    text = readme.read_text(encoding="utf-8")
    if START not in text or END not in text:
        return False
    before, rest = text.split(START, 1)
    after = rest.split(END, 1)[1]
    readme.write_text(f"{before}{START}\n{table}{END}{after}", encoding="utf-8")
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--readme", type=Path, help="rewrite this README's scorecard table")
    args = parser.parse_args()
    table = markdown(figures(args.results))
    print(table, flush=True)
    if args.readme and not rewrite_readme(args.readme, table):
        raise SystemExit(f"{args.readme}: no {START} ... {END} markers to write between")


if __name__ == "__main__":
    main()
