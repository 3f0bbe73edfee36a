"""benchmarks/learning.py on recordings: the walk-forward split is enforced, and a train/evaluate round trip runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.learning import main, walk_forward_split
from sim.source import SimSource
from streamers.frames import WINDOW_SECONDS
from streamers.library import FileScan, Library
from streamers.recording import Recorder


def _day(folder: Path, seed: int) -> Path:
    """One simulator window (and 30 s) of BTC recorded as a "day" of its own; seed n starts n days later."""
    src = SimSource(seed, ("BTC",), background=False)
    stop = src.start_time + WINDOW_SECONDS + 30
    path = folder / f"day{seed}.jsonl.gz"
    with Recorder(str(path), header=json.dumps({"source": "sim", "seed": seed})) as rec:
        for frame in src.iter_frames():
            if frame.t > stop:
                break
            rec.write(frame)
    return path


def _library(*starts: int) -> Library:
    scan = FileScan("fake.jsonl", frames=1, first_t=float(min(starts)), last_t=float(max(starts) + 900))
    scan.windows = {s: (s + 900, {"BTC"}) for s in starts}
    return Library([scan])


def test_walk_forward_split_needs_every_evaluation_window_after_the_training_ones():
    assert walk_forward_split(_library(0, 900), _library(1800, 2700)) == (1800, 1800)
    with pytest.raises(SystemExit, match="before the last training window ends"):
        walk_forward_split(_library(0, 900), _library(900, 1800))
    with pytest.raises(SystemExit, match="hold no complete window"):
        walk_forward_split(Library([FileScan("empty-ish.jsonl", frames=1, first_t=0.0, last_t=10.0)]),
                           _library(1800))


def test_learning_trains_on_earlier_recordings_and_evaluates_on_later_ones(tmp_path):
    early, late = _day(tmp_path, 1), _day(tmp_path, 2)
    with pytest.raises(SystemExit, match="before the last training window ends"):
        main(["--assets", "BTC", "--train-recordings", str(late), "--eval-recordings", str(early)])
    with pytest.raises(SystemExit, match="add --train-recordings"):
        main(["--assets", "BTC", "--shuffle-windows"])
    out = tmp_path / "out"
    assert main(["--assets", "BTC", "--train-recordings", str(early), "--eval-recordings", str(late),
                 "--fills", "book", "--baselines", "fair_value", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["walk_forward"]["first_evaluation_window"] >= results["walk_forward"]["last_training_window_end"]
    (training,) = results["training"]
    assert training["recordings"] == str(early) and training["windows"] == 1 and training["updates"] >= 1
    assert training["library"]["files"] == 1 and training["library"]["windows_complete"] == 1
    assert training["library"]["episodes"] == 1 and training["library"]["windows_cut"] == 1  # the next window's 30 s
    by_name = {e["strategy"]: e for e in results["evaluation"]}
    assert set(by_name) == {"rl", "fair_value"}
    assert all(e["windows"] == 1 and len(e["window_pnls"]) == 1 for e in by_name.values())
