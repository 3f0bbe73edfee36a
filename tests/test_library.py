"""Recording libraries built from simulator runs: rotation, stitching, cut windows, order, epochs, shuffling, mix."""

from __future__ import annotations

import asyncio
import gzip
import json
from pathlib import Path

import orjson
import pytest

from engine.clock import VirtualClock
from engine.engine import Engine, EngineConfig
from sim.source import SimSource
from strategies import create_strategy
from streamers.frames import FEED_SOURCE, WINDOW_SECONDS, Frame
from streamers.library import (
    TAIL_SECONDS,
    WARMUP_SECONDS,
    FileScan,
    Library,
    LibrarySource,
    MixSource,
    info_main,
    resolve,
    scan_file,
)
from streamers.market_data import MarketData
from streamers.recording import Recorder, RecordingError, RotatingRecorder, read_frames
from tests.conftest import call_main

ASSETS = ("BTC",)
SEED = 3  # starts at 00:45, so two windows cross an hour
HEADER = {"source": "sim", "assets": list(ASSETS), "seed": SEED}


def sim_frames(seed: int = SEED, windows: int = 2, extra: float = 30.0) -> list[Frame]:
    """The simulator's frames from its start until `windows` windows and `extra` seconds have passed."""
    src = SimSource(seed, ASSETS, background=False)
    stop = src.start_time + windows * WINDOW_SECONDS + extra
    out = []
    for frame in src.iter_frames():
        if frame.t > stop:
            return out
        out.append(frame)
    raise AssertionError("the simulator ended early")


def record(frames: list[Frame], single: Path | None, pattern: str | None) -> RotatingRecorder | None:
    """Record as the engine does: every frame written on receipt, before MarketData applies it."""
    md = MarketData(ASSETS)
    rec = Recorder(str(single), header=json.dumps(HEADER)) if single else None
    rot = RotatingRecorder(pattern, HEADER, md.restate) if pattern else None
    for frame in frames:
        if rec:
            rec.write(frame)
        if rot:
            rot.write(frame)
        md.handle(frame)
    for r in (rec, rot):
        if r:
            r.close()
    return rot


def write_plain(path: Path, frames: list[Frame]) -> None:
    with Recorder(str(path)) as rec:
        for frame in frames:
            rec.write(frame)


def replay(source, log_dir: Path | None = None, markets: int | None = None) -> dict:
    cfg = EngineConfig(size=100.0, assets=ASSETS, log_dir=log_dir, max_windows=markets, strategy_name="fair_value")
    engine = Engine(create_strategy("fair_value", seed=0), source, VirtualClock(), MarketData(ASSETS), cfg)

    async def go() -> dict:
        try:
            return await engine.run()
        finally:
            await source.close()

    return asyncio.run(go())


def decisions_of(report: dict) -> tuple:
    return report["windows"], report["decisions"], report["trades"], round(report["pnl"], 6), report["pnl_by_asset"]


def frames_of(source: LibrarySource) -> list[Frame]:
    async def go() -> list[Frame]:
        return [f async for f in source.frames()]

    return asyncio.run(go())


def quiet(_: str) -> None:
    return None


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    """One simulator run recorded twice: one file, and live-style parts rotated every minute."""
    root = tmp_path_factory.mktemp("library")
    frames = sim_frames()
    single = root / "single.jsonl.gz"
    rot = record(frames, single, str(root / "minutes" / "%H%M.jsonl.gz"))
    return {"root": root, "frames": frames, "single": single, "parts": rot.paths}


def test_rotated_parts_replay_identically_to_the_single_file_recording_of_the_same_run(run):
    parts = run["parts"]
    assert len(parts) > 25  # a part a minute, nearly every one starting mid-window
    library = Library.open(str(Path(parts[0]).parent))
    assert all(g.stitched[1:] == [True] * (len(g.files) - 1) for g in library.groups)
    assert library.windows_complete == 2 and library.windows_cut == 1  # the third window was only begun
    body = [f for f in frames_of(LibrarySource(library, warn=quiet)) if f.feed != FEED_SOURCE]
    assert body == [f for f in read_frames(str(run["single"])) if f.feed != FEED_SOURCE] == run["frames"]
    from_parts = replay(LibrarySource(Library.open(str(Path(parts[0]).parent)), warn=quiet))
    from_single = replay(LibrarySource(Library.open(str(run["single"])), warn=quiet))
    assert from_parts["trades"] > 0 and from_parts["windows"] == 2
    assert decisions_of(from_parts) == decisions_of(from_single)


def test_each_part_starts_with_its_header_and_the_restated_state_and_replays_alone(run):
    parts = run["parts"]
    for index, path in enumerate(parts[:3]):
        first = next(read_frames(path))
        assert first.feed == FEED_SOURCE
        header = json.loads(first.msg)
        assert header["seed"] == SEED and header["part"]["index"] == index
        assert (header["part"]["since"] is None) == (index == 0)
    # an hourly split of the same run: the second hour replays on its own, its first window included,
    # because its prelude restates the books, the klines and the Chainlink price at the window open
    hourly = record(run["frames"], None, str(run["root"] / "hours" / "%H.jsonl.gz"))
    assert len(hourly.paths) == 2
    alone = Library.open(hourly.paths[1])
    first_window = alone.complete_windows()[0][0]
    assert first_window % 3600 == 0 and alone.windows_complete >= 1
    report = replay(LibrarySource(alone, warn=quiet))
    assert report["windows"] == alone.windows_complete and report["decisions"] > 0
    assert report["feed"]["rejected"] == 0


def test_a_window_cut_by_a_gap_or_by_a_file_boundary_is_skipped_and_counted(run, tmp_path):
    frames = run["frames"]
    t0 = frames[0].t
    w1, w2 = t0, t0 + WINDOW_SECONDS
    # two recordings that do not continue each other, cut in the middle of the second window ...
    write_plain(tmp_path / "a.jsonl", [f for f in frames if f.t < w2 + 400])
    write_plain(tmp_path / "b.jsonl", [f for f in frames if f.t >= w2 + 400])
    split = Library.open(str(tmp_path))
    assert split.complete_windows() == [(int(w1), int(w2))] and split.windows_cut == 2
    report = replay(LibrarySource(split, warn=quiet), log_dir=tmp_path / "logs")
    assert report["windows"] == 1
    episodes = Path(report["logs"]["episodes"]).read_text().splitlines()[1:]
    assert episodes and all(row.startswith(_iso(w1)) for row in episodes)
    # ... and one file with 40 silent seconds inside the first window
    (tmp_path / "gap").mkdir()
    write_plain(tmp_path / "gap" / "g.jsonl.gz", [f for f in frames if not w1 + 300 <= f.t < w1 + 340])
    gap = Library.open(str(tmp_path / "gap"))
    assert gap.complete_windows() == [(int(w2), int(w2 + WINDOW_SECONDS))] and gap.windows_cut == 2
    assert [round(b - a) for a, b in gap.files[0].gaps] == [40]


def _iso(t: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(t, datetime.UTC).isoformat()


def test_files_play_in_time_order_whatever_their_names(run, tmp_path):
    frames = run["frames"]
    middle = frames[len(frames) // 2].t
    write_plain(tmp_path / "z_first.jsonl", [f for f in frames if f.t < middle])
    write_plain(tmp_path / "a_second.jsonl", [f for f in frames if f.t >= middle])
    library = Library.open(str(tmp_path / "*.jsonl"))
    assert [Path(s.path).name for s in library.files] == ["z_first.jsonl", "a_second.jsonl"]
    assert frames_of(LibrarySource(library, warn=quiet)) == frames


def test_a_torn_last_line_costs_that_line_only_and_bad_lines_are_counted(run, tmp_path):
    frames = run["frames"]
    middle = frames[len(frames) // 2].t
    first, second = [f for f in frames if f.t < middle], [f for f in frames if f.t >= middle]
    write_plain(tmp_path / "1.jsonl", first)
    torn = tmp_path / "1.jsonl"
    lines = torn.read_bytes().splitlines(keepends=True)
    torn.write_bytes(b"".join(lines[:100]) + b"not a frame\n" + b"".join(lines[100:-1]) + lines[-1][:40])
    write_plain(tmp_path / "2.jsonl", second)
    warnings: list[str] = []
    source = LibrarySource(Library.open(str(tmp_path)), warn=warnings.append)
    assert frames_of(source) == first[:-1] + second  # the power cut took the last line, nothing else
    assert source.bad_lines == 1 and source.library.files[0].cut == "its last line is half written"
    assert len(warnings) == 2 and "skipping unreadable lines (1 in 1 file(s)" in warnings[0] and "ends early after line" in warnings[1]


def test_a_cut_gzip_part_ends_its_file_and_the_library_goes_on(run, tmp_path):
    frames = run["frames"]
    middle = frames[len(frames) // 2].t
    cut = tmp_path / "1.jsonl.gz"
    write_plain(cut, [f for f in frames if f.t < middle])
    cut.write_bytes(cut.read_bytes()[: len(cut.read_bytes()) // 2])
    write_plain(tmp_path / "2.jsonl.gz", [f for f in frames if f.t >= middle])
    library = Library.open(str(tmp_path))
    assert library.files[0].cut == "the gzip stream is cut short"
    got = frames_of(LibrarySource(library, warn=quiet))
    n = library.files[0].frames
    assert got[:n] == frames[:n] and got[n:] == [f for f in frames if f.t >= middle]


def test_epochs_pass_over_the_library_again_with_the_engine_state_forgotten_between(run):
    once = replay(LibrarySource(Library.open(str(run["single"])), warn=quiet))
    twice = replay(LibrarySource(Library.open(str(run["single"])), epochs=2, warn=quiet))
    assert twice["windows"] == 2 * once["windows"] == 4
    assert twice["decisions"] == 2 * once["decisions"]
    assert twice["trades"] == 2 * once["trades"] and twice["pnl"] == pytest.approx(2 * once["pnl"])


def _fake_library(windows: int) -> Library:
    scan = FileScan("fake.jsonl", frames=1, first_t=0.0, last_t=windows * 900.0 + 5.0)
    scan.windows = {k * 900: (k * 900 + 900, {"BTC"}) for k in range(windows)}
    return Library([scan])


def test_shuffled_order_is_a_permutation_per_epoch_and_the_same_for_the_same_seed():
    library = _fake_library(30)
    keys = sorted((0, k * 900) for k in range(30))

    def order(seed: int | None) -> list:
        return list(LibrarySource(library, epochs=2, shuffle_seed=seed, warn=quiet).window_order())

    a = order(7)
    assert a == order(7) and a != order(8)
    assert sorted(a[:30]) == keys and sorted(a[30:]) == keys and a[:30] != a[30:]
    assert order(None) == keys + keys


def test_a_shuffled_window_starts_from_the_restated_state_before_it_and_trades_only_itself(run):
    library = Library.open(str(run["single"]))
    source = LibrarySource(library, shuffle_seed=3, warn=quiet)
    (start, end) = library.complete_windows()[1]
    episode = source.window_episode((0, start))
    frames = frames_of_episode(episode)
    assert frames[0].t == start - WARMUP_SECONDS and frames[-1].t <= end + TAIL_SECONDS
    assert episode.tradable(start, end) and not episode.tradable(start - 900, start)
    report = replay(LibrarySource(Library.open(str(run["single"])), shuffle_seed=3, epochs=2, warn=quiet))
    assert report["windows"] == 4 and report["feed"]["rejected"] == 0 and report["decisions"] > 0


def frames_of_episode(episode) -> list[Frame]:
    async def go() -> list[Frame]:
        return [f async for f in episode.frames]

    return asyncio.run(go())


def test_mix_alternates_simulated_and_recorded_windows(run):
    recorded = LibrarySource(Library.open(str(run["single"])), warn=quiet)
    mix = MixSource(recorded, lambda i: SimSource(500 + i, ASSETS, background=False), sim_share=0.5)
    report = replay(mix)
    assert (mix.recorded_windows, mix.sim_windows) == (2, 2)
    assert report["windows"] == 4 and report["feed"]["rejected"] == 0


def test_rotation_never_overwrites_a_part_an_earlier_run_left(tmp_path):
    existing = tmp_path / "00.jsonl.gz"
    existing.write_bytes(b"keep me")
    rot = RotatingRecorder(str(tmp_path / "%M.jsonl.gz"), HEADER, MarketData(ASSETS).restate)
    rot.write(Frame(3600.0, "polymarket_market", "PONG"))
    rot.close()
    assert existing.read_bytes() == b"keep me" and rot.paths == [str(tmp_path / "00-2.jsonl.gz")]


def test_paths_that_name_no_recording_give_one_sentence(tmp_path):
    with pytest.raises(RecordingError, match="holds no recordings"):
        resolve(str(tmp_path))
    with pytest.raises(RecordingError, match="No recordings match"):
        resolve(str(tmp_path / "*.jsonl.gz"))
    with pytest.raises(RecordingError, match="does not exist"):
        resolve(str(tmp_path / "absent.jsonl"))
    (tmp_path / "empty.jsonl").write_bytes(b"")
    with pytest.raises(RecordingError, match="holds no readable frames"):
        Library.open(str(tmp_path))


def test_info_prints_each_file_and_the_total_and_json_for_scripts(run, tmp_path):
    frames = run["frames"]
    write_plain(tmp_path / "a.jsonl", [f for f in frames if not frames[0].t + 300 <= f.t < frames[0].t + 340])
    with open(tmp_path / "a.jsonl", "ab") as fh:
        fh.write(b"garbage\n")
    out = call_main(info_main, "info", str(tmp_path), "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    (file,) = info["files"]
    assert file["frames"] == len(frames) - sum(1 for f in frames if frames[0].t + 300 <= f.t < frames[0].t + 340)
    assert file["bad_lines"] == 1 and [round(g["seconds"]) for g in file["gaps"]] == [40]
    assert (file["windows_complete"], file["windows_partial"]) == (1, 2) and file["assets"] == ["BTC"]
    assert info["total"]["windows_complete"] == 1 and sum(file["frames_by_feed"].values()) == file["frames"]
    text = call_main(info_main, "info", str(tmp_path / "a.jsonl"))
    assert text.returncode == 0 and "1 complete, 2 partial" in text.stdout and "gaps     1 longer than" in text.stdout
    bad = call_main(info_main, "info", str(tmp_path / "nope"))
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "does not exist" in bad.stderr


def test_scan_counts_frames_per_feed_and_reads_gzip_parts(run):
    scan = scan_file(run["parts"][1])
    assert scan.header is not None and scan.part["index"] == 1
    assert scan.frames == sum(scan.by_feed.values()) and scan.by_feed[FEED_SOURCE] == 1
    with gzip.open(run["parts"][1], "rb") as fh:
        lines = fh.read().splitlines()
    assert scan.frames == len(lines)
    assert orjson.loads(lines[0])["feed"] == FEED_SOURCE


def test_a_part_that_cannot_be_started_stops_the_recording_with_its_reason(tmp_path):
    (tmp_path / "blocker").write_text("a file where a folder should be")
    rot = RotatingRecorder(str(tmp_path / "blocker" / "%H" / "x.jsonl"), HEADER, MarketData(ASSETS).restate)
    rot.write(Frame(3600.0, "polymarket_market", "PONG"))
    rot.write(Frame(3601.0, "polymarket_market", "PONG"))  # dropped, not raised: the engine stops on `error`
    rot.close()
    assert rot.error is not None and rot.error.startswith("cannot start the recording part")
    assert "Not a directory" in rot.error and rot.paths == []


def test_recordings_that_overlap_in_time_play_one_after_the_other(run, tmp_path):
    for name in ("one.jsonl.gz", "two.jsonl.gz"):  # the same hour recorded twice, as by two machines
        (tmp_path / name).write_bytes(run["single"].read_bytes())
    library = Library.open(str(tmp_path))
    assert len(library.groups) == 2 and library.windows_complete == 4 and library.windows_cut == 1
    once = [f for f in read_frames(str(run["single"]))]
    assert frames_of(LibrarySource(library, warn=quiet)) == once + once
