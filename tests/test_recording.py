"""Recorder, read_frames and a one-file LibrarySource: round trips (plain and gzip), crash leftovers, clear errors, pacing."""

import asyncio
import gzip
import os
import time

import orjson
import pytest

from streamers.frames import FEED_DISCOVERY, FEED_FUTURES_MARKET, FEED_POLYMARKET, FEED_RTDS, Frame
from streamers.library import Library, LibrarySource
from streamers.recording import Recorder, RecordingError, read_frames

FRAMES = [
    Frame(1767225600.0, FEED_DISCOVERY, '[{"asset":"BTC","condition_id":"0xaaa"}]'),
    Frame(1767225600.125, FEED_POLYMARKET, "PONG"),
    Frame(1767225600.25, FEED_FUTURES_MARKET, '{"stream":"btcusdt@aggTrade","data":{"p":"1","q":"2","m":true}}'),
    Frame(1767225601.5, FEED_RTDS, 'unicode é ✓ and "quotes"\nand a newline'),
]


def _record(path: str, frames: list[Frame] = FRAMES) -> None:
    rec = Recorder(path)
    for f in frames:
        rec.write(f)
    rec.close()


def _source(path: str, speed: float | str = "max", **kw) -> LibrarySource:
    return LibrarySource(Library.open(path), speed, **kw)


async def _replay(src: LibrarySource) -> list[Frame]:
    return [f async for f in src.frames()]


@pytest.mark.parametrize("name", ["rec.jsonl", "rec.jsonl.gz"])
def test_recorder_and_replay_round_trip_frames_exactly(tmp_path, name):
    path = str(tmp_path / name)
    _record(path)
    assert list(read_frames(path)) == FRAMES
    src = _source(path, "max")
    assert src.virtual is True
    assert asyncio.run(_replay(src)) == FRAMES


def test_gz_name_writes_gzip_and_lines_follow_the_documented_format(tmp_path):
    path = str(tmp_path / "rec.jsonl.gz")
    _record(path)
    with gzip.open(path, "rb") as f:
        first = orjson.loads(f.readline())
    assert first == {"t": 1767225600.0, "feed": "discovery", "msg": FRAMES[0].msg}


def test_recorder_flushes_every_second_of_frame_time_so_a_crash_loses_little(tmp_path):
    path = str(tmp_path / "live.jsonl.gz")
    rec = Recorder(path)
    for i in range(30):
        rec.write(Frame(1000.0 + i * 0.1, FEED_POLYMARKET, "PONG"))
    # never closed, as after kill -9: what was flushed reads back despite the missing gzip trailer
    got = list(read_frames(path))
    assert 10 <= len(got) < 30 and got == [Frame(1000.0 + i * 0.1, FEED_POLYMARKET, "PONG") for i in range(len(got))]
    rec.close()
    assert len(list(read_frames(path))) == 30


def test_half_written_last_line_is_dropped_but_a_bad_middle_line_is_an_error(tmp_path):
    path = tmp_path / "cut.jsonl"
    _record(str(path))
    path.write_bytes(path.read_bytes() + b'{"t": 1767225602.0, "feed": "polymarket_mar')
    assert list(read_frames(str(path))) == FRAMES
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"t": 1.0, "feed": "polymarket_market", "msg": "PONG"}\nnot a frame\n')
    with pytest.raises(RecordingError, match="line 2"):
        list(read_frames(str(bad)))


@pytest.mark.parametrize(
    "content",
    [b"hello\n", b'{"t": "x", "feed": "polymarket_market", "msg": "PONG"}\n',
     b'{"t": 1.0, "feed": "nope", "msg": "PONG"}\n', b"", b"\n\n"],
)
def test_malformed_or_empty_recording_raises_recording_error_at_construction(tmp_path, content):
    path = tmp_path / "x.jsonl"
    path.write_bytes(content)
    with pytest.raises(RecordingError):
        _source(str(path), "max")


def test_missing_file_and_plain_file_named_gz_give_one_clear_sentence(tmp_path):
    with pytest.raises(RecordingError, match=r"does not exist"):
        _source(str(tmp_path / "absent.jsonl"), "max")
    fake = tmp_path / "fake.jsonl.gz"
    fake.write_bytes(b'{"t": 1.0, "feed": "polymarket_market", "msg": "PONG"}\n')
    with pytest.raises(RecordingError, match="cannot be read"):
        list(read_frames(str(fake)))
    with pytest.raises(RecordingError):
        Recorder(str(tmp_path / "no" / "such" / "dir" / "r.jsonl"))


def test_bad_speed_is_rejected(tmp_path):
    path = str(tmp_path / "r.jsonl")
    _record(path)
    for speed in ("fast", 0, -2):
        with pytest.raises(RecordingError):
            _source(path, speed)


def test_numeric_speed_paces_frames_by_their_recorded_gaps(tmp_path):
    path = str(tmp_path / "r.jsonl")
    _record(path, [Frame(100.0, FEED_POLYMARKET, "PONG"), Frame(100.5, FEED_POLYMARKET, "PONG"),
                   Frame(101.0, FEED_POLYMARKET, "PONG")])
    start = time.monotonic()
    frames = asyncio.run(_replay(_source(path, 5.0)))  # 1.0 s of recording at 5x: about 0.2 s
    elapsed = time.monotonic() - start
    assert len(frames) == 3
    assert 0.18 <= elapsed < 1.0


def test_close_stops_replay(tmp_path):
    path = str(tmp_path / "r.jsonl")
    _record(path)

    async def first_then_close() -> list[Frame]:
        src = _source(path, "max")
        got = []
        async for f in src.frames():
            got.append(f)
            await src.close()
        return got

    assert asyncio.run(first_then_close()) == FRAMES[:1]


def test_replay_skips_unreadable_lines_counts_them_and_warns_once(tmp_path):
    path = tmp_path / "damaged.jsonl"
    _record(str(path))
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join([b"garbage\n", *lines[:2], b'{"t": 1.0}\n', *lines[2:], b"\xff\xfe\n"]))
    warnings: list[str] = []
    src = _source(str(path), "max", warn=warnings.append)
    assert asyncio.run(_replay(src)) == FRAMES
    assert src.bad_lines == 3
    assert len(warnings) == 1 and "line 1 " in warnings[0] and "skipping unreadable lines (3 in 1 file(s)" in warnings[0]


def test_replay_of_a_cut_gzip_warns_naming_the_last_complete_frame(tmp_path):
    path = tmp_path / "live.jsonl.gz"
    rec = Recorder(str(path))
    for i in range(30):
        rec.write(Frame(1000.0 + i * 0.1, FEED_POLYMARKET, "PONG"))
    rec.flush()  # then a crash: no gzip trailer
    warnings: list[str] = []
    frames = asyncio.run(_replay(_source(str(path), "max", warn=warnings.append)))
    assert len(frames) == 30
    assert len(warnings) == 1 and "ends early after line 30," in warnings[0] and "cut short" in warnings[0]
    rec.close()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux) to stand for a full disk")
def test_recorder_on_a_full_disk_keeps_the_cause_and_never_raises():
    rec = Recorder("/dev/full")
    for i in range(20):
        rec.write(Frame(1000.0 + i * 0.5, FEED_POLYMARKET, "PONG"))  # flushes after a second of frame time
    assert rec.error == "cannot write the recording /dev/full: No space left on device"
    rec.write(Frame(1020.0, FEED_POLYMARKET, "PONG"))  # later frames are dropped, not raised
    rec.close()
    assert rec.error == "cannot write the recording /dev/full: No space left on device"
