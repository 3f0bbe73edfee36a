"""Crash-safe checkpoint pair: `NAME.safetensors` (weights) + `NAME_stats.npz` (reward statistics).

Commit protocol: both files are written to temp files in the target folder and fsynced; the weights
file is renamed first and is the commit point, because it also embeds the statistics and a sha256 of
the weights in its metadata. The stats file carries the same sha256; a load that finds it missing,
unreadable or from another save (SIGKILL between the two renames) uses the embedded copy instead, so a
load never combines the weights of one save with the statistics of another.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from persistence.errors import CheckpointError
from persistence.safetensors_file import encode_safetensors, read_safetensors

FORMAT_VERSION = 1
_META_FORMAT = "updown_format"
_META_SHA = "weights_sha256"
_META_STATS = "stats"


@dataclass(frozen=True, slots=True)
class CheckpointStats:
    """What the stats file records; architecture fields are None when an older file lacks them."""

    reward_mean: float
    reward_std: float
    reward_count: int
    input_dim: int | None = None
    hidden_size: int | None = None
    critic_hidden_size: int | None = None
    history_len: int | None = None
    temporal_dim: int | None = None
    temporal_hidden: int | None = None
    gamma: float | None = None
    buffer_size: int | None = None
    updates: int = 0  # PPO updates done by the model over its whole life
    feature_set: int | None = None  # id of the feature definition the weights were trained on

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain 0-d numeric arrays (float64 / int64), loadable with allow_pickle=False."""
        out: dict[str, np.ndarray] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = np.asarray(value, dtype=np.float64 if isinstance(value, float) else np.int64)
        return out

    @classmethod
    def from_mapping(cls, values: Mapping[str, object], source: str) -> CheckpointStats:
        """Parse and validate (reward fields required and finite, std >= 0, count >= 0)."""
        missing = [k for k in ("reward_mean", "reward_std", "reward_count") if k not in values]
        if missing:
            raise CheckpointError(f"{source} lacks {', '.join(missing)}")
        kwargs: dict[str, object] = {}
        for f in dataclasses.fields(cls):
            if values.get(f.name) is None:
                continue
            raw = np.asarray(values[f.name])
            if raw.shape != () or raw.dtype.kind not in "iuf":
                raise CheckpointError(f"{source} field {f.name} is not a single number")
            number = float(raw)
            if not math.isfinite(number):
                raise CheckpointError(f"{source} field {f.name} is {number}")
            kwargs[f.name] = number if f.name in ("reward_mean", "reward_std", "gamma") else int(number)
        stats = cls(**kwargs)  # type: ignore[arg-type]
        if stats.reward_std < 0 or stats.reward_count < 0:
            raise CheckpointError(f"{source} has a negative reward_std or reward_count")
        return stats


@dataclass(slots=True)
class Checkpoint:
    """A validated checkpoint read from disk; `stats` is None only when fresh statistics were allowed."""

    weights: dict[str, np.ndarray]
    stats: CheckpointStats | None
    notes: list[str] = field(default_factory=list)  # what the loader had to fall back on, for the console


def checkpoint_paths(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """`NAME.safetensors` and `NAME_stats.npz` for a NAME given without extension (a .safetensors suffix is tolerated)."""
    text = os.fspath(path)
    if text.endswith(".safetensors"):
        text = text[: -len(".safetensors")]
    base = Path(text)
    return base.with_name(base.name + ".safetensors"), base.with_name(base.name + "_stats.npz")


def weights_fingerprint(weights: Mapping[str, np.ndarray]) -> bytes:
    """sha256 over names, shapes and float32 bytes in name order: identifies one save's weights."""
    digest = hashlib.sha256()
    for name in sorted(weights):
        array = np.ascontiguousarray(weights[name], dtype="<f4")
        digest.update(f"{name}:{array.shape};".encode())
        digest.update(array.tobytes())
    return digest.digest()


def fsync_directory(folder: Path) -> None:
    """Make renames inside `folder` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_temp(folder: Path, target: str, payload: bytes) -> Path:
    """Write payload to a fsynced temp file next to `target`; the caller renames it into place."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            existing = folder / target
            # mkstemp makes 0600 files; a checkpoint keeps the mode of the file it replaces, else rw-r--r--
            os.fchmod(handle.fileno(), existing.stat().st_mode & 0o777 if existing.is_file() else 0o644)
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def _remove_stale_temps(folder: Path, targets: tuple[str, ...]) -> None:
    """Temp files left by a save that was killed before its rename."""
    for target in targets:
        for stale in folder.glob(f".{target}.*.tmp"):
            stale.unlink(missing_ok=True)


def save_checkpoint(path: str | os.PathLike[str], weights: Mapping[str, np.ndarray], stats: CheckpointStats) -> None:
    """Atomically replace the checkpoint pair at `path` (no extension); CheckpointError if it cannot.

    On failure before the commit point the previous pair is untouched and no temp file is left behind.
    """
    text = os.fspath(path)
    if text.endswith(os.sep) or Path(text).is_dir():
        raise CheckpointError(f"cannot save the model to {text}: it is a directory; give a file name without extension")
    weights_path, stats_path = checkpoint_paths(text)
    for name, array in weights.items():
        if not np.all(np.isfinite(array)):
            raise CheckpointError(
                f"refusing to save the model: tensor {name} contains NaN or infinite values; "
                "the previous checkpoint is kept"
            )
    folder = weights_path.parent
    fingerprint = weights_fingerprint(weights)
    metadata = {
        _META_FORMAT: str(FORMAT_VERSION),
        _META_SHA: fingerprint.hex(),
        _META_STATS: json.dumps(dataclasses.asdict(stats)),
    }
    arrays = stats.to_arrays()
    arrays["format_version"] = np.asarray(FORMAT_VERSION, dtype=np.int64)
    arrays[_META_SHA] = np.frombuffer(fingerprint, dtype=np.uint8).copy()
    stats_buffer = io.BytesIO()
    np.savez(stats_buffer, **arrays)  # type: ignore[arg-type]

    temps: list[Path] = []
    committed = False
    try:
        if folder.is_dir():
            _remove_stale_temps(folder, (weights_path.name, stats_path.name))
        temps.append(_write_temp(folder, weights_path.name, encode_safetensors(weights, metadata)))
        temps.append(_write_temp(folder, stats_path.name, stats_buffer.getvalue()))
        os.replace(temps[0], weights_path)  # commit point: this file alone is a complete checkpoint
        committed = True
        os.replace(temps[1], stats_path)
        fsync_directory(folder)
    except OSError as exc:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
        reason = exc.strerror or str(exc)
        if committed:
            raise CheckpointError(
                f"saved the weights to {weights_path} but could not replace {stats_path} ({reason}); "
                "the weights file carries its own statistics, so the checkpoint still loads"
            ) from exc
        raise CheckpointError(
            f"could not save the model to {weights_path} ({reason}); the previous checkpoint was left as it was"
        ) from exc


def _read_stats_file(stats_path: Path) -> tuple[CheckpointStats, bytes | None]:
    try:
        with np.load(stats_path, allow_pickle=False) as npz:
            values = {key: npz[key] for key in npz.files}
    except FileNotFoundError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise CheckpointError(f"{stats_path.name} is unreadable ({exc})") from exc
    sha = values.pop(_META_SHA, None)
    values.pop("format_version", None)
    stats = CheckpointStats.from_mapping(values, stats_path.name)
    return stats, (bytes(np.asarray(sha, dtype=np.uint8)) if sha is not None else None)


def load_checkpoint(path: str | os.PathLike[str], *, allow_fresh_stats: bool = False) -> Checkpoint:
    """Read and validate the pair at `path` (no extension): readable, untruncated, checksummed, finite.

    Shapes are checked separately by `validate_weights`, against the model that will receive them.
    """
    weights_path, stats_path = checkpoint_paths(path)
    if weights_path.is_dir() or not weights_path.exists():
        raise CheckpointError(
            f"no model at {weights_path}: the file does not exist; train one first without --load "
            "(give the name without .safetensors)"
        )
    try:
        weights, metadata = read_safetensors(weights_path)
    except OSError as exc:
        raise CheckpointError(f"cannot read {weights_path} ({exc.strerror or exc})") from exc
    for name, array in weights.items():
        if not np.all(np.isfinite(array)):
            raise CheckpointError(
                f"{weights_path.name}: tensor {name} contains NaN or infinite values, so the model is unusable; "
                "restore a backup or train from scratch"
            )
    fingerprint = weights_fingerprint(weights)
    recorded = metadata.get(_META_SHA)
    if recorded is not None and recorded != fingerprint.hex():
        raise CheckpointError(
            f"{weights_path.name} is corrupt: its weights do not match the checksum written with them; restore a backup"
        )
    embedded: CheckpointStats | None = None
    if _META_STATS in metadata:
        try:
            embedded = CheckpointStats.from_mapping(json.loads(metadata[_META_STATS]), weights_path.name)
        except (ValueError, CheckpointError) as exc:
            raise CheckpointError(f"{weights_path.name} is corrupt (embedded statistics unreadable: {exc})") from exc

    problem: str
    try:
        file_stats, file_sha = _read_stats_file(stats_path)
    except FileNotFoundError:
        file_stats, problem = None, "is missing"
    except CheckpointError as exc:
        file_stats, problem = None, f"is unusable ({exc})"
    else:
        if embedded is None or file_sha == fingerprint:
            return Checkpoint(weights, file_stats)
        problem = "belongs to a different save (interrupted save?)"
    if embedded is not None:
        note = f"{stats_path.name} {problem}; using the statistics stored inside {weights_path.name} by the same save"
        return Checkpoint(weights, embedded, [note])
    if allow_fresh_stats:
        note = f"{stats_path.name} {problem}; reward normalisation starts fresh (mean 0, std 1, count 0)"
        return Checkpoint(weights, None, [note])
    raise CheckpointError(
        f"{stats_path} {problem}: without its reward statistics, reward scaling would restart from scratch and "
        f"destabilise training; restore it from a backup ({weights_path.stem}_backup_*_stats.npz) or start a new "
        "model without --load"
    )


def validate_weights(
    weights: Mapping[str, np.ndarray], expected: Mapping[str, tuple[int, ...]], source: str
) -> None:
    """CheckpointError unless `weights` has exactly the expected tensor names and shapes."""
    for name, shape in expected.items():
        if name in weights and tuple(weights[name].shape) != tuple(shape):
            raise CheckpointError(
                f"{source}: tensor {name} has shape {tuple(weights[name].shape)} in the file but the model expects "
                f"{tuple(shape)}, so the network architecture changed since it was saved; "
                "save the new architecture under a new name or start without --load"
            )
    missing = [name for name in expected if name not in weights]
    if missing:
        raise CheckpointError(
            f"{source} lacks {len(missing)} of the model's tensors (first: {missing[0]}), so it was written by a "
            "different model architecture; start without --load or use a checkpoint of this version"
        )
    unexpected = sorted(name for name in weights if name not in expected)
    if unexpected:
        raise CheckpointError(
            f"{source} has {len(unexpected)} tensors this model does not have (first: {unexpected[0]}), so it was "
            "written by a different model architecture; start without --load or use a checkpoint of this version"
        )
