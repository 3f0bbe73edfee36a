"""`python -m benchmarks.charts`: charts from the CSV logs of any run.py run (and still from learning
benchmark folders), a one-sentence refusal when the logs hold nothing to draw, --help without matplotlib."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import charts
from engine.clock import VirtualClock
from engine.engine import Engine, EngineConfig
from strategies.base import Action
from streamers.market_data import MarketData
from tests.conftest import ROOT
from tests.test_dashboard import UPDATES, flip_flop
from tests.test_engine import T0, RecordingStrategy, ScriptedSource, always, market, scenario

RUN_CHARTS = ("equity", "pnl_by_asset", "trade_pnl", "learning")
WITHOUT_MATPLOTLIB = "import sys; sys.modules['matplotlib'] = None; "  # any import of it raises ImportError


def write_run_logs(folder: Path, run_id: str, plan=flip_flop, updates=UPDATES) -> dict:
    """The real engine writes a real run's CSV logs: two BTC windows of 10 s."""
    cfg = EngineConfig(assets=("BTC",), log_dir=folder, run_id=run_id, seed=1, max_windows=2, train=True)
    frames = scenario([market("0xa", T0), market("0xb", T0 + 10)], until=T0 + 30)
    engine = Engine(RecordingStrategy(plan, updates=list(updates)), ScriptedSource(frames), VirtualClock(),
                    MarketData(assets=("BTC",)), cfg)
    return asyncio.run(engine.run())


def assert_drawn(path: Path) -> None:
    """A real PNG with something on it (not one flat colour)."""
    import matplotlib.image

    pixels = matplotlib.image.imread(path)
    assert pixels.shape[0] > 200 and pixels.shape[1] > 200
    assert pixels[..., :3].std() > 0.05, path


def test_charts_of_a_run_py_run_from_its_logs(tmp_path, capsys):
    write_run_logs(tmp_path / "logs", "r1")
    out = tmp_path / "png"
    assert charts.main(["--logs", str(tmp_path / "logs"), "--out", str(out)]) == 0
    for name in RUN_CHARTS:
        assert_drawn(out / f"{name}_r1.png")
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}_r1.png" for n in RUN_CHARTS)
    assert capsys.readouterr().out.count("wrote ") == 4


def test_the_newest_run_is_drawn_unless_a_run_id_is_given(tmp_path):
    logs = tmp_path / "logs"
    write_run_logs(logs, "old")
    write_run_logs(logs, "new")
    for path in logs.glob("*_old.csv"):
        os.utime(path, (1_000_000, 1_000_000))
    assert charts.main(["--logs", str(logs)]) == 0
    assert (logs / "equity_new.png").is_file() and not (logs / "equity_old.png").exists()
    assert charts.main(["--logs", str(logs), "--run-id", "old"]) == 0
    assert (logs / "equity_old.png").is_file()


def test_a_run_without_training_gets_no_learning_chart(tmp_path):
    write_run_logs(tmp_path, "rules", updates=[])
    assert charts.main(["--logs", str(tmp_path)]) == 0
    assert (tmp_path / "equity_rules.png").is_file() and not (tmp_path / "learning_rules.png").exists()


def test_logs_with_nothing_to_draw_are_refused_in_one_sentence_and_no_png(tmp_path, capsys):
    write_run_logs(tmp_path, "idle", plan=always(Action.HOLD), updates=[])
    assert charts.main(["--logs", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nothing to draw" in err and "trades_idle.csv" in err
    assert not list(tmp_path.glob("*.png"))


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--logs", "{tmp}"], "holds no run.py logs"),
        (["--logs", "{tmp}/missing"], "no such folder"),
        (["--run", "x={tmp}"], "no training or evaluation logs"),
        ([], "either --logs DIR"),
        (["--logs", "{tmp}", "--run", "x={tmp}"], "either --logs DIR"),
        (["--run-id", "r1", "--run", "x={tmp}"], "--run-id picks a run"),
    ],
)
def test_bad_chart_requests_exit_2_with_one_sentence(tmp_path, capsys, args, needle):
    assert charts.main([a.replace("{tmp}", str(tmp_path)) for a in args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
    assert not list(tmp_path.glob("*.png"))


def test_an_unknown_run_id_names_the_runs_there_are(tmp_path, capsys):
    write_run_logs(tmp_path, "r1")
    assert charts.main(["--logs", str(tmp_path), "--run-id", "r9"]) == 2
    err = capsys.readouterr().err
    assert "'r9'" in err and "newest first: r1" in err


def test_learning_benchmark_folders_still_draw_training_and_held_out_charts(tmp_path):
    bench = tmp_path / "bench"
    write_run_logs(bench, "rl_train_s1")
    write_run_logs(bench, "eval_rl_book_s1001", updates=[])
    write_run_logs(bench, "eval_fair_value_book_s1001", updates=[])
    out = tmp_path / "png"
    assert charts.main(["--run", f"mine={bench}", "--out", str(out), "--fills", "book"]) == 0
    for name in ("entropy", "training_equity", "equity_book", "pnl_by_asset_book"):
        assert_drawn(out / f"{name}.png")


def run_module(code: str, *args: str) -> subprocess.CompletedProcess:
    """A process of its own: `code` hides matplotlib from every import in it."""
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_help_works_without_matplotlib():
    proc = run_module(WITHOUT_MATPLOTLIB + "import runpy; sys.argv[0] = 'charts'; "
                      "runpy.run_module('benchmarks.charts', run_name='__main__')", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "--logs" in proc.stdout and "--run-id" in proc.stdout


def test_drawing_without_matplotlib_says_what_to_install(tmp_path):
    write_run_logs(tmp_path, "r1")
    proc = run_module(WITHOUT_MATPLOTLIB + "from benchmarks.charts import main; sys.exit(main(sys.argv[1:]))",
                      "--logs", str(tmp_path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "charts: charts need matplotlib: pip install -e '.[bench]'"
