"""Read and write the safetensors format (float32 only) with numpy, validating every byte count.

Written here rather than through `mx.save_safetensors` so that every write error (disk full, quota)
raises in Python and the file descriptor we fsync is the one we wrote; `mx.load` reads our files.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from persistence.errors import CheckpointError

_HEADER_LIMIT = 16 * 1024 * 1024  # a real header for 36 tensors is ~3 KB; anything huge is corruption


def encode_safetensors(tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> bytes:
    """The complete file as bytes: u64 header length, JSON header, then each tensor's raw data in name order."""
    header: dict[str, object] = {"__metadata__": dict(metadata)}
    chunks: list[bytes] = []
    offset = 0
    for name in sorted(tensors):
        data = np.ascontiguousarray(tensors[name], dtype="<f4").tobytes()
        header[name] = {
            "dtype": "F32",
            "shape": list(np.shape(tensors[name])),
            "data_offsets": [offset, offset + len(data)],
        }
        chunks.append(data)
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # the format pads the header so tensor data starts 8-byte aligned
    return struct.pack("<Q", len(raw)) + raw + b"".join(chunks)


def read_safetensors(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Tensors (float32 copies) and metadata of a safetensors file; CheckpointError on any inconsistency."""
    blob = path.read_bytes()
    name = path.name
    if len(blob) < 8:
        raise CheckpointError(f"{name} is truncated ({len(blob)} bytes): the file is damaged, restore a backup")
    (header_len,) = struct.unpack("<Q", blob[:8])
    if header_len > _HEADER_LIMIT:
        raise CheckpointError(f"{name} is corrupt (header length {header_len} bytes is impossible): restore a backup")
    if 8 + header_len > len(blob):
        raise CheckpointError(
            f"{name} is truncated: its header needs {header_len} bytes but the file holds {len(blob) - 8}; restore a backup"
        )
    try:
        header = json.loads(blob[8 : 8 + header_len].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{name} is corrupt (unreadable header: {exc}); restore a backup") from exc
    if not isinstance(header, dict):
        raise CheckpointError(f"{name} is corrupt (header is not a JSON object); restore a backup")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(f"{name} is corrupt (metadata is not a string map); restore a backup")
    data = memoryview(blob)[8 + header_len :]
    tensors: dict[str, np.ndarray] = {}
    used = 0
    for key, info in header.items():
        try:
            dtype, shape, (begin, end) = info["dtype"], [int(d) for d in info["shape"]], info["data_offsets"]
        except (TypeError, KeyError, ValueError) as exc:
            raise CheckpointError(f"{name} is corrupt (bad header entry for tensor {key}); restore a backup") from exc
        if dtype != "F32":
            raise CheckpointError(f"{name}: tensor {key} is stored as {dtype}, but the agent needs float32 (F32)")
        if not (0 <= begin <= end) or end - begin != 4 * math.prod(shape):
            raise CheckpointError(f"{name} is corrupt (tensor {key} has inconsistent offsets); restore a backup")
        if end > len(data):
            raise CheckpointError(
                f"{name} is truncated: tensor {key} ends at byte {end} of {len(data)} data bytes; restore a backup"
            )
        tensors[key] = np.frombuffer(data[begin:end], dtype="<f4").reshape(shape).astype(np.float32)
        used += end - begin
    if used != len(data):
        raise CheckpointError(
            f"{name} is corrupt ({len(data)} data bytes but its tensors account for {used}); restore a backup"
        )
    return tensors, metadata
