"""Serving overhead and dynamic batching, side by side on one machine.

    python -m benchmarks.serve_latency --quick     # about 3 minutes on 2 cores
    python -m benchmarks.serve_latency             # more requests, steadier figures

1. Latency: one text per request, sequential; HTTP /v1/classify vs a direct in-process
   `ClassifierPredictor.predict_texts` call on the same text, rounds interleaved; the difference
   of medians is what serving adds. Two app layouts behind Ray Serve's HTTP proxy: `separate`
   (proxy -> ingress -> model deployment, the default) and `colocated` (serve.colocate: the
   model inside the ingress replica). GET /healthz (no model) is the floor of the HTTP path.
2. Throughput at concurrency 16 (one text per request): `@serve.batch` max_batch_size 16 vs 1,
   interleaved, with the mean batch size Serve actually formed (its serve_batches_processed
   counter), from an aiohttp load generator on the same 2 cores. The tiny model on a short text
   (HTTP-bound on 2 cores), and the small preset (4 x 256) on a 120-character text, where the
   model is a larger share of each request.
3. The same apps under the other `serve.ingress` layouts, each in a fresh Ray in a child
   process (Ray reads the switches when Serve's processes start; raylm.serve.launch.INGRESS_ENV):
   `direct` (Ray's RAY_SERVE_THROUGHPUT_OPTIMIZED=1: the client calls the ingress replica's own
   port, 30000 up, no proxy) and `haproxy` (the same plus RAY_SERVE_ENABLE_HA_PROXY=1: HAProxy
   on the serve port balances over the ingress replicas' ports). The HAProxy phase also records
   the addresses HAProxy listens on.
Writes benchmarks/results/serve_latency, serve_batching, serve_batching_small,
serve_{direct,haproxy}_ingress and serve_{direct,haproxy}_batching (.json, .md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.common import node_metrics
from benchmarks.harness import Case, compare, write_results

TEXT = "这本书的故事很精彩，物流也很快，包装完好，推荐大家购买。"
CORPUS = [TEXT, "质量太差了非常失望，不会再买了。", "还行吧一般般", "good book, nice story"] * 8


def make_classifier(out: Path, preset: str = "tiny") -> Path:
    """A random-weight BERT classifier in the exported layout (timing needs no training)."""
    import torch

    from raylm.config import ModelConfig, TokenizerConfig
    from raylm.data.tokenizer import train_tokenizer
    from raylm.tasks import build_model

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


class _Conn:
    """A keep-alive HTTP/1.1 connection (http.client) that raises on a non-2xx answer."""

    def __init__(self, url: str) -> None:
        import http.client
        from urllib.parse import urlsplit

        u = urlsplit(url)
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        self.timings: list[dict[str, float]] = []  # each answer's Server-Timing, in ms

    def request(self, method: str, path: str, body: bytes | None = None) -> bytes:
        headers = {"content-type": "application/json"} if body else {}
        self.conn.request(method, path, body=body, headers=headers)
        resp = self.conn.getresponse()
        data = resp.read()
        if header := resp.getheader("server-timing"):
            parts = (p.strip().split(";dur=") for p in header.split(","))
            self.timings.append({name: float(ms) for name, ms in parts})
        if resp.status >= 300:
            raise RuntimeError(f"{method} {path}: HTTP {resp.status}: {data[:200]!r}")
        return data


def latency_cases(url: str, model_dir: Path, n: int, apps: dict[str, str]) -> list[Case]:
    """Direct in-process call, then HTTP /v1/classify for each app, and /healthz (no model)."""
    from raylm.eval.predict import ClassifierPredictor

    predictor = ClassifierPredictor(str(model_dir), max_length=128)
    # One keep-alive connection from the standard library: a lean client, so the difference
    # measured is the server's (httpx adds about 0.5 ms of its own per request here).
    client = _Conn(url)

    def timed(call: Any) -> Any:
        def run() -> dict[str, float]:
            times = []
            client.timings.clear()
            for _ in range(n):
                t0 = time.perf_counter()
                call()
                times.append(time.perf_counter() - t0)
            row = _summary(times)
            if client.timings:  # what the ingress says it spent, and awaiting the model in it
                for key in ("model", "ingress"):
                    row[f"{key}_ms"] = statistics.median(t[key] for t in client.timings)
            return row

        return run

    def post(prefix: str) -> Any:
        body = json.dumps({"texts": [TEXT]}).encode()
        return lambda: client.request("POST", f"/{prefix}/v1/classify", body)

    first = next(iter(apps.values()))
    return [
        Case("direct predict_texts", timed(lambda: predictor.predict_texts([TEXT]))),
        *(Case(f"HTTP /v1/classify ({mode})", timed(post(app))) for mode, app in apps.items()),
        Case(
            "HTTP /healthz (no model)",
            timed(lambda: client.request("GET", f"/{first}/healthz")),
        ),
    ]


def throughput_case(app_url: str, n: int, concurrency: int = 16, text: str = TEXT):
    """n requests to {app_url}/v1/classify (app_url: http://host:port/prefix), `concurrency` in
    flight. aiohttp (Ray Serve's own dependency) rather than httpx: the load generator shares the
    2 cores with the server, and httpx spends about twice the CPU per request."""
    import aiohttp

    body = json.dumps({"texts": [text]}).encode()
    headers = {"content-type": "application/json"}

    async def run() -> dict[str, float]:
        todo = iter(range(n))
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def worker() -> None:
                for _ in todo:
                    url = f"{app_url}/v1/classify"
                    async with session.post(url, data=body, headers=headers) as resp:
                        await resp.read()
                        resp.raise_for_status()

            t0 = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return {"req_per_s": n / (time.perf_counter() - t0)}

    return lambda: asyncio.run(run())


# name: (serve.colocate, max_batch_size, model preset)
APPS = {
    "b": (False, 16, "tiny"),
    "u": (False, 1, "tiny"),
    "cb": (True, 16, "tiny"),
    "cu": (True, 1, "tiny"),
    "cbs": (True, 16, "small"),
    "cus": (True, 1, "small"),
}
INGRESS_APPS = ("b", "u", "cb", "cu")  # the direct and HAProxy phases
LONG = TEXT * 4  # ~120 characters: 128 tokens after truncation
PORT = 8765


def batches_run(wait_s: float = 12.0) -> Counter:
    """Batches each bench app's model has run so far (Serve's `serve_batches_processed`).

    A counter is exact where Ray's histogram export (`serve_actual_batch_size`) is not: its sum
    is built from bucket midpoints.
    """
    time.sleep(wait_s)  # the node exports metrics every few seconds
    counts: Counter = Counter()
    for text in node_metrics():
        for line in text.splitlines():
            if line.startswith("ray_serve_batches_processed"):
                series, value = line.rsplit(" ", 1)
                app = re.search(r'application="bench_([^"]*)"', series)
                if app:
                    counts[app.group(1)] += float(value)
    return counts


def app_config(name: str) -> dict[str, Any]:
    colocate, size, _ = APPS[name]
    return {
        "port": PORT,
        "num_cpus": 0.25,  # 6 apps on 2 CPUs
        "max_ongoing_requests": 32,
        "app_name": f"bench_{name}",
        "route_prefix": f"/{name}",
        "colocate": colocate,
        "batch": {"max_batch_size": size, "batch_wait_timeout_s": 0.005},
    }


def deploy_apps(names: tuple[str, ...], dirs: dict[str, Path]) -> None:
    from raylm.serve.launch import deploy

    for name in names:
        deploy({"clf": str(dirs[APPS[name][2]])}, app_config(name))


def batching(name: str, pairs: dict[str, tuple[str, str]], text: str, n: int, notes: dict):
    """Throughput, max_batch_size 16 vs 1 interleaved; pairs: label -> (unbatched, batched) URL.

    A URL is the app's base (`http://host:port/prefix`); the mean realised batch size of each
    app comes from Serve's own metric.
    """
    before, cases = batches_run(), []
    for label, (unbatched, batched) in pairs.items():
        cases.append(Case(f"{label}: unbatched (1)", throughput_case(unbatched, n, text=text)))
        cases.append(Case(f"{label}: batched (16)", throughput_case(batched, n, text=text)))
    repeats, warmup = notes.pop("repeats"), 1
    table = compare(cases, repeats=repeats, warmup=warmup, lower_is_better=False)
    meds = [r["median"] for r in table["rows"]]
    for i, label in enumerate(pairs):
        notes[f"batched / unbatched ({label})"] = round(meds[2 * i + 1] / meds[2 * i], 3)
    after, rounds = batches_run(), warmup + repeats
    notes["mean realised batch size (requests / batches)"] = {
        app: round(n * rounds / (after[app] - before[app]), 2)
        for app in (url.rsplit("/", 1)[1] for pair in pairs.values() for url in pair)
        if after[app] > before[app]
    }
    notes["requests per round"], notes["concurrency"] = n, 16
    write_results(name, table, notes=notes)


def latency(name: str, url: str, model_dir: Path, apps: dict[str, str], n: int, r: int, setup: str):
    load0 = os.getloadavg()[0]  # other processes on these cores skew absolute figures
    table = compare(latency_cases(url, model_dir, n, apps), repeats=r)
    rows = {row["case"]: row["median"] for row in table["rows"]}
    notes = {
        f"serving adds, {mode} (p50, ms)": round(
            rows[f"HTTP /v1/classify ({mode})"] - rows["direct predict_texts"], 2
        )
        for mode in apps
    }
    for mode in apps:  # Server-Timing: the serving share of each request, from the server
        row = next(r for r in table["rows"] if r["case"] == f"HTTP /v1/classify ({mode})")
        if "model_ms" in row:
            notes[f"serving's share per Server-Timing, {mode} (p50 - model, ms)"] = round(
                row["median"] - row["model_ms"], 2
            )
    notes["requests per round"], notes["setup"] = n, setup
    notes["load average before/after"] = f"{load0:.1f} / {os.getloadavg()[0]:.1f}"
    write_results(name, table, notes=notes)


def proxy_phase(dirs: dict[str, Path], n_lat: int, n_tput: int, repeats: int) -> None:
    """Through Ray Serve's HTTP proxy: separate model deployments vs models in the ingress."""
    deploy_apps(tuple(APPS), dirs)
    url = f"http://127.0.0.1:{PORT}"
    setup = "tiny BERT (2x128), 1 text/request, sequential, loopback, 2 CPUs, via the proxy"
    apps = {"separate": "b", "colocated": "cb"}
    latency("serve_latency", url, dirs["tiny"], apps, n_lat, repeats, setup)
    pairs = {
        m: (f"{url}/u", f"{url}/b") if m == "separate" else (f"{url}/cu", f"{url}/cb") for m in apps
    }
    setup = "1 replica per app (0.25 CPU), 1 text/request: tiny BERT 2x128, a 30-character text"
    batching("serve_batching", pairs, TEXT, n_tput, {"repeats": repeats, "setup": setup})
    setup = "colocated, 1 replica (0.25 CPU), 1 text/request: small BERT 4x256, 120 characters"
    pairs = {"colocated, small": (f"{url}/cus", f"{url}/cbs")}
    batching("serve_batching_small", pairs, LONG, n_tput, {"repeats": repeats, "setup": setup})


def ingress_phase(layout: str, dirs: dict[str, Path], n_lat: int, n_tput: int, repeats: int):
    """Under `serve.ingress: direct` or `haproxy` (this process's Ray was started with its
    switches): latency and batching of the separate and the colocated apps."""
    from raylm.serve.launch import direct_ingress_urls
    from raylm.serve.schemas import load_serve_config

    deploy_apps(INGRESS_APPS, dirs)
    if layout == "direct":  # the client calls each app's ingress replica on its own port
        urls = {a: direct_ingress_urls(load_serve_config(app_config(a)))[0] for a in INGRESS_APPS}
    else:  # HAProxy answers on the serve port and balances over the replicas' own ports
        urls = {a: f"http://127.0.0.1:{PORT}/{a}" for a in INGRESS_APPS}
    label = f"{layout} ingress"
    setup = f"tiny BERT (2x128), {label} (no Ray proxy), sequential, 2 CPUs"
    apps = {f"separate, {label}": "b", f"colocated, {label}": "cb"}
    # latency_cases calls `/<app>/...` on one connection: every app must share host and port
    bases = {urls[a].rsplit("/", 1)[0] for a in apps.values()}
    if len(bases) > 1:  # direct ingress: each app on its own port, so one table per app
        for mode, app in apps.items():
            base = urls[app].rsplit("/", 1)[0]
            name = f"serve_{layout}_ingress" + ("" if app == "cb" else "_separate")
            latency(name, base, dirs["tiny"], {mode: app}, n_lat, repeats, setup)
    else:
        latency(f"serve_{layout}_ingress", bases.pop(), dirs["tiny"], apps, n_lat, repeats, setup)
    notes: dict[str, Any] = {"repeats": repeats}
    notes["setup"] = f"tiny BERT, 1 replica per app (0.25 CPU), {label}, a 30-character text"
    if layout == "haproxy":
        notes["HAProxy listens on"] = haproxy_listeners()
    pairs = {
        f"separate, {label}": (urls["u"], urls["b"]),
        f"colocated, {label}": (urls["cu"], urls["cb"]),
    }
    batching(f"serve_{layout}_batching", pairs, TEXT, n_tput, notes)


def haproxy_listeners() -> list[str]:
    """The addresses the HAProxy processes listen on (what `serve.host` does not confine)."""
    import psutil

    pids = {p.pid for p in psutil.process_iter(["name"]) if p.info["name"] == "haproxy"}
    return sorted(
        {
            f"{c.laddr.ip}:{c.laddr.port}"
            for c in psutil.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.pid in pids
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests (smoke run)")
    parser.add_argument("--phase", choices=["proxy", "direct", "haproxy"], default="proxy")
    parser.add_argument("--layouts", default="direct,haproxy", help="child phases after proxy")
    args = parser.parse_args()
    sizes = (40, 480, 3) if args.quick else (200, 1600, 5)

    import ray
    import torch
    from ray import serve

    torch.set_num_threads(1)  # as in a replica given one CPU: compare like with like
    ray.init(num_cpus=2, log_to_driver=False)
    with tempfile.TemporaryDirectory() as tmp:
        dirs = {p: make_classifier(Path(tmp) / p, preset=p) for p in ("tiny", "small")}
        try:
            if args.phase == "proxy":
                proxy_phase(dirs, *sizes)
            else:
                ingress_phase(args.phase, dirs, *sizes)
        finally:
            serve.shutdown()
            ray.shutdown()
    if args.phase == "proxy":
        from raylm.serve.launch import INGRESS_ENV

        # Ray reads the switches when Serve's processes start: a fresh Ray in its own process.
        for layout in filter(None, args.layouts.split(",")):
            env = {**os.environ, **INGRESS_ENV[layout]}
            argv = [sys.executable, "-m", "benchmarks.serve_latency", "--phase", layout]
            subprocess.run(argv + (["--quick"] if args.quick else []), env=env, check=True)


if __name__ == "__main__":
    main()
