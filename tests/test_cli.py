"""The command line: bad input gets one sentence on stderr and exit code 2, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Ran, one_sentence, run_cli


def assert_one_sentence_error(proc: Ran, *needles: str) -> None:
    line = one_sentence(proc, 2)
    for needle in needles:
        assert needle in line, line


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--strategy", "banana"], "banana"),
        (["--strategy", "momentum", "--train"], "--train needs --strategy rl"),
        (["--strategy", "rl", "--source", "replay"], "--replay PATH"),
        (["--strategy", "rl", "--source", "replay", "--replay", "nowhere.jsonl"], "does not exist"),
        (["--strategy", "rl", "--markets", "0"], "above 0"),
        (["--strategy", "rl", "--speed", "fast"], "fast"),
        (["--strategy", "rl", "--assets", "BTC,DOGE"], "DOGE"),
        (["--strategy", "rl", "--load", "model.safetensors"], "without extension"),
        (["--strategy", "rl", "--save", "x"], "--save needs --train"),
        (["--strategy", "momentum", "--source", "live", "--speed", "5"], "real time"),
        (["--strategy", "momentum", "--live", "--max-total-dollars", "10"], "needs --source live"),
        (["--strategy", "momentum", "--source", "live", "--live"], "--max-total-dollars"),
        (["--strategy", "momentum", "--source", "live", "--live", "--max-total-dollars", "10", "--fill", "mid"],
         "venue fills them"),
        (["--strategy", "momentum", "--max-order-dollars", "5"], "only with --live"),
        (["--strategy", "rl", "--train", "--gamma", "1.5"], "(0, 1]"),
        (["--strategy", "rl", "--gamma", "1"], "add --train"),
        (["--strategy", "rl", "--train", "--load", "m", "--gamma", "1"], "keeps the gamma"),
        (["--strategy", "fair_value", "--gamma", "1"], "only to --strategy rl"),
        (["--strategy", "rl", "--train", "--save", ""], "--save needs a model name"),
        (["--strategy", "rl", "--overwrite"], "--overwrite needs --train"),
        (["--strategy", "momentum", "--overwrite"], "only to --strategy rl"),
        (["--strategy", "rl", "--source", "replay", "--replay", "tests"], "holds no recordings"),
        (["--strategy", "rl", "--source", "replay", "--replay", "nowhere/*.jsonl.gz"], "No recordings match"),
        (["--strategy", "rl", "--source", "mix"], "--source mix needs --replay PATH"),
        (["--strategy", "rl", "--shuffle-windows"], "apply to recordings"),
        (["--strategy", "rl", "--epochs", "2"], "apply to recordings"),
        (["--strategy", "rl", "--sim-share", "0.3"], "only to --source mix"),
        (["--strategy", "rl", "--source", "mix", "--sim-share", "1"], "up to (not including) 1"),
        (["--strategy", "momentum", "--sim-faults", "drop=0.01"], "--speed max"),
        (["--strategy", "momentum", "--speed", "max", "--sim-faults", "garbage=0.01,stall=0.001"], "--speed X"),
        (["--strategy", "fair_value", "--latency-ms", "-5"], "0 ms or more"),
        (["--strategy", "fair_value", "--latency-ms", "soon"], "milliseconds"),
        (["--strategy", "momentum", "--source", "live", "--live", "--max-total-dollars", "10", "--latency-ms", "100"],
         "real latency"),
        (["--strategy", "fair_value", "--max-slippage", "1.5"], "below 1"),
    ],
)
def test_bad_arguments_exit_2_with_one_sentence(args: list[str], needle: str) -> None:
    assert_one_sentence_error(run_cli(*args), needle)


def test_help_exits_0() -> None:
    proc = run_cli("--help")
    assert proc.returncode == 0
    assert "--checkpoint-every" in proc.stdout


def test_log_dir_that_cannot_be_created_exits_2(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    proc = run_cli("--strategy", "momentum", "--markets", "1", "--log-dir", str(blocker / "logs"))
    assert_one_sentence_error(proc, "--log-dir")


def test_recording_that_cannot_be_written_exits_2(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    proc = run_cli("--strategy", "momentum", "--markets", "1", "--log-dir", str(tmp_path / "logs"),
                   "--no-tui", "--record", str(blocker / "rec.jsonl"))
    assert_one_sentence_error(proc, "--record", "is not a folder")


def test_save_name_that_is_a_folder_exits_2_before_training(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    proc = run_cli("--strategy", "rl", "--train", "--save", str(tmp_path / "models"), "--markets", "1")
    assert_one_sentence_error(proc, "folder")
