"""Timestamped copies of a checkpoint pair next to it, keeping the newest K."""

from __future__ import annotations

import os
import re
import shutil
from datetime import datetime
from pathlib import Path

from persistence.checkpoint import checkpoint_paths, fsync_directory
from persistence.errors import CheckpointError


def backup_name(path: str | os.PathLike[str], when: datetime) -> Path:
    """`NAME_backup_YYYYmmdd_HHMMSS` (no extension) for the checkpoint at `path`."""
    weights_path, _ = checkpoint_paths(path)
    stem = weights_path.name[: -len(".safetensors")]
    return weights_path.with_name(f"{stem}_backup_{when:%Y%m%d_%H%M%S}")


def list_backups(path: str | os.PathLike[str]) -> list[Path]:
    """Backups of the checkpoint at `path`, oldest first, as names without extension."""
    weights_path, _ = checkpoint_paths(path)
    stem = weights_path.name[: -len(".safetensors")]
    pattern = re.compile(rf"{re.escape(stem)}_backup_\d{{8}}_\d{{6}}\.safetensors")
    found = sorted(p.name for p in weights_path.parent.glob(f"{stem}_backup_*.safetensors") if pattern.fullmatch(p.name))
    return [weights_path.with_name(name[: -len(".safetensors")]) for name in found]


def _copy_atomically(source: Path, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.backup.tmp")
    try:
        shutil.copyfile(source, tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_backup(path: str | os.PathLike[str], keep: int = 5, when: datetime | None = None) -> Path | None:
    """Copy the current pair to `NAME_backup_<when>.*` and delete all but the newest `keep` backups.

    `when` names the files (wall clock if None); returns the backup name, or None when there is no
    checkpoint to back up. Raises CheckpointError if the copy cannot be written.
    """
    if keep < 1:
        raise ValueError("keep must be at least 1")
    weights_path, stats_path = checkpoint_paths(path)
    if not weights_path.is_file():
        return None
    target = backup_name(path, when or datetime.now())
    target_weights, target_stats = checkpoint_paths(target)
    try:
        # weights first: they embed the statistics, so a backup cut short here still loads
        _copy_atomically(weights_path, target_weights)
        if stats_path.is_file():
            _copy_atomically(stats_path, target_stats)
        fsync_directory(weights_path.parent)
    except OSError as exc:
        raise CheckpointError(
            f"could not write the backup {target_weights} ({exc.strerror or exc}); the checkpoint itself is unchanged"
        ) from exc
    for old in list_backups(path)[:-keep]:
        for stale in checkpoint_paths(old):
            stale.unlink(missing_ok=True)
    return target
