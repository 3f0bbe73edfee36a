"""--tensorboard: the event files hold every update's CSV metrics and every window's PnL; bad folders exit 2."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from benchmarks.learning import main as learning_main
from engine.trade_log import UPDATE_COLUMNS
from tests.conftest import ROOT, RUN_PY, call_main, one_sentence, run_cli


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series in a TensorBoard run folder, read back by TensorBoard's own reader."""
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})  # 0: keep every point
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def rows(path: str) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_run_writes_every_update_and_window_pnl_as_scalars_and_keeps_the_csvs(tmp_path: Path) -> None:
    board, report = tmp_path / "tb", tmp_path / "report.json"
    proc = run_cli("--strategy", "rl", "--train", "--seed", "1", "--markets", "2", "--assets", "BTC", "--no-tui",
                   "--log-dir", str(tmp_path / "logs"), "--save", str(tmp_path / "m"), "--report", str(report),
                   "--tensorboard", str(board))
    assert proc.returncode == 0, proc.stderr
    assert f"tensorboard   {board}" in proc.stdout
    logs = json.loads(report.read_text())["logs"]
    updates = rows(logs["updates"])
    assert len(updates) >= 5
    got = scalars(board)
    for column in UPDATE_COLUMNS[2:]:  # every column after timestamp and update_num
        expected = [(int(r["update_num"]), float(r[column])) for r in updates]
        series = got[f"updates/{column}"]
        assert [s for s, _ in series] == [s for s, _ in expected], column
        assert [v for _, v in series] == pytest.approx([v for _, v in expected], rel=1e-5, abs=1e-5), column
    episodes = rows(logs["episodes"])
    per_window = [float(r["pnl"]) for r in episodes if r["outcome"] != "shutdown"]
    assert len(per_window) == 2
    assert got["windows/pnl"] == [(1, pytest.approx(per_window[0], abs=1e-3)), (2, pytest.approx(per_window[1], abs=1e-3))]
    assert got["windows/pnl_BTC"] == got["windows/pnl"]
    assert got["windows/cumulative_pnl"][-1][1] == pytest.approx(sum(per_window), abs=1e-3)


def test_learning_benchmark_writes_one_run_per_agent_with_steps_across_training_seeds(tmp_path: Path) -> None:
    board = tmp_path / "tb"
    argv = ["--assets", "BTC", "--agent-seeds", "3,4", "--train-seeds", "1,2", "--train-windows", "1",
            "--eval-seeds", "1001", "--eval-windows", "1", "--fills", "book", "--baselines", "fair_value",
            "--out", str(tmp_path / "out"), "--tensorboard", str(board)]
    assert learning_main(argv) == 0
    assert sorted(p.name for p in board.iterdir()) == ["rla3", "rla4"]
    got = scalars(board / "rla3")
    assert [step for step, _ in got["windows/pnl"]] == [1, 2]  # one window on each training seed, counted on
    steps = [step for step, _ in got["updates/entropy"]]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) >= 10


@pytest.mark.parametrize("entry", ["run.py", "learning"])
def test_unusable_tensorboard_folder_is_one_sentence_and_exit_2(tmp_path: Path, entry: str) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    if entry == "run.py":
        proc = run_cli("--strategy", "rl", "--train", "--tensorboard", str(blocker / "tb"))
    else:
        proc = call_main(learning_main, "--tensorboard", str(blocker / "tb"))
    line = one_sentence(proc, 2)
    assert "--tensorboard: cannot create the folder" in line and str(blocker / "tb") in line


def test_missing_writer_package_is_named_with_its_install_command(tmp_path: Path) -> None:
    # a process of its own: tensorboardX is hidden from every import in it
    hide = "import sys; sys.modules['tensorboardX'] = None; import runpy; sys.argv = sys.argv[1:]; "
    hide += "runpy.run_path(sys.argv[0], run_name='__main__')"
    proc = subprocess.run([sys.executable, "-c", hide, str(RUN_PY), "--strategy", "rl", "--train",
                           "--tensorboard", str(tmp_path / "tb")], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("updown: --tensorboard needs tensorboardX: pip install tensorboardX "
                                   "(or pip install -e '.[scale]')")
