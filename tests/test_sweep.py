"""benchmarks.sweep: trials in parallel on a real local Ray, on a Ray head started here, and one after another
without Ray; every trial's model, logs and report in one folder; bad input is one sentence and exit 2."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from benchmarks.sweep import main as sweep_main
from tests.conftest import ROOT

TINY = ["--assets", "BTC", "--train-seeds", "1", "--train-windows", "1", "--eval-seeds", "1001", "--eval-windows", "1",
        "--fills", "book", "--baselines", "fair_value"]  # fmt: skip
HIDE_RAY = "import sys; sys.modules['ray'] = None; "  # `import ray` now raises ImportError, as when not installed


def sweep(out: Path, *args: str, prelude: str = "", env: dict | None = None) -> subprocess.CompletedProcess:
    # a process of its own: Ray keeps its runtime for the life of a process, and `prelude` may hide ray from it
    code = prelude + "import sys; from benchmarks.sweep import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *TINY, "--out", str(out), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def assert_trial_folders(out: Path, names: list[str]) -> None:
    """Each trial's model, CSV logs, console log and report, where the summary says."""
    with (out / "summary.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["trial"] for r in rows] == names
    for row in rows:
        folder = out / row["trial"]
        for name in ("rl_model.safetensors", "rl_model_stats.npz", "trial.log", "report.json",
                     "updates_rl_train_s1.csv", "episodes_eval_rl_book_s1001.csv"):
            assert (folder / name).is_file(), folder / name
        report = json.loads((folder / "report.json").read_text())
        assert report["model"] == str(folder / "rl_model")
        assert float(row["pnl_book"]) == pytest.approx(report["evaluation"]["book"]["pnl"])
    assert (out / "baselines" / "episodes_eval_fair_value_book_s1001.csv").is_file()


def overlap(trials: list[dict]) -> bool:
    return max(t["started"] for t in trials) < min(t["finished"] for t in trials)


@pytest.fixture(scope="module")
def local_ray_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("ray_local")
    return out, sweep(out, "--agent-seeds", "1,2")


def test_two_trial_sweep_runs_in_parallel_on_local_ray(local_ray_sweep: tuple[Path, subprocess.CompletedProcess]) -> None:
    out, proc = local_ray_sweep
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "trials run as Ray tasks on a local Ray instance" in proc.stdout
    trials = results(out)["trials"]
    assert [t["trial"] for t in trials] == ["t00_a1", "t01_a2"]
    assert trials[0]["pid"] != trials[1]["pid"] != os.getpid()
    assert overlap(trials), trials  # both trained at the same time, in two Ray workers
    assert_trial_folders(out, ["t00_a1", "t01_a2"])
    assert "sweep wall time" in proc.stdout and "held-out net PnL over 2 agent seeds" in proc.stdout


def test_without_ray_the_same_command_runs_the_trials_one_after_another(
    tmp_path: Path, local_ray_sweep: tuple[Path, subprocess.CompletedProcess]
) -> None:
    board = tmp_path / "tb"
    proc = sweep(tmp_path / "out", "--agent-seeds", "1,2", "--tensorboard", str(board), prelude=HIDE_RAY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Ray is not installed (pip install -e '.[scale]'), so the 2 trials run one after another" in proc.stdout
    trials = results(tmp_path / "out")["trials"]
    assert not overlap(trials) and trials[0]["pid"] == trials[1]["pid"]
    assert_trial_folders(tmp_path / "out", ["t00_a1", "t01_a2"])
    for name in ("t00_a1", "t01_a2"):  # each trial's training curves under --tensorboard, one run per trial
        events = EventAccumulator(str(board / name / "rl"))
        events.Reload()
        assert [e.step for e in events.Scalars("windows/pnl")] == [1]
    on_ray = {t["trial"]: t["report"]["evaluation"]["book"] for t in results(local_ray_sweep[0])["trials"]}
    for trial in trials:  # the same seeds give the same held-out windows, wherever they ran
        assert trial["report"]["evaluation"]["book"]["window_pnls"] == on_ray[trial["trial"]]["window_pnls"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_head() -> Iterator[tuple[str, Path, dict]]:
    """A one-node Ray cluster on loopback (`ray start --head --block`), stopped with its process group."""
    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths live under it
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # bind 127.0.0.1, not the network address
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    port = free_port()
    log = (temp / "head.log").open("w")
    head = subprocess.Popen(
        [str(Path(sys.executable).parent / "ray"), "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
         "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}",
         f"--ray-client-server-port={free_port()}", f"--dashboard-port={free_port()}",
         f"--dashboard-agent-listen-port={free_port()}", "--block"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while "Ray runtime started" not in (temp / "head.log").read_text():
            assert head.poll() is None and time.monotonic() < deadline, (temp / "head.log").read_text()[-3000:]
            time.sleep(0.5)
        yield f"127.0.0.1:{port}", temp, env
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # the head and every process it started share its group
        with contextlib.suppress(subprocess.TimeoutExpired):
            head.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):  # what ignored SIGTERM
            os.killpg(head.pid, signal.SIGKILL)
        head.wait()
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def test_search_runs_on_an_existing_cluster_with_ray_address(tmp_path: Path, ray_head: tuple[str, Path, dict]) -> None:
    address, temp, env = ray_head
    proc = sweep(tmp_path, "--ray-address", address, "--search", "optuna", "--samples", "2",
                 "--space", "actor_lr=1e-5:1e-3:log", "--space", "buffer_size=128,256",
                 "--val-seeds", "2001", "--val-windows", "1", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"trials run as Ray tasks on the Ray cluster at {address} (2 CPUs" in proc.stdout
    trials = results(tmp_path)["trials"]
    assert len(trials) == 2
    for trial in trials:
        settings = trial["report"]["settings"]
        assert 1e-5 <= settings["actor_lr"] <= 1e-3 and settings["buffer_size"] in (128, 256)
        assert trial["report"]["val_pnl"] == trial["report"]["training"][-1]["val_pnl"]
    assert_trial_folders(tmp_path, [t["trial"] for t in trials])
    assert "best on validation:" in proc.stdout
    # the cluster's own workers ran them, on this repository's code shipped as the job's working_dir
    assert list(temp.glob("session_*/runtime_resources/working_dir_files/*/benchmarks/sweep.py"))


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--search", "optuna", "--space", "actor_lr=1e-5:1e-3:log"], "give --val-seeds"),
        (["--grid", "banana=1,2"], "'banana' is not a PPOConfig field"),
        (["--grid", "buffer_size=big"], "buffer_size=big: expected a whole number"),
        (["--search", "random", "--space", "actor_lr=1e-3:1e-5", "--val-seeds", "7"], "needs LOW < HIGH"),
        (["--space", "gamma=0.9:1"], "--space is searched with --search"),
        (["--no-ray", "--ray-address", "127.0.0.1:1"], "leave out --no-ray"),
        (["--resume-check"], "--resume-check and --load run in one process"),
        (["--train-source", "/nonexistent/recordings"], "--train-source /nonexistent/recordings"),
        (["--train-source", "sim", "--train-source", "x", "--search", "random", "--space", "gamma=0.9:1",
          "--val-seeds", "7"], "give one --train-source"),
    ],
)
def test_bad_sweep_input_is_one_sentence_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str], needle: str
) -> None:
    assert sweep_main([*TINY, "--out", str(tmp_path), *args]) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], lines
    assert not list(tmp_path.iterdir())  # nothing ran


def test_a_failed_trial_is_reported_and_the_sweep_still_writes_its_summary(tmp_path: Path) -> None:
    proc = sweep(tmp_path, "--no-ray", "--grid", "batch_size=0")  # the first PPO update cannot split its buffer
    assert proc.returncode == 1
    assert "sweep: 1 job(s) failed: t00_a0_batch_size=0" in proc.stderr and "Traceback" not in proc.stderr
    assert "t00_a0_batch_size=0  failed: ValueError" in proc.stdout
    with (tmp_path / "summary.csv").open(newline="") as fh:
        (row,) = list(csv.DictReader(fh))
    assert row["error"].startswith("ValueError") and row["pnl_book"] == ""
    assert (tmp_path / "baselines" / "report.json").is_file()  # the jobs that worked kept their files


def test_search_without_ray_names_the_extra_to_install(tmp_path: Path) -> None:
    proc = sweep(tmp_path, "--search", "optuna", "--space", "actor_lr=1e-5:1e-3:log", "--val-seeds", "7",
                 prelude=HIDE_RAY)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "--search samples with Ray Tune's OptunaSearch: pip install -e '.[scale]'"


def test_training_sources_are_a_sweep_dimension_evaluated_on_the_same_held_out_seeds(tmp_path: Path) -> None:
    from sim.source import SimSource
    from streamers.recording import Recorder

    recording = tmp_path / "rec.jsonl"
    source = SimSource(77, assets=("BTC",), background=False)
    recorder = Recorder(str(recording))
    for frame in source.iter_frames():  # one complete window, its settlement, a minute of the next
        if frame.t > source.start_time + 900 + 60:
            break
        recorder.write(frame)
    recorder.close()
    out = tmp_path / "out"
    proc = sweep(out, "--no-ray", "--train-source", "sim", "--train-source", str(recording))
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = {t["trial"]: t["report"] for t in results(out)["trials"]}
    assert set(trials) == {"t00_sim_a0", "t01_rec1_a0"}
    assert trials["t00_sim_a0"]["source"] == "sim" and trials["t01_rec1_a0"]["source"] == str(recording)
    (row,) = trials["t01_rec1_a0"]["training"]
    assert row["recordings"] == str(recording) and row["windows"] == 1 and row["library"]["windows_complete"] == 1
    assert "seed" in trials["t00_sim_a0"]["training"][0]  # trained on the simulator's training seed instead
    for report in trials.values():  # both judged on the same held-out window
        assert report["evaluation"]["book"]["windows"] == 1
    assert f"trained on {recording}" in proc.stdout
