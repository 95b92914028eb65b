"""Streamed generation: time to first token and time per later token, over HTTP through Ray
Serve (`stream: true` completions, server-sent events) against the same generation in process.

    python -m benchmarks.serve_stream --quick      # about 2 minutes on 2 cores
    python -m benchmarks.serve_stream

The model: a GPT-2 (4 x 32, byte-level BPE) trained for a few seconds to recite a few lines
in a cycle, in the exported layout; greedy, `max_tokens` 32, one request at a time over a
keep-alive connection.
In process: `raylm.generate.stream_generate`, the function the Serve replica streams from,
one thread (as a replica given one CPU). Over HTTP: raylm's Serve app in a Ray started as
`raylm serve` starts it (the default `serve.ingress: direct`, loopback), called at the ingress
replica's own port (the default: proxy-free) and through Ray's proxy, each with the model in
the ingress replica (the default `serve.colocate`) and in a deployment of its own (one hop
more). Rounds interleave; first-token overhead = HTTP's median time to the first text chunk
minus in-process's, and likewise per later token.
Writes benchmarks/results/serve_stream.{json,md}.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.harness import Case, compare, write_results

TEXTS = [
    "这本书很好看我很喜欢", "质量太差了非常失望", "还行吧一般般", "推荐大家购买",
    "垃圾产品后悔", "good book, nice story", "bad, terrible", "物流很快包装完好",
]  # fmt: skip
PROMPT = "这本书很好"
MAX_TOKENS = 32
PORT = 8123
LABELS = (  # (app, case label): the default layout first
    ("default", "default: direct ingress, model in the ingress"),
    ("separate", "direct ingress, a model deployment"),
    ("default via proxy", "Ray's proxy, model in the ingress"),
    ("separate via proxy", "Ray's proxy, a model deployment"),
)


def _memorise(model, tok, steps: int = 600) -> None:
    """A few seconds of training on the texts joined in a cycle (no end of text): greedy
    decoding then continues the cycle in whole characters, with logits decisive enough that
    the replica and this process (other thread counts, other float rounding) agree. A model
    of random weights streamed mostly partial UTF-8 bytes, and the two sides' tokens parted."""
    import torch

    ids = tok("".join(TEXTS) * 8, return_tensors="pt")["input_ids"][0]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        starts = torch.randint(0, len(ids) - 65, (8,), generator=gen)
        batch = torch.stack([ids[i : i + 64] for i in starts])
        model(input_ids=batch, labels=batch).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()


def make_generator(out: Path) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from raylm.config import TokenizerConfig
    from raylm.data.tokenizer import train_tokenizer

    tok = train_tokenizer(
        TEXTS * 4, TokenizerConfig(vocab_size=300, min_frequency=1), out, kind="bytelevel_bpe"
    )
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tok), n_embd=32, n_layer=4, n_head=2, n_positions=4096,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
    )  # fmt: skip
    model = GPT2LMHeadModel(config)
    _memorise(model, tok)
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    (out / "raylm.json").write_text(json.dumps({"task": "causal_lm", "max_length": 256}))
    return out


def stream_text_http(app_url: str) -> str:
    """The whole text of one streamed completion over HTTP (to check both sides agree)."""
    body = {"model": "gen", "prompt": PROMPT, "max_tokens": MAX_TOKENS, "stream": True}
    port, prefix = _split(app_url)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Content-Type": "application/json"}
    conn.request("POST", f"{prefix}/v1/completions", json.dumps(body), headers)
    text = ""
    for line in conn.getresponse():
        if line.startswith(b"data: {"):
            choices = json.loads(line[6:]).get("choices") or [{}]
            text += choices[0].get("text") or ""
    conn.close()
    return text


def _timings(stamps: list[float], began: float) -> dict[str, float]:
    """First-token ms and mean ms per later chunk, from the arrival times of text chunks."""
    first = 1000 * (stamps[0] - began)
    later = 1000 * (stamps[-1] - stamps[0]) / max(1, len(stamps) - 1)
    return {"first_token_ms": first, "per_token_ms": later, "chunks": float(len(stamps))}


def in_process_case(path: Path, n: int):
    from transformers import AutoTokenizer

    from raylm.generate import stream_generate
    from raylm.models.export import load_model

    tok = AutoTokenizer.from_pretrained(str(path))
    model = load_model(str(path), "AutoModelForCausalLM").eval()

    def run() -> dict[str, float]:
        rows = []
        for _ in range(n):
            began, stamps = time.perf_counter(), []
            for _piece in stream_generate(model, tok, PROMPT, MAX_TOKENS):
                stamps.append(time.perf_counter())
            rows.append(_timings(stamps, began))
        return _medians(rows)

    return run


def _split(app_url: str) -> tuple[int, str]:
    """(port, route prefix) of `http://127.0.0.1:<port><prefix>`."""
    from urllib.parse import urlsplit

    u = urlsplit(app_url)
    return u.port or 80, u.path.rstrip("/")


def http_case(n: int, app_url: str):
    port, prefix = _split(app_url)
    body = json.dumps({"model": "gen", "prompt": PROMPT, "max_tokens": MAX_TOKENS, "stream": True})

    def one(conn: http.client.HTTPConnection) -> dict[str, float]:
        began, stamps = time.perf_counter(), []
        conn.request("POST", f"{prefix}/v1/completions", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {resp.read()[:200]!r}")
        for line in resp:  # chunked transfer: each SSE event as it arrives
            if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                continue
            event = json.loads(line[6:])
            if event.get("choices") and event["choices"][0].get("text"):
                stamps.append(time.perf_counter())
        return _timings(stamps, began)

    def run() -> dict[str, float]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            return _medians([one(conn) for _ in range(n)])
        finally:
            conn.close()

    return run


def _local_text(path: Path) -> str:
    from transformers import AutoTokenizer

    from raylm.generate import stream_generate
    from raylm.models.export import load_model

    tok = AutoTokenizer.from_pretrained(str(path))
    model = load_model(str(path), "AutoModelForCausalLM").eval()
    return "".join(stream_generate(model, tok, PROMPT, MAX_TOKENS))


def _medians(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests (smoke run)")
    args = parser.parse_args()
    n, repeats = (10, 3) if args.quick else (30, 5)

    import ray
    import torch
    from ray import serve

    from raylm.serve.launch import deploy, direct_ingress_urls, start_ray
    from raylm.serve.schemas import load_serve_config

    torch.set_num_threads(1)
    apps = {  # case -> serve config; the first is what `raylm serve` starts by default
        "default": {"port": PORT, "app_name": "bench_stream", "route_prefix": "/s"},
        "separate": {"port": PORT, "app_name": "bench_stream_m", "route_prefix": "/m"},
    }
    apps["separate"]["colocate"] = False
    # As `raylm serve` starts its Ray: serve.ingress's switches in the new Ray's environment
    if not start_ray(load_serve_config(apps["default"]), num_cpus=2, log_to_driver=False):
        raise SystemExit("serve_stream needs a Ray of its own (unset RAY_ADDRESS)")
    with tempfile.TemporaryDirectory() as tmp:
        path = make_generator(Path(tmp) / "gen")
        try:
            urls = {}
            for name, cfg in apps.items():
                proxy_url = deploy({"gen": str(path)}, cfg)
                direct = direct_ingress_urls(load_serve_config(cfg))
                if not direct:
                    raise SystemExit("direct ingress is off in this Ray: see INGRESS_ENV")
                urls[name], urls[f"{name} via proxy"] = direct[0], proxy_url
            texts = {"HTTP": stream_text_http(urls["default"]), "in process": _local_text(path)}
            cases = [Case("in process (stream_generate)", in_process_case(path, n))]
            for key, label in LABELS:
                cases.append(Case(f"HTTP stream ({label})", http_case(n, urls[key])))
            table = compare(cases, repeats=repeats)
        finally:
            serve.shutdown()
            ray.shutdown()
    rows = {r["case"]: r for r in table["rows"]}
    local = rows["in process (stream_generate)"]
    notes = {
        f"first-token overhead, {label} (ms, median)": round(
            rows[f"HTTP stream ({label})"]["median"] - local["median"], 2
        )
        for _, label in LABELS
    }
    default = rows[f"HTTP stream ({LABELS[0][1]})"]
    notes["per later token overhead, default layout (ms, median)"] = round(
        default["per_token_ms"] - local["per_token_ms"], 3
    )
    notes |= {
        "setup": f"GPT-2 4x32 reciting a cycle of lines, greedy, max_tokens {MAX_TOKENS}, "
        f"{n} requests a round, sequential, loopback, 2 CPUs",
        "streamed text": texts["HTTP"]
        if texts["HTTP"] == texts["in process"]
        else f"differs: {texts}",
        "command": "python -m benchmarks.serve_stream" + (" --quick" if args.quick else ""),
    }
    write_results("serve_stream", table, notes=notes)


if __name__ == "__main__":
    main()
