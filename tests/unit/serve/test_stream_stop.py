"""Streaming with stop strings: text that may start a stop string is held back until the next
piece shows it does not, and nothing after a stop string is ever sent."""

from __future__ import annotations

import pytest

from raylm.serve.models import StopHoldBack


def _stream(pieces, stops):
    scan, sent = StopHoldBack(tuple(stops)), []
    for piece in pieces:
        if ready := scan.feed(piece):
            sent.append(ready)
        if scan.hit:
            break
    return sent, scan


def test_a_stop_string_split_over_pieces_is_never_sent():
    sent, scan = _stream(["Hello W", "orld", "EN", "D and more"], ["END"])
    assert "".join(sent) == "Hello World" and scan.hit
    assert all("E" not in s for s in sent)  # the E of END was held back, then dropped


def test_held_text_is_released_when_it_turns_out_not_to_be_a_stop():
    sent, scan = _stream(["ab", "E", "x", "yz"], ["END"])
    assert not scan.hit
    assert "".join(sent) + scan.pending == "abExyz"
    assert len(scan.pending) == len("END") - 1  # what the stream flushes at the end


@pytest.mark.parametrize(
    "pieces, stops, expected",
    [
        (["a", "b", "c"], [], "abc"),  # no stops: nothing held
        (["stop"], ["stop"], ""),  # the stop string is the first piece
        (["x\n\n", "y"], ["\n\n", "zzzz"], "x"),  # the earliest stop cuts
    ],
)
def test_cut_points(pieces, stops, expected):
    sent, scan = _stream(pieces, stops)
    text = "".join(sent) + ("" if scan.hit else scan.pending)
    assert text == expected
    assert scan.sent == "".join(sent)
