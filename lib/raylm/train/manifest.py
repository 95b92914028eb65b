"""Checkpoint manifests: a checkpoint counts only when every rank's files are there, whole.

    write_manifest(ckpt_dir, rank, world)   # each rank, after its shards (atomic, written last)
    check = check_checkpoint(ckpt_dir)      # complete / incomplete / corrupt, naming the file

Each rank lists the files it wrote into the checkpoint (its DeepSpeed shards; rank 0 also the
`hf/` model and `state.json`) with sizes and SHA-256 in `manifest.rank<r>.json`. A checkpoint is
complete when the manifests of ranks 0..world-1 are all present and every listed file matches.
Resuming reads only complete checkpoints, so a truncated, deleted or swapped shard (DeepSpeed
unpickles its shards) is refused. With `RAYLM_CHECKPOINT_KEY` set, manifests also carry an
HMAC of their content under that key, so a manifest rewritten along with a shard is refused too.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KEY_ENV = "RAYLM_CHECKPOINT_KEY"
PREFIX = "manifest.rank"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _signature(body: dict[str, Any], key: str) -> str:
    text = json.dumps(body, sort_keys=True).encode("utf-8")
    return hmac.new(key.encode("utf-8"), text, hashlib.sha256).hexdigest()


def write_manifest(ckpt_dir: str | Path, rank: int, world: int) -> Path:
    """List every file under `ckpt_dir` (this rank's part of the checkpoint) in its manifest."""
    root = Path(ckpt_dir)
    files = {
        str(p.relative_to(root)): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith(PREFIX)
    }
    body: dict[str, Any] = {"rank": rank, "world_size": world, "files": files}
    if key := os.environ.get(KEY_ENV):
        body["hmac"] = _signature(body, key)
    out = root / f"{PREFIX}{rank}.json"
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(body, indent=1), encoding="utf-8")
    tmp.rename(out)  # the manifest appears whole, after everything it lists
    return out


@dataclass(frozen=True)
class CheckpointCheck:
    state: str  # "complete", "incomplete" (something missing) or "corrupt" (something differs)
    detail: str = ""  # what is wrong, naming the file
    world: int = 0  # the ranks that saved it (complete checkpoints)

    @property
    def ok(self) -> bool:
        return self.state == "complete"


def _check_one(root: Path, manifest: Path, key: str | None) -> CheckpointCheck | None:
    body = json.loads(manifest.read_text(encoding="utf-8"))
    if key is not None:
        signed = body.pop("hmac", None)
        if signed is None or not hmac.compare_digest(signed, _signature(body, key)):
            return CheckpointCheck("corrupt", f"{manifest.name}: HMAC does not match")
    for name, want in body["files"].items():
        path = root / name
        if not path.is_file():
            return CheckpointCheck("incomplete", f"{name} is missing")
        size = path.stat().st_size
        if size != want["bytes"]:
            return CheckpointCheck(
                "corrupt", f"{name} is {size} bytes, the manifest says {want['bytes']}"
            )
        if _sha256(path) != want["sha256"]:
            return CheckpointCheck("corrupt", f"{name} does not match its SHA-256 in the manifest")
    return None


def check_checkpoint(ckpt_dir: str | Path) -> CheckpointCheck:
    """Whether the checkpoint folder holds every rank's files as its manifests list them."""
    root = Path(ckpt_dir)
    first = root / f"{PREFIX}0.json"
    if not first.is_file():
        return CheckpointCheck("incomplete", f"{first.name} is missing")
    try:
        world = int(json.loads(first.read_text(encoding="utf-8"))["world_size"])
        key = os.environ.get(KEY_ENV)
        for rank in range(world):
            manifest = root / f"{PREFIX}{rank}.json"
            if not manifest.is_file():
                return CheckpointCheck("incomplete", f"{manifest.name} is missing")
            if bad := _check_one(root, manifest, key):
                return bad
    except (ValueError, KeyError, TypeError) as err:  # a manifest that is not one
        return CheckpointCheck("corrupt", f"unreadable manifest: {err}")
    return CheckpointCheck("complete", world=world)
