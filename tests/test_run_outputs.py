"""What `run.py` tells a user: a line per resolved window with --no-tui, and at the end where every file
went (model loaded and saved, CSV logs, report, recording, charts); --charts checked before the run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, Ran, run_cli
from tests.test_cli import assert_one_sentence_error


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Ran]:
    tmp = tmp_path_factory.mktemp("trained")
    proc = run_cli("--strategy", "rl", "--train", "--seed", "1", "--markets", "2", "--assets", "BTC", "--no-tui",
                   "--save", str(tmp / "m"), "--log-dir", str(tmp / "logs"), "--report", str(tmp / "r.json"),
                   "--record", str(tmp / "rec.jsonl"), "--charts", str(tmp / "charts"))
    assert proc.returncode == 0, proc.stderr
    return tmp, proc


def outputs(stdout: str) -> dict[str, list[str]]:
    """The summary's list of outputs: label -> paths (continuation lines carry no label)."""
    found: dict[str, list[str]] = {}
    label = None
    for line in stdout.splitlines():
        if line.startswith(" " * 14) and label:
            found[label].append(line.strip())
        elif line[:14].strip() in ("model loaded", "model saved", "logs", "report", "recording", "charts"):
            label = line[:14].strip()
            found[label] = [line[14:].strip()]
        else:
            label = None
    return found


def test_no_tui_prints_one_line_per_window_with_progress_pnl_trades_speed_and_learning(trained):
    _, proc = trained
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("window ")]
    assert [ln.split("  ")[0] for ln in lines] == ["window 1/2", "window 2/2"]
    for line in lines:
        assert " PnL $" in line and " trades " in line and " dec/s" in line
        assert " entropy " in line and " EV " in line
    assert "ETA" in lines[0]


def test_the_summary_says_where_the_model_logs_report_recording_and_charts_went(trained):
    tmp, proc = trained
    found = outputs(proc.stdout)
    assert found["model saved"] == [f"{tmp / 'm'}.safetensors + {tmp / 'm'}_stats.npz"]
    assert (tmp / "m.safetensors").is_file() and (tmp / "m_stats.npz").is_file()
    assert [Path(p).name.split("_")[0] for p in found["logs"]] == ["trades", "updates", "episodes"]
    assert all(Path(p).is_file() and Path(p).parent == tmp / "logs" for p in found["logs"])
    assert found["report"] == [str(tmp / "r.json")] and found["recording"] == [str(tmp / "rec.jsonl")]
    assert (tmp / "rec.jsonl").stat().st_size > 0
    run_id = Path(found["logs"][0]).stem.removeprefix("trades_")
    assert sorted(Path(p).name for p in found["charts"]) == [
        f"{name}_{run_id}.png" for name in ("equity", "learning", "pnl_by_asset", "trade_pnl")]
    assert all(Path(p).is_file() and Path(p).parent == tmp / "charts" for p in found["charts"])
    report = json.loads((tmp / "r.json").read_text())
    assert report["charts"] == found["charts"] and report["recording"] == str(tmp / "rec.jsonl")
    assert report["model_saved"] == str(tmp / "m") and report["model_loaded"] is None
    assert "[rl] model saved" not in proc.stdout  # said once, in the list


def test_an_inference_run_names_the_model_it_loaded_and_that_it_wrote_none(trained, tmp_path):
    tmp, _ = trained
    proc = run_cli("--strategy", "rl", "--load", str(tmp / "m"), "--seed", "2", "--markets", "1", "--assets", "BTC",
                   "--no-tui", "--log-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    found = outputs(proc.stdout)
    assert found["model loaded"] == [f"{tmp / 'm'}.safetensors + {tmp / 'm'}_stats.npz"]
    assert found["model saved"][0].startswith("no (inference never writes the model")
    assert "report" not in found and "recording" not in found and "charts" not in found


def test_charts_folder_that_cannot_be_created_exits_2_before_the_run(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    proc = run_cli("--strategy", "momentum", "--markets", "1", "--no-tui", "--log-dir", str(tmp_path / "logs"),
                   "--charts", str(blocker / "charts"))
    assert_one_sentence_error(proc, "--charts: cannot create the folder")
    assert not (tmp_path / "logs").exists() or not list((tmp_path / "logs").iterdir())


def test_charts_without_matplotlib_exit_2_before_the_run(tmp_path):
    # a process of its own: matplotlib is hidden from every import in it
    code = ("import sys; sys.modules['matplotlib'] = None; sys.path.insert(0, sys.argv[1]); "
            "import run; sys.exit(run.main(sys.argv[2:]))")
    proc = subprocess.run(
        [sys.executable, "-c", code, str(ROOT), "--strategy", "momentum", "--markets", "1", "--no-tui",
         "--log-dir", str(tmp_path / "logs"), "--charts", str(tmp_path / "charts")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert_one_sentence_error(proc, "--charts", "matplotlib", "pip install")
    assert not (tmp_path / "logs").exists() or not list((tmp_path / "logs").iterdir())
