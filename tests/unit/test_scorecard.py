"""The benchmark scorecard (benchmarks/scorecard.py): every figure of the result files with its
target and verdict, and the README table it rewrites. Synthetic result files; no timing."""

from __future__ import annotations

import json

from benchmarks.harness import Case, compare, write_results
from benchmarks.scorecard import END, START, figures, markdown, rewrite_readme


def _result(folder, name: str, medians: dict[str, float], baseline: str, **extra) -> None:
    cases = [
        Case(case, lambda m=m, more=extra.get(case, {}): {"value": m, **more})
        for case, m in medians.items()
    ]
    write_results(name, compare(cases, repeats=2, warmup=0, baseline=baseline), out_dir=folder)


def test_figures_take_ratios_differences_and_own_values_against_their_targets(tmp_path, capsys):
    _result(tmp_path, "train_step_1proc",
            {"plain_pytorch": 0.10, "raylm_zero0_1w": 0.105, "raylm_zero2_1w": 0.123},
            "plain_pytorch")  # fmt: skip
    _result(tmp_path, "serve_direct_ingress",
            {"direct predict_texts": 1.5, "HTTP /v1/classify (colocated)": 5.0},
            "direct predict_texts")  # fmt: skip
    _result(tmp_path, "serve_direct_batching",
            {"colocated, a: unbatched (1)": 100.0, "colocated, a: batched (16)": 250.0,
             "colocated, b: unbatched (1)": 50.0, "colocated, b: batched (16)": 60.0,
             "separate: unbatched (1)": 40.0, "separate: batched (16)": 48.0},
            "colocated, a: unbatched (1)")  # fmt: skip
    _result(tmp_path, "ingest", {"in_memory": 1.0, "ray_data_stream": 1.0}, "in_memory",
            ray_data_stream={"wait_share": 0.07})  # fmt: skip
    _result(tmp_path, "predict", {"plain": 500.0, "raylm-1": 650.0}, "plain")
    capsys.readouterr()
    got = {(f["benchmark"], f["case"]): f for f in figures(tmp_path)}

    zero2 = got["train_step_1proc", "raylm_zero2_1w"]
    assert zero2["value"] == 0.123 / 0.10 and zero2["passed"] is False
    assert got["train_step_1proc", "raylm_zero0_1w"]["passed"] is True
    http = got["serve_direct_ingress", "HTTP /v1/classify (colocated)"]
    assert http["figure"] == "difference" and http["value"] == 3.5 and http["passed"] is True
    # A batched case is measured against its own unbatched one, not the file's baseline.
    assert got["serve_direct_batching", "colocated, a: batched (16)"]["value"] == 2.5
    b = got["serve_direct_batching", "colocated, b: batched (16)"]
    assert (
        b["reference"] == "colocated, b: unbatched (1)"
        and b["value"] == 1.2
        and b["passed"] is False
    )
    # Targets hold for the default layout (colocated); the separate one is reported beside it
    separate = got["serve_direct_batching", "separate: batched (16)"]
    assert separate["value"] == 1.2 and separate["passed"] is None
    assert got["ingest", "ray_data_stream"]["value"] == 0.07
    assert got["ingest", "ray_data_stream"]["passed"] is False  # target: <= 5%
    assert got["predict", "raylm-1"]["passed"] is None  # no target: reported

    table = markdown(list(got.values()))
    assert "| train_step_1proc | raylm_zero2_1w | plain_pytorch | ratio | 1.230 | <= 1.1 |" in table
    assert "| **miss** |" in table and "| **pass** |" in table and "| reported |" in table
    assert "+3.5 ms | <= 5 ms" in table and "7.00% | <= 0.05" in table


def test_the_readme_table_is_rewritten_between_its_markers_only(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{START}\nold table\n{END}\nafter\n")
    assert rewrite_readme(readme, "| new |\n")
    assert readme.read_text() == f"intro\n{START}\n| new |\n{END}\nafter\n"
    bare = tmp_path / "other.md"
    bare.write_text("no markers\n")
    assert not rewrite_readme(bare, "| new |\n") and bare.read_text() == "no markers\n"
    json.dumps(figures(tmp_path))  # no result files: an empty scorecard
