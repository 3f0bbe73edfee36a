"""Nothing lost, nothing silent: models are never replaced by accident, every output is checked before the
first frame, runs never share log files, a full disk or a damaged recording ends a run cleanly with its
summary, and a second Ctrl+C cannot cut the save short."""

from __future__ import annotations

import asyncio
import csv
import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.clock import VirtualClock
from engine.engine import Engine, EngineConfig
from streamers.frames import Frame
from streamers.market_data import MarketData
from streamers.recording import read_frames
from tests.conftest import RUN_PY, Ran, as_ordinary_user, one_sentence, run_cli, run_cli_process
from tests.test_engine import T0, RecordingStrategy, ScriptedSource, market, scenario

DEV_FULL = Path("/dev/full")  # every write fails with ENOSPC: a full disk without filling one
needs_dev_full = pytest.mark.skipif(not DEV_FULL.exists(), reason="needs /dev/full (Linux) to stand for a full disk")


def sim(tmp: Path, *extra: str, seed: str = "3") -> list[str]:
    return ["--source", "sim", "--speed", "max", "--seed", seed, "--markets", "1", "--assets", "BTC", "--no-tui",
            "--log-dir", str(tmp / "logs"), *extra]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fake_model(folder: Path, name: str) -> dict[Path, str]:
    """A model pair standing for weeks of training: only its bytes matter (they must not change)."""
    files = {folder / f"{name}.safetensors": b"weeks of training", folder / f"{name}_stats.npz": b"its statistics"}
    for path, data in files.items():
        path.write_bytes(data)
    return {path: digest(path) for path in files}


def count_rows(path: str) -> int:
    with open(path, newline="") as fh:
        return sum(1 for _ in csv.DictReader(fh))


# ---- a training run never replaces a model it did not load ---------------------------------------------------

@pytest.mark.parametrize("save", [["--save", "M"], []], ids=["named", "default-rl_model"])
def test_train_without_load_onto_an_existing_model_is_refused_before_anything_runs(
    tmp_path: Path, save: list[str]
) -> None:
    name = save[1] if save else "rl_model"
    before = fake_model(tmp_path, name)
    line = one_sentence(run_cli("--strategy", "rl", "--train", *sim(tmp_path), *save, cwd=tmp_path), 2)
    assert f"--load {name}" in line and "--overwrite" in line, line
    assert {p: digest(p) for p in before} == before
    assert not (tmp_path / "logs").exists() or not list((tmp_path / "logs").iterdir())  # nothing ran


def test_train_from_one_model_onto_another_existing_model_is_refused(tmp_path: Path) -> None:
    before = fake_model(tmp_path, "B")
    line = one_sentence(run_cli("--strategy", "rl", "--train", "--load", "A", "--save", "B", *sim(tmp_path),
                                cwd=tmp_path), 2)
    assert "B" in line and "--overwrite" in line, line
    assert {p: digest(p) for p in before} == before


def test_overwrite_replaces_an_existing_model_with_a_new_one(tmp_path: Path) -> None:
    from strategies.rl_mlx import RLStrategy

    before = fake_model(tmp_path, "M")
    proc = run_cli("--strategy", "rl", "--train", *sim(tmp_path), "--save", "M", "--overwrite", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert all(digest(p) != d for p, d in before.items())
    assert RLStrategy.from_checkpoint(tmp_path / "M").checkpoint_stats().updates >= 1


# ---- every output is checked before the first frame ----------------------------------------------------------

@pytest.mark.parametrize(
    ("flag", "target"),
    [
        ("--save", "ro/M"),
        ("--report", "ro/R.json"),
        ("--record", "ro/rec.jsonl"),
        ("--log-dir", "ro"),
        ("--report", "readonly.json"),
        ("--record", "readonly.jsonl"),
        ("--save", "file/M"),
        ("--report", "file/R.json"),
        ("--record", "file/rec.jsonl"),
        ("--log-dir", "file/logs"),
    ],
    ids=["save-ro-folder", "report-ro-folder", "record-ro-folder", "log-dir-ro", "report-ro-file", "record-ro-file",
         "save-through-file", "report-through-file", "record-through-file", "log-dir-through-file"],
)
def test_unwritable_outputs_are_refused_before_the_first_frame(tmp_path: Path, flag: str, target: str) -> None:
    (tmp_path / "ro").mkdir()
    (tmp_path / "file").write_text("a plain file, not a folder")
    for name in ("readonly.json", "readonly.jsonl"):
        (tmp_path / name).write_text("keep me")
        (tmp_path / name).chmod(0o444)
    (tmp_path / "ro").chmod(0o555)
    args = ["--strategy", "rl", "--train", *sim(tmp_path), "--save", "M"]
    args += [flag, str(tmp_path / target)]
    try:
        start = time.monotonic()
        # a process of its own: as root, only a child that dropped CAP_DAC_OVERRIDE meets the read-only bits
        proc = run_cli_process(*args, cwd=tmp_path, preexec_fn=as_ordinary_user())
    finally:
        (tmp_path / "ro").chmod(0o755)
    line = one_sentence(proc, 2)
    assert flag in line, line
    assert time.monotonic() - start < 60
    assert not (tmp_path / "M.safetensors").exists()  # refused before training, so nothing was saved
    assert (tmp_path / "readonly.json").read_text() == "keep me"


# ---- every run has its own log files --------------------------------------------------------------------------

def test_two_engines_with_the_same_run_id_and_log_dir_write_separate_files(tmp_path: Path) -> None:
    frames = scenario([market("0xa", T0)], until=T0 + 12)

    def engine() -> Engine:
        from strategies.base import Action

        def buy_then_sell(s):
            return Action.BUY if s.position_side == 0 else Action.SELL

        cfg = EngineConfig(assets=("BTC",), log_dir=tmp_path, run_id="same")
        return Engine(RecordingStrategy(buy_then_sell), ScriptedSource(frames), VirtualClock(),
                      MarketData(assets=("BTC",)), cfg)

    async def both() -> list[dict]:
        return list(await asyncio.gather(engine().run(), engine().run()))

    first, second = asyncio.run(both())
    for kind in ("trades", "updates", "episodes"):
        assert first["logs"][kind] != second["logs"][kind]
    assert first["trades"] > 0
    for report in (first, second):
        assert count_rows(report["logs"]["trades"]) == report["trades"]
        assert count_rows(report["logs"]["episodes"]) == 1
    assert len(list(tmp_path.glob("trades_*.csv"))) == 2


def test_two_runs_started_together_in_one_log_dir_keep_their_own_files(tmp_path: Path) -> None:
    procs = []
    for i in range(2):
        d = tmp_path / f"run{i}"
        d.mkdir()
        args = ["--strategy", "fair_value", "--source", "sim", "--speed", "max", "--seed", str(5 + i), "--markets",
                "1", "--assets", "BTC", "--no-tui", "--log-dir", str(tmp_path / "logs"), "--report", "R.json"]
        # processes of their own: two runs at the same moment, each with its process id in its run id
        procs.append(subprocess.Popen([sys.executable, str(RUN_PY), *args], cwd=d, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    outputs = [p.communicate(timeout=240) for p in procs]
    reports = []
    for i, (p, (out, err)) in enumerate(zip(procs, outputs, strict=True)):
        assert p.returncode == 0, err
        report = json.loads((tmp_path / f"run{i}" / "R.json").read_text())
        reports.append(report)
        assert f"_{p.pid}" in Path(report["logs"]["trades"]).name  # the run id carries the process id
        assert report["logs"]["trades"] in out  # the summary names the files
        assert count_rows(report["logs"]["trades"]) == report["trades"]
    assert reports[0]["logs"]["trades"] != reports[1]["logs"]["trades"]
    assert reports[0]["trades"] != reports[1]["trades"] or reports[0]["pnl"] != reports[1]["pnl"]


# ---- a full disk ends the run cleanly ----------------------------------------------------------------------------

class _DiskFillsAt:
    """The scripted frames; at `at` the disk under the trades log fills up (its descriptor now writes to
    /dev/full), so the real CSV writer meets ENOSPC on its next row."""

    virtual = True

    def __init__(self, frames: list[Frame], at: float) -> None:
        self._frames, self._at = frames, at
        self.engine: Engine | None = None

    async def frames(self):
        filled = False
        for frame in self._frames:
            if not filled and frame.t >= self._at:
                full = os.open(DEV_FULL, os.O_WRONLY)
                os.dup2(full, self.engine.logs.trades._fh.fileno())
                os.close(full)
                filled = True
            yield frame

    async def close(self) -> None:
        pass


@needs_dev_full
def test_full_disk_while_logging_stops_the_run_at_the_next_tick_naming_the_file(tmp_path: Path) -> None:
    from strategies.base import Action

    strategy = RecordingStrategy(lambda s: Action.BUY if s.position_side == 0 else Action.SELL)
    source = _DiskFillsAt(scenario([market("0xa", T0, length=60.0)], until=T0 + 70), at=T0 + 5)
    engine = Engine(strategy, source, VirtualClock(), MarketData(assets=("BTC",)),
                    EngineConfig(assets=("BTC",), log_dir=tmp_path, run_id="full"))
    source.engine = engine
    report = asyncio.run(engine.run())  # returns a report: no exception escapes
    trades_csv = str(tmp_path / "trades_full.csv")
    assert report["output_error"] == f"cannot write the log {trades_csv}: No space left on device"
    acted_until = 60.0 - min(left for c in strategy.calls if c[0] == "act" for _, left in c[1])
    assert acted_until < 8.0, acted_until  # stopped within a tick or two of the failed write, not at T0 + 60
    assert report["trades"] > count_rows(trades_csv)  # the summary still counts the trades the log missed
    assert report["shutdown_closes"] <= 1


@needs_dev_full
def test_full_disk_while_recording_saves_the_model_prints_the_summary_and_exits_1(tmp_path: Path) -> None:
    proc = run_cli("--strategy", "rl", "--train", *sim(tmp_path), "--save", "M", "--report", "R.json",
                   "--record", str(DEV_FULL), cwd=tmp_path)
    line = one_sentence(proc, 1)
    assert line == f"updown: stopped: cannot write the recording {DEV_FULL}: No space left on device", line
    assert "PnL $" in proc.stdout and "model saved" in proc.stdout
    assert (tmp_path / "M.safetensors").exists() and (tmp_path / "M_stats.npz").exists()
    report = json.loads((tmp_path / "R.json").read_text())
    assert report["output_error"] in line and report["model_saved"] == "M" and report["windows"] == 0


@needs_dev_full
def test_full_disk_for_the_report_still_prints_the_summary_and_exits_1(tmp_path: Path) -> None:
    proc = run_cli("--strategy", "fair_value", *sim(tmp_path), "--report", str(DEV_FULL), cwd=tmp_path)
    line = one_sentence(proc, 1)
    assert f"cannot write the report {DEV_FULL}: No space left on device" in line, line
    assert "PnL $" in proc.stdout


# ---- damaged recordings ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("recording")
    proc = run_cli("--strategy", "fair_value", *sim(folder, seed="7"), "--record", "rec.jsonl.gz", cwd=folder)
    assert proc.returncode == 0, proc.stderr
    return folder / "rec.jsonl.gz"


def replay(tmp: Path, path: Path) -> Ran:
    return run_cli("--strategy", "fair_value", "--source", "replay", "--replay", str(path), "--assets", "BTC",
                   "--no-tui", "--log-dir", str(tmp / "logs"), "--report", "R.json", cwd=tmp)


def test_replay_skips_unreadable_lines_counts_them_in_the_report_and_warns_once(
    tmp_path: Path, recording: Path
) -> None:
    lines = gzip.decompress(recording.read_bytes()).splitlines(keepends=True)
    for at in (5, len(lines) // 2, len(lines) - 3):
        lines.insert(at, b"\x00garbage from a bad disk sector\n")
    damaged = tmp_path / "damaged.jsonl"
    damaged.write_bytes(b"".join(lines))
    proc = replay(tmp_path, damaged)
    line = one_sentence(proc, 0)
    assert "line 6" in line and "skipping unreadable lines" in line and "feed.bad_lines" in line, line
    assert "PnL $" in proc.stdout
    report = json.loads((tmp_path / "R.json").read_text())
    assert report["feed"]["bad_lines"] == 3 and report["windows"] == 1 and report["decisions"] > 0


def test_replay_of_a_cut_short_gz_ends_with_a_warning_naming_the_last_good_line(
    tmp_path: Path, recording: Path
) -> None:
    cut = tmp_path / "cut.jsonl.gz"
    data = recording.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    last_good = len(list(read_frames(str(cut))))  # the strict reader keeps a crash's prefix too
    proc = replay(tmp_path, cut)
    line = one_sentence(proc, 0)
    assert f"ends early after line {last_good}," in line and "cut short" in line, line
    assert "PnL $" in proc.stdout
    report = json.loads((tmp_path / "R.json").read_text())
    # every frame up to the cut is replayed; the one window it held is cut short, so it is not traded
    assert report["feed"]["messages"] == last_good and report["feed"]["bad_lines"] == 0
    assert report["library"]["windows_cut"] == 1 and report["decisions"] == 0


# ---- signals -------------------------------------------------------------------------------------------------------

def test_a_second_ctrl_c_lets_the_save_finish_and_exits_0(tmp_path: Path) -> None:
    from strategies.rl_mlx import RLStrategy

    # a process of its own: Ctrl+C is SIGINT delivered to it, again and again
    proc = subprocess.Popen(
        [sys.executable, str(RUN_PY), "--strategy", "rl", "--train", "--source", "sim", "--speed", "max",
         "--seed", "4", "--markets", "50", "--assets", "BTC,ETH", "--no-tui", "--log-dir", str(tmp_path / "logs"),
         "--save", "M"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 120
    while not any(count_rows(str(p)) for p in (tmp_path / "logs").glob("updates_*.csv")):  # it is training
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    while proc.poll() is None and time.monotonic() < deadline:  # keep pressing Ctrl+C until it exits
        time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "PnL $" in out and "model saved" in out
    assert RLStrategy.from_checkpoint(tmp_path / "M").checkpoint_stats().updates >= 1


# ---- the report counts what it could not use -------------------------------------------------------------------

def test_report_counts_unknown_event_types_beside_rejected_frames() -> None:
    from strategies.base import Action

    unknown = Frame(T0 + 1.1, "polymarket_market", '{"event_type":"some_future_event","market":"0xa"}')
    garbage = Frame(T0 + 1.2, "polymarket_market", "{not json")
    frames = sorted([*scenario([market("0xa", T0)], until=T0 + 12), unknown, unknown, garbage], key=lambda f: f.t)
    engine = Engine(RecordingStrategy(lambda s: Action.HOLD), ScriptedSource(frames), VirtualClock(),
                    MarketData(assets=("BTC",)), EngineConfig(assets=("BTC",), log_dir=None))
    report = asyncio.run(engine.run())
    assert report["feed"]["unknown"] == 2 and report["feed"]["rejected"] == 1


def test_garbage_faults_still_apply_at_speed_max(tmp_path: Path) -> None:
    proc = run_cli("--strategy", "momentum", *sim(tmp_path), "--sim-faults", "garbage=0.01", "--report", "R.json",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "R.json").read_text())["feed"]["rejected"] > 0
