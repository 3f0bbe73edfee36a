"""Recordings: JSON Lines of `{"t", "feed", "msg"}`, gzip when the name ends in `.gz`.

`Recorder` writes the frames a run receives; `ReplaySource` plays them back as a `Source`;
`read_frames` iterates them. A recording cut short by a crash (truncated gzip stream or a half
written last line) reads back up to the last complete frame.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import IO

import orjson

from streamers.frames import FEED_SOURCE, FEEDS, Frame

RECORDING_SUFFIXES = (".jsonl.gz", ".jsonl")  # what a folder of recordings is searched for
FLUSH_EVERY_S = 1.0  # of frame time: a crash loses at most about this much
FLUSH_EVERY_LINES = 5000  # and at most this many frames in a burst
_YIELD_EVERY = 256  # at speed max, let other tasks run every this many frames


class RecordingError(Exception):
    """A recording that cannot be read or written; the message is one sentence for the user."""


def _open_write(path: str) -> IO[bytes]:
    if path.endswith(".gz"):
        return gzip.open(path, "wb", compresslevel=6)
    return open(path, "wb")


def _open_read(path: str) -> IO[bytes]:
    if not os.path.exists(path):
        raise RecordingError(f"Recording {path} does not exist; pass the path of a file written with --record.")
    if os.path.isdir(path):
        raise RecordingError(f"Recording {path} is a directory; pass the path of a file written with --record.")
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


class Recorder:
    """Appends frames to a recording, buffered and flushed every second of frame time and on close."""

    def __init__(self, path: str, header: str | None = None) -> None:
        self.path = path
        self._header = header  # written as a `source` frame at the time of the first frame
        try:
            self._file: IO[bytes] | None = _open_write(path)
        except OSError as exc:
            raise RecordingError(f"Cannot write recording {path}: {exc.strerror or exc}.") from None
        self._buffer: list[bytes] = []
        self._last_flush_t: float | None = None
        self.frames_written = 0

    def write(self, frame: Frame) -> None:
        if self._file is None:
            raise RecordingError(f"Recording {self.path} is already closed.")
        if self._header is not None:
            header, self._header = self._header, None
            self.write(Frame(frame.t, FEED_SOURCE, header))
        self._buffer.append(orjson.dumps({"t": frame.t, "feed": frame.feed, "msg": frame.msg}) + b"\n")
        self.frames_written += 1
        if self._last_flush_t is None:
            self._last_flush_t = frame.t
        if len(self._buffer) >= FLUSH_EVERY_LINES or frame.t - self._last_flush_t >= FLUSH_EVERY_S:
            self.flush()
            self._last_flush_t = frame.t

    def flush(self) -> None:
        """Push buffered frames to the OS (a gzip sync point, so a crash leaves a readable prefix)."""
        if self._file is None:
            return
        if self._buffer:
            self._file.write(b"".join(self._buffer))
            self._buffer.clear()
        self._file.flush()

    def close(self) -> None:
        if self._file is None:
            return
        self.flush()
        self._file.close()
        self._file = None

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def is_pattern(path: str) -> bool:
    """Whether a --record path holds time fields (`%Y`, `%H`, ...): then it names a rotating series."""
    return "%" in path


def _free_name(path: str) -> str:
    """`path`, or `name-2.jsonl.gz`, `name-3...` when it exists: a restarted recording never overwrites."""
    if not os.path.exists(path):
        return path
    ext = next((e for e in RECORDING_SUFFIXES if path.endswith(e)), os.path.splitext(path)[1])
    stem = path[: len(path) - len(ext)]
    n = 2
    while os.path.exists(candidate := f"{stem}-{n}{ext}"):
        n += 1
    return candidate


class RotatingRecorder:
    """A recording in parts: the file name is `pattern` with its time fields filled from the frame time (UTC),
    and a new part starts when that name changes, so a week of live recording is a folder of hourly files.

    Every part starts with the `source` header, whose `part` says which run it belongs to, its index, `since`
    (the previous part's last frame time: nothing was received in between) and `prelude` (how many frames
    follow that restate the state of that moment, from `restate(t)`: discovery list, book snapshots,
    klines, Chainlink prices). A part therefore replays on its own; a library replaying consecutive parts
    of one run skips the preludes and sees the same frames as one file would hold.
    """

    def __init__(self, pattern: str, header: dict, restate: Callable[[float], list[Frame]]) -> None:
        self.pattern = pattern
        self.paths: list[str] = []  # the parts written so far
        self._header = header
        self._restate = restate
        self._run = uuid.uuid4().hex[:12]
        self._part: Recorder | None = None
        self._name: str | None = None
        self._second: int | None = None
        self._last_t: float | None = None
        self._closed = False
        self.frames_written = 0

    def write(self, frame: Frame) -> None:
        if self._closed:
            raise RecordingError(f"Recording {self.pattern} is already closed.")
        second = int(frame.t)
        if second != self._second:  # the name can only change with the second
            self._second = second
            name = time.strftime(self.pattern, time.gmtime(second))
            if name != self._name:
                self._rotate(name, frame.t)
        self._part.write(frame)  # type: ignore[union-attr]
        self._last_t = frame.t

    def _rotate(self, name: str, t: float) -> None:
        prelude = self._restate(t) if self._part is not None else []
        if self._part is not None:
            self.frames_written += self._part.frames_written
            self._part.close()
        folder = os.path.dirname(name)
        try:
            if folder:
                os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            raise RecordingError(f"Cannot create the folder {folder} for recording {name}: {exc.strerror or exc}.") from None
        path = _free_name(name)
        part = {"run": self._run, "index": len(self.paths), "since": self._last_t, "prelude": len(prelude)}
        self._part = Recorder(path, header=orjson.dumps({**self._header, "part": part}).decode())
        self._name = name
        self.paths.append(path)
        for restated in prelude:
            self._part.write(restated)

    def flush(self) -> None:
        if self._part is not None:
            self._part.flush()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._part is not None:
            self.frames_written += self._part.frames_written
            self._part.close()

    def __enter__(self) -> RotatingRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _frame(line: bytes, path: str, lineno: int) -> Frame:
    try:
        d = orjson.loads(line)
        t, feed, msg = d["t"], d["feed"], d["msg"]
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise RecordingError(f"Recording {path} line {lineno} is not a recorded frame ({exc}).") from None
    if type(t) not in (float, int) or type(msg) is not str or feed not in FEEDS:
        raise RecordingError(f"Recording {path} line {lineno} has a bad time, feed or message.")
    return Frame(float(t), feed, msg)


def _lines(path: str) -> Iterator[tuple[int, bytes, bool]]:
    """(line number, line, complete) where incomplete means the file ended without a newline."""
    with _open_read(path) as f:
        lineno = 0
        try:
            for line in f:
                lineno += 1
                yield lineno, line, line.endswith(b"\n")
        except (EOFError, zlib.error):  # a gzip stream cut short by a crash: keep what was read
            return
        except (gzip.BadGzipFile, OSError) as exc:
            raise RecordingError(f"Recording {path} cannot be read: {exc}.") from None


def read_frames(path: str) -> Iterator[Frame]:
    """Every frame of a recording, in order; RecordingError on a missing or malformed file."""
    for lineno, line, complete in _lines(path):
        if not line.strip():
            continue
        try:
            yield _frame(line, path, lineno)
        except RecordingError:
            if complete:
                raise
            return  # a half-written last line from a crash


class ReplaySource:
    """A recording played back as a Source; `speed` paces frame gaps ("max": no pacing)."""

    virtual = True

    def __init__(self, path: str, speed: float | str = "max") -> None:
        if speed != "max":
            try:
                speed = float(speed)
            except ValueError:
                raise RecordingError(f"Replay speed {speed!r} is not a number or 'max'.") from None
            if not speed > 0.0:
                raise RecordingError(f"Replay speed {speed} must be above 0.")
        self.path = path
        self.speed = speed
        self._rate = None if speed == "max" else float(speed)
        self._closed = False
        # fail now, with the file name, rather than at the first frame
        first = next(read_frames(path), None)
        if first is None:
            raise RecordingError(f"Recording {path} holds no frames.")

    async def frames(self) -> AsyncIterator[Frame]:
        loop = asyncio.get_running_loop()
        start_wall: float | None = None
        start_t = 0.0
        for n, frame in enumerate(read_frames(self.path)):
            if self._closed:
                return
            if self._rate is None:
                if n % _YIELD_EVERY == 0:
                    await asyncio.sleep(0)
            elif start_wall is None:
                start_wall, start_t = loop.time(), frame.t
            else:
                # pace against the start rather than frame to frame, so sleep overshoot does not accumulate
                delay = start_wall + (frame.t - start_t) / self._rate - loop.time()
                if delay > 0.0:
                    await asyncio.sleep(delay)
            yield frame

    async def close(self) -> None:
        self._closed = True


if __name__ == "__main__":
    from streamers.library import info_main

    raise SystemExit(info_main())
