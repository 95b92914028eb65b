#!/usr/bin/env python
"""Losses of pipeline (P = 2) and tensor-parallel (T = 2) runs on 2 workers against the same
model, data and seed on one worker, over 30 optimizer steps: the configuration of
tests/integration/test_model_parallel.py (tiny GPT-2, hidden 64, fp32, no dropout, 2
micro-batches of 4 blocks per step, clipping 0.5), run for longer than the test does.

    python docs/parallel/layout_parity.py     # about 2.5 minutes on 2 cores

Prints the largest loss difference of each layout (the run histories keep 6 decimals).
"""

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

import ray  # noqa: E402
from test_model_parallel import _cfg, _losses  # noqa: E402

from raylm import stages  # noqa: E402
from raylm.recipe import config_from_dict  # noqa: E402

LAYOUTS = {
    "pp2_zero0": {"num_workers": 2, "zero_stage": 0,
                  "parallel": {"pipeline_stages": 2, "activation_checkpointing": True}},
    "pp2_zero1_uniform": {"num_workers": 2, "zero_stage": 1,
                          "parallel": {"pipeline_stages": 2, "partition": "uniform"}},
    "tp2_zero1": {"num_workers": 2, "parallel": {"tensor_parallel": 2}},
}  # fmt: skip


def main(steps: int = 30) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="raylm-parity-"))
    ray.init(num_cpus=4, log_to_driver=False)
    stages.preprocess(config_from_dict(_cfg(tmp, "prep")))

    def run(name: str, **train) -> dict[int, float]:
        return _losses(stages.train(config_from_dict(_cfg(tmp, name, max_steps=steps, **train))))

    ref = run("one_worker")
    out = {"one_worker": ref}
    for name, layout in LAYOUTS.items():
        out[name] = got = run(name, **layout)
        worst = max(abs(got[s] - ref[s]) for s in ref)
        print(f"{name}: {len(got)} steps, largest loss difference {worst:.2e}", flush=True)
    (tmp / "parity.json").write_text(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
