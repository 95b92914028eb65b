"""Replacing a file or a folder so that a reader never sees half of it, and a failure never
loses the old.

replace_folder(new_dir, target_dir)   # new_dir is complete; target_dir may exist
write_atomic(path, text)              # written beside, then renamed over path
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def write_atomic(path: str | os.PathLike, text: str) -> None:
    tmp = f"{os.fspath(path)}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def replace_folder(new: Path, target: Path) -> Path:
    """Put the complete folder `new` at `target` with two renames; the previous `target` is
    moved aside first and removed only once the new one is in place."""
    old = target.with_name(target.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    new.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    return target
