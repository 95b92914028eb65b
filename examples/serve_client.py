"""Call a running `raylm serve` app: every endpoint the served models support.

    raylm serve outputs/serve_demo --config examples/serve.yaml      # in another shell
    python examples/serve_client.py [--url http://127.0.0.1:8000]

Sends `Authorization: Bearer $RAYLM_SERVE_TOKEN` when that variable is set. Generation goes
through the official `openai` client (pip install openai), as any OpenAI-compatible tool would.
"""

from __future__ import annotations

import argparse
import os

import httpx


def classify(client: httpx.Client, model: str) -> None:
    texts = ["这本书写得真好，推荐！", "质量太差，非常失望。"]
    resp = client.post("/v1/classify", json={"model": model, "texts": texts})
    resp.raise_for_status()
    for text, result in zip(texts, resp.json()["results"], strict=True):
        print(f"  {text} -> {result['label']} ({result['score']:.3f})")


def generate(url: str, token: str | None, client: httpx.Client, model: str) -> None:
    from openai import OpenAI

    oai = OpenAI(base_url=f"{url}/v1", api_key=token or "unused")
    done = oai.completions.create(model=model, prompt="今天天气", max_tokens=16, temperature=0)
    print(f"  completion: {done.choices[0].text!r} ({done.usage.total_tokens} tokens)")
    print("  streamed:   ", end="")
    for chunk in oai.completions.create(model=model, prompt="今天天气", max_tokens=16, stream=True):
        print(chunk.choices[0].text if chunk.choices else "", end="", flush=True)
    chat = oai.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "你好"}], max_tokens=16
    )
    print(f"\n  chat:       {chat.choices[0].message.content!r}")
    qa = {"model": model, "context": "北京是中国的首都。", "question": "中国的首都是哪里？"}
    resp = client.post("/v1/qa", json=qa)
    print(f"  qa:         {resp.json().get('answer', resp.text)!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    url = parser.parse_args().url.rstrip("/")
    token = os.environ.get("RAYLM_SERVE_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        print("ready:", client.get("/readyz").json())
        models = client.get("/v1/models")
        models.raise_for_status()
        for card in models.json()["data"]:
            print(f"{card['id']} ({card['task']})")
            if card["task"] == "classification":
                classify(client, card["id"])
            else:
                generate(url, token, client, card["id"])


if __name__ == "__main__":
    main()
