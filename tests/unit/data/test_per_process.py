"""data.workers.per_process: one instance per process, rebuilt when a file it reads changes."""

from __future__ import annotations

import os
from pathlib import Path

from raylm.data.workers import per_process


class Counting:
    built = 0

    def __init__(self, path: str, scale: int) -> None:
        Counting.built += 1
        self.text = Path(path).read_text(encoding="utf-8")
        self.scale = scale

    def __call__(self, batch: dict) -> dict:
        return {"x": [v * self.scale for v in batch["x"]], "text": self.text}


def test_one_instance_per_arguments_and_a_fresh_one_when_its_file_changes(tmp_path):
    vocab = tmp_path / "tok"
    vocab.mkdir()
    (vocab / "vocab.txt").write_text("a", encoding="utf-8")
    args = per_process(Counting, path=str(vocab / "vocab.txt"), scale=2)
    call = args["fn"]
    assert call.__name__ == "Counting"
    before = Counting.built
    assert call({"x": [1, 2]}) == {"x": [2, 4], "text": "a"}
    assert call({"x": [3]})["x"] == [6]
    assert Counting.built == before + 1  # kept between batches

    other = per_process(Counting, path=str(vocab / "vocab.txt"), scale=3)
    assert other["fn"]({"x": [1]})["x"] == [3]
    assert Counting.built == before + 2  # other arguments, another instance

    (vocab / "vocab.txt").write_text("bb", encoding="utf-8")  # retrained in place
    st = os.stat(vocab / "vocab.txt")
    os.utime(vocab / "vocab.txt", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert call({"x": [1]})["text"] == "bb"
    assert Counting.built == before + 3


def test_a_folder_argument_is_watched_file_by_file(tmp_path):
    folder = tmp_path / "tokenizer"
    folder.mkdir()
    (folder / "vocab.txt").write_text("a", encoding="utf-8")

    class Reads:
        def __init__(self, tokenizer_dir: str) -> None:
            self.names = sorted(os.listdir(tokenizer_dir))

        def __call__(self, batch: dict) -> list:
            return self.names

    args = per_process(Reads, tokenizer_dir=str(folder))
    assert args["fn"]({}) == ["vocab.txt"]
    (folder / "merges.txt").write_text("m", encoding="utf-8")
    assert args["fn"]({}) == ["merges.txt", "vocab.txt"]
