"""Side-by-side benchmark harness: warm-up, interleaved repeats (A B A B ...), medians and spread,
results as JSON plus a markdown table.

    from benchmarks.harness import Case, compare, write_results
    table = compare([Case("plain", fn_a), Case("raylm", fn_b)], repeats=5, baseline="plain")
    write_results("train_step", table, notes={...})

Each case is a callable returning a number to compare (a time in seconds, or any metric) or a
dict of such numbers (the first key is the one ratios are taken of). Machines here are noisy, so
cases run interleaved in the same process and we report ratios of medians, never absolutes alone.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Case:
    name: str
    fn: Callable[[], float | dict[str, float]]
    samples: list[dict[str, float]] = field(default_factory=list)


def _as_dict(value: float | dict[str, float]) -> dict[str, float]:
    return dict(value) if isinstance(value, dict) else {"value": float(value)}


def _spread(xs: list[float]) -> float:
    """Relative spread: (max - min) / median, a plain figure people read at a glance."""
    med = statistics.median(xs)
    return (max(xs) - min(xs)) / med if med else 0.0


def compare(
    cases: list[Case],
    repeats: int = 5,
    warmup: int = 1,
    baseline: str | None = None,
    lower_is_better: bool = True,
) -> dict[str, Any]:
    """Run every case `warmup` times, then `repeats` rounds interleaved; summarise."""
    for _ in range(warmup):
        for c in cases:
            c.fn()
    for r in range(repeats):
        order = cases if r % 2 == 0 else list(reversed(cases))  # A B, then B A: no position bias
        for c in order:
            c.samples.append(_as_dict(c.fn()))
    base = next((c for c in cases if c.name == baseline), cases[0])
    key = next(iter(base.samples[0]))
    base_med = statistics.median(s[key] for s in base.samples)
    rows = []
    for c in cases:
        vals = [s[key] for s in c.samples]
        med = statistics.median(vals)
        extra = {k: statistics.median(s[k] for s in c.samples) for k in c.samples[0] if k != key}
        rows.append(
            {
                "case": c.name,
                "metric": key,
                "median": med,
                "spread": _spread(vals),
                "ratio_vs_baseline": med / base_med if base_med else float("nan"),
                "samples": vals,
                **extra,
            }
        )
    return {
        "baseline": base.name,
        "metric": key,
        "lower_is_better": lower_is_better,
        "repeats": repeats,
        "warmup": warmup,
        "rows": rows,
    }


def markdown_table(name: str, table: dict[str, Any]) -> str:
    extra_keys = sorted(
        {k for r in table["rows"] for k in r}
        - {"case", "metric", "median", "spread", "ratio_vs_baseline", "samples"}
    )
    head = [
        "case",
        f"median {table['metric']}",
        "spread",
        f"ratio vs {table['baseline']}",
        *extra_keys,
    ]
    lines = [f"### {name}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table["rows"]:
        cells = [
            r["case"],
            f"{r['median']:.4g}",
            f"{100 * r['spread']:.1f}%",
            f"{r['ratio_vs_baseline']:.3f}",
            *(f"{r.get(k, float('nan')):.4g}" for k in extra_keys),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_results(
    name: str, table: dict[str, Any], notes: dict[str, Any] | None = None, out_dir: Path = RESULTS
) -> Path:
    """Write <out_dir>/<name>.json and <name>.md; returns the JSON path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "name": name,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": {
            "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine(),
        },
        "notes": notes or {},
        **table,
    }
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2), encoding="utf-8")
    md = markdown_table(name, table)
    if notes:
        md += "\n" + "\n".join(f"- {k}: {v}" for k, v in notes.items()) + "\n"
    (out_dir / f"{name}.md").write_text(md, encoding="utf-8")
    print(md, flush=True)
    return path
