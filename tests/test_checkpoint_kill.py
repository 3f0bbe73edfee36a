"""SIGKILL landing anywhere in a save never leaves a checkpoint that mixes two saves."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from persistence import load_checkpoint

WRITER = Path(__file__).resolve().parent / "checkpoint_writer.py"
KILLS = 24


def test_sigkill_during_repeated_saves_always_leaves_one_consistent_save(tmp_path: Path) -> None:
    base = tmp_path / "rl_model"
    rng = np.random.default_rng(2024)
    seen: set[int] = set()
    fallbacks = 0
    for kill in range(KILLS):
        # each writer saves indices kill*1_000_000, +1, +2, ... (weights and stats all equal the index)
        writer = subprocess.Popen(
            [sys.executable, str(WRITER), str(base), "loop", str(kill * 1_000_000)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert writer.stdout is not None and writer.stdout.readline().strip() == "saving"
        time.sleep(rng.uniform(0.0, 0.06))
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        writer.stdout.close()
        assert writer.returncode == -signal.SIGKILL

        if kill == 0 and not base.with_name("rl_model.safetensors").exists():
            continue  # killed before its first save committed: nothing to check yet
        checkpoint = load_checkpoint(base)
        assert checkpoint.stats is not None
        index = checkpoint.stats.updates
        assert checkpoint.stats.reward_count == index and checkpoint.stats.reward_mean == float(index)
        assert all(np.all(w == float(index)) for w in checkpoint.weights.values()), f"kill {kill}: weights mix saves"
        assert index // 1_000_000 <= kill  # never a save from the future; older saves survive early kills
        seen.add(index)
        fallbacks += bool(checkpoint.notes)
        # a killed save may leave its temp files; the next save removes them, so they never pile up
        assert len(list(tmp_path.glob(".*.tmp"))) <= 2
    assert len(seen) >= KILLS // 2, "the writers barely saved anything: the kills did not exercise saving"
    print(f"{KILLS} kills, {len(seen)} distinct saves survived, {fallbacks} loads used the embedded statistics")
