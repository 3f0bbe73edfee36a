"""Helper process for the persistence tests: writes checkpoints whose every number is one save index.

usage: checkpoint_writer.py BASE loop START   save START, START+1, ... until killed
       checkpoint_writer.py BASE once INDEX   save once; print the CheckpointError and exit 1 if it fails
"""

from __future__ import annotations

import sys
from itertools import count
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from persistence import CheckpointError, CheckpointStats, save_checkpoint

# the Phase 5 tensor shapes, so each save writes a realistically sized file (~158 KB)
SHAPES: dict[str, tuple[int, ...]] = {}
for net, hidden in (("actor", 64), ("critic", 96)):
    for layer, (rows, cols) in {"fc1": (64, 90), "fc2": (32, 64)}.items():
        SHAPES[f"{net}.temporal_encoder.{layer}.weight"] = (rows, cols)
        SHAPES[f"{net}.temporal_encoder.{layer}.bias"] = (rows,)
    for layer, width in {"ln1": 64, "ln2": 32}.items():
        SHAPES[f"{net}.temporal_encoder.{layer}.weight"] = (width,)
        SHAPES[f"{net}.temporal_encoder.{layer}.bias"] = (width,)
    out = 3 if net == "actor" else 1
    for layer, (rows, cols) in {"fc1": (hidden, 50), "fc2": (hidden, hidden), "fc3": (out, hidden)}.items():
        SHAPES[f"{net}.{layer}.weight"] = (rows, cols)
        SHAPES[f"{net}.{layer}.bias"] = (rows,)
    for layer in ("ln1", "ln2"):
        SHAPES[f"{net}.{layer}.weight"] = (hidden,)
        SHAPES[f"{net}.{layer}.bias"] = (hidden,)


def save_index(base: str, index: int) -> None:
    """Every weight, reward_mean, reward_count and updates equal `index`."""
    weights = {name: np.full(shape, float(index), dtype=np.float32) for name, shape in SHAPES.items()}
    stats = CheckpointStats(reward_mean=float(index), reward_std=1.0, reward_count=index, updates=index)
    save_checkpoint(base, weights, stats)


def main() -> int:
    base, mode, first = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "once":
        try:
            save_index(base, first)
        except CheckpointError as exc:
            print(exc)
            return 1
        return 0
    print("saving", flush=True)
    for index in count(first):
        save_index(base, index)
    return 0


if __name__ == "__main__":
    sys.exit(main())
