"""Replacing a folder so that a reader never sees half of it, and a failure never loses the old.

replace_folder(new_dir, target_dir)   # new_dir is complete; target_dir may exist
"""

from __future__ import annotations

import shutil
from pathlib import Path


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
