"""Checkpoint manifests: complete only when every rank's files are there, whole and unchanged."""

from __future__ import annotations

import json

import pytest

from raylm.train.manifest import KEY_ENV, check_checkpoint, write_manifest


@pytest.fixture
def ckpt(tmp_path, monkeypatch):
    """A 2-rank checkpoint as the ranks' uploads merge it: rank 0 wrote the model, the state
    and its optimizer shard, rank 1 its own shard; each wrote its manifest last."""
    monkeypatch.delenv(KEY_ENV, raising=False)
    ranks = {}
    for rank, files in {0: ["ds/model_states.pt", "ds/optim_0.pt", "state.json"],
                        1: ["ds/optim_1.pt"]}.items():  # fmt: skip
        part = tmp_path / f"rank{rank}"
        for name in files:
            (part / name).parent.mkdir(parents=True, exist_ok=True)
            (part / name).write_bytes(bytes(range(200)) * (rank + 2))
        write_manifest(part, rank, world=2)
        ranks[rank] = part
    merged = tmp_path / "checkpoint_step0000010"
    for part in ranks.values():
        for f in part.rglob("*"):
            if f.is_file():
                (merged / f.relative_to(part)).parent.mkdir(parents=True, exist_ok=True)
                (merged / f.relative_to(part)).write_bytes(f.read_bytes())
    return merged


def test_a_whole_checkpoint_is_complete(ckpt):
    assert check_checkpoint(ckpt).ok
    body = json.loads((ckpt / "manifest.rank1.json").read_text())
    assert body["world_size"] == 2 and list(body["files"]) == ["ds/optim_1.pt"]


def test_truncated_shard_is_corrupt_and_named(ckpt):
    shard = ckpt / "ds" / "optim_1.pt"
    shard.write_bytes(shard.read_bytes()[:100])
    check = check_checkpoint(ckpt)
    assert check.state == "corrupt" and check.detail == (
        "ds/optim_1.pt is 100 bytes, the manifest says 600"
    )


def test_swapped_shard_of_the_same_size_is_corrupt(ckpt):
    shard = ckpt / "ds" / "optim_0.pt"
    shard.write_bytes(b"\x80" + shard.read_bytes()[1:])  # e.g. a pickle put in its place
    check = check_checkpoint(ckpt)
    assert check.state == "corrupt" and "ds/optim_0.pt does not match its SHA-256" in check.detail


@pytest.mark.parametrize(
    "remove, detail",
    [
        ("ds/optim_1.pt", "ds/optim_1.pt is missing"),
        ("manifest.rank1.json", "manifest.rank1.json is missing"),
        ("manifest.rank0.json", "manifest.rank0.json is missing"),
    ],
)
def test_missing_rank_file_or_manifest_is_incomplete(ckpt, remove, detail):
    (ckpt / remove).unlink()
    assert check_checkpoint(ckpt) == type(check_checkpoint(ckpt))("incomplete", detail)


def test_hmac_refuses_a_manifest_rewritten_with_its_shard(ckpt, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "k3y")
    assert check_checkpoint(ckpt).state == "corrupt"  # written without the key: not trusted
    for rank in (0, 1):  # as the run would have written them, key set
        body = json.loads((ckpt / f"manifest.rank{rank}.json").read_text())
        body.pop("hmac", None)
        part = ckpt.parent / f"rank{rank}"
        write_manifest(part, rank, 2)
        (ckpt / f"manifest.rank{rank}.json").write_text(
            (part / f"manifest.rank{rank}.json").read_text()
        )
    assert check_checkpoint(ckpt).ok
    # An attacker swaps a shard and rewrites the manifest's checksum without the key.
    shard = ckpt / "ds" / "optim_1.pt"
    shard.write_bytes(b"evil" * 150)
    body = json.loads((ckpt / "manifest.rank1.json").read_text())
    import hashlib

    body["files"]["ds/optim_1.pt"]["sha256"] = hashlib.sha256(shard.read_bytes()).hexdigest()
    (ckpt / "manifest.rank1.json").write_text(json.dumps(body))
    assert check_checkpoint(ckpt) == type(check_checkpoint(ckpt))(
        "corrupt", "manifest.rank1.json: HMAC does not match"
    )
