"""Serving overhead and dynamic batching, side by side on one machine.

    python -m benchmarks.serve_latency --quick     # about a minute on 2 cores
    python -m benchmarks.serve_latency             # more requests, steadier figures

1. Latency: one text per request, sequential. HTTP through Ray Serve (proxy -> ingress -> model
   replica) vs a direct in-process `ClassifierPredictor.predict_texts` call on the same text,
   rounds interleaved; the difference of medians is what serving adds. GET /healthz (proxy ->
   ingress, no model) splits that into the HTTP hop and the model-replica hop.
2. Throughput at concurrency 16 (one text per request): the same model with `@serve.batch`
   max_batch_size 16 vs 1, interleaved rounds.
   Twice: the tiny model on a short text (HTTP-bound on 2 cores) and the small preset (4 x 256)
   on a 120-character text, where the model is a larger share of each request.
Writes benchmarks/results/serve_latency, serve_batching and serve_batching_small (.json, .md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.harness import Case, compare, write_results

TEXT = "这本书的故事很精彩，物流也很快，包装完好，推荐大家购买。"
CORPUS = [TEXT, "质量太差了非常失望，不会再买了。", "还行吧一般般", "good book, nice story"] * 8


def make_classifier(out: Path, preset: str = "tiny") -> Path:
    """A random-weight BERT classifier in the exported layout (timing needs no training)."""
    import torch

    from raylm.config import ModelConfig, TokenizerConfig
    from raylm.data.tokenizer import train_tokenizer
    from raylm.models.build import build_model

    torch.manual_seed(0)
    tok = train_tokenizer(CORPUS, TokenizerConfig(vocab_size=300, min_frequency=1), out)
    model = build_model(
        ModelConfig(task="classification", preset=preset), len(tok), 2, tok.pad_token_id
    )
    model.save_pretrained(str(out))
    meta = {"task": "classification", "id2label": {"0": "neg", "1": "pos"}, "max_length": 128}
    (out / "raylm.json").write_text(json.dumps(meta), encoding="utf-8")
    return out


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def _summary(seconds: list[float]) -> dict[str, float]:
    ms = [1000 * s for s in seconds]
    return {
        "p50_ms": statistics.median(ms),
        "p99_ms": _pct(ms, 0.99),
        "mean_ms": statistics.mean(ms),
    }


def latency_cases(url: str, model_dir: Path, n: int) -> list[Case]:
    import httpx

    from raylm.eval.predict import ClassifierPredictor

    predictor = ClassifierPredictor(str(model_dir), max_length=128)
    client = httpx.Client(base_url=url, timeout=30)

    def direct() -> dict[str, float]:
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            predictor.predict_texts([TEXT])
            times.append(time.perf_counter() - t0)
        return _summary(times)

    def http() -> dict[str, float]:
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            resp = client.post("/b/v1/classify", json={"texts": [TEXT]})
            times.append(time.perf_counter() - t0)
            resp.raise_for_status()
        return _summary(times)

    def probe() -> dict[str, float]:  # proxy + ingress only: what the model hop adds is the rest
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            client.get("/b/healthz").raise_for_status()
            times.append(time.perf_counter() - t0)
        return _summary(times)

    return [
        Case("direct predict_texts", direct),
        Case("HTTP /v1/classify", http),
        Case("HTTP /healthz (no model hop)", probe),
    ]


def throughput_case(url: str, prefix: str, n: int, concurrency: int = 16, text: str = TEXT):
    import httpx

    async def run() -> dict[str, float]:
        todo = iter(range(n))
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:

            async def worker() -> None:
                for _ in todo:
                    resp = await client.post(f"{prefix}/v1/classify", json={"texts": [text]})
                    resp.raise_for_status()

            t0 = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return {"req_per_s": n / (time.perf_counter() - t0)}

    return lambda: asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests (smoke run)")
    args = parser.parse_args()
    n_lat, n_tput, repeats = (40, 96, 3) if args.quick else (200, 480, 5)

    import ray
    import torch
    from ray import serve

    from raylm.serve.app import deploy

    torch.set_num_threads(1)  # as in a replica given one CPU: compare like with like
    ray.init(num_cpus=2, log_to_driver=False)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = make_classifier(Path(tmp) / "clf")
        # The batching question also asked where the model, not HTTP, is the cost: the "small"
        # preset (4 x 256) on 128-token texts.
        small_dir = make_classifier(Path(tmp) / "clf_small", preset="small")
        base = {"port": 8765, "num_cpus": 0.5, "max_ongoing_requests": 32}
        for name, size, path in (
            ("b", 16, model_dir),
            ("u", 1, model_dir),
            ("bs", 16, small_dir),
            ("us", 1, small_dir),
        ):
            cfg = {
                **base,
                "app_name": f"bench_{name}",
                "route_prefix": f"/{name}",
                "batch": {"max_batch_size": size, "batch_wait_timeout_s": 0.005},
            }
            deploy({"clf": str(path)}, cfg)
        url = "http://127.0.0.1:8765"
        load0 = os.getloadavg()[0]  # other processes on these cores skew absolute figures
        try:
            table = compare(latency_cases(url, model_dir, n_lat), repeats=repeats)
            rows = {r["case"]: r for r in table["rows"]}
            added = rows["HTTP /v1/classify"]["median"] - rows["direct predict_texts"]["median"]
            write_results(
                "serve_latency",
                table,
                notes={
                    "requests per round": n_lat,
                    "serving adds (p50, ms)": round(added, 2),
                    "setup": "tiny BERT (2x128), 1 text/request, sequential, loopback, 2 CPUs",
                    "load average before/after": f"{load0:.1f} / {os.getloadavg()[0]:.1f}",
                },
            )
            long = TEXT * 4  # ~120 characters: 128 tokens after truncation
            for name, prefix, text, setup in (
                ("serve_batching", "", TEXT, "tiny BERT 2x128, a 30-character text"),
                ("serve_batching_small", "s", long, "small BERT 4x256, a 120-character text"),
            ):
                unbatched = throughput_case(url, f"/u{prefix}", n_tput, text=text)
                batched = throughput_case(url, f"/b{prefix}", n_tput, text=text)
                cases = [
                    Case("unbatched (max_batch_size 1)", unbatched),
                    Case("batched (max_batch_size 16)", batched),
                ]
                table = compare(cases, repeats=repeats, lower_is_better=False)
                write_results(
                    name,
                    table,
                    notes={
                        "requests per round": n_tput,
                        "concurrency": 16,
                        "setup": f"1 replica per app (0.5 CPU reserved), 1 text/request: {setup}",
                    },
                )
        finally:
            serve.shutdown()
            ray.shutdown()


if __name__ == "__main__":
    main()
