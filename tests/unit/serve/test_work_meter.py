"""WorkMeter: tokens counted where the model computes them (one per row of each forward pass),
generations in progress, and a cancelled stream's generation refused at its next forward pass.

A real (tiny, untrained) GPT-2 on CPU; no Ray: outside a Ray worker there are no Ray metrics.
"""

from __future__ import annotations

import threading

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from raylm.serve.models import GenerationStopped, WorkMeter


@pytest.fixture
def model():
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=50, n_embd=16, n_layer=1, n_head=2, n_positions=32)
    return GPT2LMHeadModel(config).eval()


def test_tokens_are_counted_per_row_of_each_forward(model):
    meter = WorkMeter(model)
    with torch.inference_mode():
        model(input_ids=torch.zeros((3, 5), dtype=torch.long))
        model(input_ids=torch.zeros((1, 2), dtype=torch.long))
    assert meter.stats() == {"active_generations": 0, "tokens_computed": 4}


def test_a_set_stop_refuses_the_next_forward_only_inside_watched(model):
    meter, stop = WorkMeter(model), threading.Event()
    ids = torch.zeros((1, 3), dtype=torch.long)
    with torch.inference_mode():
        meter.watched(stop, model, ids)
        stop.set()
        with pytest.raises(GenerationStopped, match="cancelled"):
            meter.watched(stop, model, ids)
        model(ids)  # this thread's next work is not under the stop
    assert meter.tokens == 2  # the refused forward computed nothing


def test_generations_in_progress_are_counted_while_the_block_runs(model):
    meter = WorkMeter(model)
    with meter.generating(2):
        assert meter.stats()["active_generations"] == 2
        with pytest.raises(RuntimeError), meter.generating():
            assert meter.active == 3
            raise RuntimeError("a failed generation still ends")
    assert meter.active == 0
