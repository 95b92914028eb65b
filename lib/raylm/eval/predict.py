"""Batch inference with an exported model over a Ray Dataset (the platform's own evaluation).

preds = predict_classification(ds, "outputs/sentiment_zh/model")  # adds pred, prob columns
"""

from __future__ import annotations

from typing import Any

import numpy as np


def one_actor() -> Any:
    """Ray Data's compute strategy of one actor (map_batches' `concurrency=1`, deprecated)."""
    from ray.data import ActorPoolStrategy

    return ActorPoolStrategy(size=1)


class ClassifierPredictor:
    """Loaded once per Ray Data actor; scores batches of raw texts."""

    def __init__(self, model_dir: str, max_length: int):
        from transformers import AutoTokenizer

        from raylm.models.export import load_model

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = load_model(model_dir, "AutoModelForSequenceClassification").eval()
        self.max_length = max_length

    def predict_texts(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Return (predicted class ids, class probabilities) for raw texts. Thread-safe: grad mode
        is per thread, so inference mode is entered here, not in __init__."""
        import torch

        enc = self.tokenizer(
            texts, truncation=True, max_length=self.max_length, padding=True, return_tensors="pt"
        )
        enc.pop("token_type_ids", None)
        with torch.inference_mode():
            probs = self.model(**enc).logits.float().softmax(-1).numpy()
        return probs.argmax(-1), probs

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        preds, probs = self.predict_texts([str(t) for t in batch["text"]])
        return {**batch, "pred": preds.astype(np.int64), "prob": probs.max(-1)}


def predict_classification(ds: Any, model_dir: str, max_length: int = 128, batch_size: int = 128):
    """Lazily add `pred` and `prob` columns to a Dataset with a `text` column."""
    return ds.map_batches(
        ClassifierPredictor,
        fn_constructor_kwargs={"model_dir": str(model_dir), "max_length": max_length},
        batch_size=batch_size,
        batch_format="numpy",
        compute=one_actor(),  # the model is loaded once and reused for every batch
    )


class LMScorer:
    """Sums next-token NLL and scored positions per batch of encoded blocks (for perplexity)."""

    def __init__(self, model_dir: str):
        from raylm.models.export import load_model

        self.model = load_model(model_dir, "AutoModelForCausalLM").eval()
        self.pad_id = self.model.config.pad_token_id or 0

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import torch

        from raylm.data.collate import collate_lm

        inputs = collate_lm(batch, self.pad_id)
        with torch.inference_mode():
            loss = self.model(**inputs).loss
        scored = int((inputs["labels"][:, 1:] != -100).sum())
        return {"nll": np.array([float(loss) * scored]), "tokens": np.array([scored])}


def perplexity_of(ds: Any, model_dir: str, batch_size: int = 16) -> dict[str, float]:
    """Token-weighted loss and perplexity of an exported causal LM over encoded blocks."""
    from raylm.eval.metrics import perplexity

    sums = ds.map_batches(
        LMScorer,
        fn_constructor_kwargs={"model_dir": str(model_dir)},
        batch_size=batch_size,
        batch_format="numpy",
        compute=one_actor(),
    ).to_pandas()
    nll, tokens = float(sums["nll"].sum()), float(sums["tokens"].sum())
    return {"loss": nll / max(tokens, 1), "perplexity": perplexity(nll, tokens), "tokens": tokens}


class MaskedLMScorer:
    """Masks encoded blocks as validation does (one fixed seed) and sums the masked tokens' NLL
    and hits, overall and where the input hides the token: test perplexity and masked-token
    accuracy of an exported masked LM; with `unigram_logp`, the same sums of the unigram
    baseline (raylm.eval.mlm_baseline) on the same masks."""

    def __init__(self, model_dir: str, seed: int, mask_prob: float, unigram_logp=None):
        from transformers import AutoTokenizer

        from raylm.models.export import load_model

        self.model = load_model(model_dir, "AutoModelForMaskedLM").eval()
        tok = AutoTokenizer.from_pretrained(model_dir)
        self.pad_id, self.mask_id = tok.pad_token_id or 0, tok.mask_token_id
        self.seed, self.mask_prob = seed, mask_prob
        self.logp = None if unigram_logp is None else np.asarray(unigram_logp)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import torch

        from raylm.data.mlm import collate_mlm
        from raylm.eval.evaluators import MaskedLMEvaluator
        from raylm.eval.mlm_baseline import unigram_sums

        inputs = collate_mlm(
            batch, self.pad_id, self.mask_id, self.model.config.vocab_size, self.seed,
            self.mask_prob,
        )  # fmt: skip
        sums = MaskedLMEvaluator()  # the sums validation keeps, for this batch
        with torch.inference_mode():
            sums.update(self.model(**inputs), inputs)
        names = ("nll", "hits", "tokens", "hidden_hits", "hidden")
        out = {k: np.array([float(t)]) for k, t in zip(names, sums.tensors(), strict=True)}
        if self.logp is not None:
            base = unigram_sums(inputs["input_ids"].numpy(), inputs["labels"].numpy(), self.logp)
            out.update({f"base_{k}": np.array([v]) for k, v in base.items()})
        return out


def masked_lm_scores(
    ds: Any,
    model_dir: str,
    seed: int,
    mask_prob: float,
    batch_size: int = 16,
    unigram_logp: Any = None,
) -> dict[str, dict[str, float]]:
    """Masked-token loss, perplexity and accuracy (overall and where the input hides the token)
    of an exported masked LM over encoded blocks: {"model": ...}, and {"baseline": ...} of the
    unigram model when `unigram_logp` is given."""
    from raylm.eval.metrics import perplexity

    sums = ds.map_batches(
        MaskedLMScorer,
        fn_constructor_kwargs={
            "model_dir": str(model_dir),
            "seed": seed,
            "mask_prob": mask_prob,
            "unigram_logp": unigram_logp,
        },
        batch_size=batch_size,
        batch_format="numpy",
        compute=one_actor(),
    ).to_pandas()
    tokens, hidden = float(sums["tokens"].sum()), float(sums["hidden"].sum())

    def scores(prefix: str) -> dict[str, float]:
        nll = float(sums[f"{prefix}nll"].sum())
        return {
            "loss": nll / max(tokens, 1),
            "perplexity": perplexity(nll, tokens),
            "masked_accuracy": float(sums[f"{prefix}hits"].sum()) / max(tokens, 1),
            "hidden_accuracy": float(sums[f"{prefix}hidden_hits"].sum()) / max(hidden, 1),
            "tokens": tokens,
        }

    out = {"model": scores("")}
    if unigram_logp is not None:
        out["baseline"] = scores("base_")
    return out


def unigram_baseline(ds: Any, vocab_size: int) -> np.ndarray:
    """Log-probabilities of the unigram baseline, counted over a split's masked-LM blocks."""
    from raylm.eval.mlm_baseline import count_tokens, unigram_logprobs

    counts = ds.map_batches(count_tokens(vocab_size), batch_size=256, batch_format="numpy")
    total = np.zeros(vocab_size, dtype=np.int64)
    for batch in counts.iter_batches(batch_size=64, batch_format="numpy"):
        total += np.asarray(batch["counts"]).sum(axis=0)
    return unigram_logprobs(total)


class QAPredictor:
    """Builds prompts with the model's stored template and generates answers (greedy), free and
    constrained to the prompt's context window (raylm.constrain), in columns `free` and
    `constrained`."""

    def __init__(self, model_dir: str, max_length: int, max_new_tokens: int):
        from transformers import AutoTokenizer

        from raylm.models.export import load_model, read_model_meta

        self.tok = AutoTokenizer.from_pretrained(model_dir)
        self.model = load_model(model_dir, "AutoModelForCausalLM").eval()
        self.template = read_model_meta(model_dir).get("prompt_template")
        self.max_length, self.max_new_tokens = max_length, max_new_tokens

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        from raylm.constrain import ContextConstraint
        from raylm.data.qa import DEFAULT_TEMPLATE, prompt_batch
        from raylm.generate import generate

        template = self.template or DEFAULT_TEMPLATE
        batch = prompt_batch(batch, self.tok, self.max_length, self.max_new_tokens, template)
        ok = [i for i, r in enumerate(batch["reject_reason"]) if not r]
        out = {"free": [""] * len(batch["prompt"]), "constrained": [""] * len(batch["prompt"])}
        if ok:
            prompts = [batch["prompt"][i] for i in ok]
            rules = [ContextConstraint.of(self.tok, batch["context_window"][i]) for i in ok]
            for mode, constraints in (("free", None), ("constrained", rules)):
                results = generate(
                    self.model, self.tok, prompts, self.max_new_tokens, constraints=constraints
                )
                for i, res in zip(ok, results, strict=True):
                    out[mode][i] = res.text.strip()
        return {
            "id": batch["id"],
            **out,
            "context_window": batch["context_window"],
            "answers": batch["answers"],
            "reject_reason": batch["reject_reason"],
        }


def answer_questions(ds: Any, model_dir: str, max_length: int, max_new_tokens: int):
    """Lazily add generated answers to a Dataset of SQuAD rows."""
    return ds.map_batches(
        QAPredictor,
        fn_constructor_kwargs={
            "model_dir": str(model_dir),
            "max_length": max_length,
            "max_new_tokens": max_new_tokens,
        },
        batch_size=16,
        batch_format="numpy",
        compute=one_actor(),
    )
