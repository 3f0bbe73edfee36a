"""Recordings: JSON Lines of `{"t", "feed", "msg"}`, gzip when the name ends in `.gz`.

`Recorder` writes the frames a run receives; `ReplaySource` plays them back as a `Source`;
`read_frames` iterates them. A recording cut short by a crash (truncated gzip stream or a half
written last line) reads back up to the last complete frame. `ReplaySource` also skips unreadable
lines (counted in `bad_lines`) and says once, through `warn`, that it did and where a cut file ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import os
import sys
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import IO

import orjson

from streamers.frames import FEED_SOURCE, FEEDS, Frame

FLUSH_EVERY_S = 1.0  # of frame time: a crash loses at most about this much
FLUSH_EVERY_LINES = 5000  # and at most this many frames in a burst
_YIELD_EVERY = 256  # at speed max, let other tasks run every this many frames


class RecordingError(Exception):
    """A recording that cannot be read or written; the message is one sentence for the user."""


class RecordingCut(RecordingError):
    """The file ends inside a compressed block or cannot be read further: a crash or a copy cut short."""


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
        self.error: str | None = None  # why writing stopped (disk full...); later frames are dropped

    def write(self, frame: Frame) -> None:
        if self._file is None:
            if self.error is not None:
                return
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
        try:
            if self._buffer:
                self._file.write(b"".join(self._buffer))
                self._buffer.clear()
            self._file.flush()
        except OSError as exc:
            self._fail(exc)

    def close(self) -> None:
        self.flush()
        if self._file is None:
            return
        try:
            self._file.close()  # gzip writes its trailer here
        except OSError as exc:
            self._fail(exc)
        self._file = None

    def _fail(self, exc: OSError) -> None:
        """Stop writing, keep the cause; the engine ends the run at its next tick."""
        self.error = f"cannot write the recording {self.path}: {exc.strerror or exc}"
        self._buffer.clear()
        file, self._file = self._file, None
        with contextlib.suppress(OSError):  # the same full disk again; what was written stays readable
            file.close()  # type: ignore[union-attr]

    def __enter__(self) -> Recorder:
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
        except (EOFError, zlib.error):
            raise RecordingCut("the gzip stream is cut short") from None
        except OSError as exc:
            if lineno == 0:
                raise RecordingError(f"Recording {path} cannot be read: {exc}.") from None
            raise RecordingCut(f"it cannot be read further ({exc})") from None


def read_frames(path: str) -> Iterator[Frame]:
    """Every frame of a recording, in order; RecordingError on a missing or malformed file."""
    try:
        for lineno, line, complete in _lines(path):
            if not line.strip():
                continue
            try:
                yield _frame(line, path, lineno)
            except RecordingError:
                if complete:
                    raise
                return  # a half-written last line from a crash
    except RecordingCut:
        return  # a gzip stream cut short by a crash: keep what was read


def _warn_on_stderr(message: str) -> None:
    print(f"[replay] {message}", file=sys.stderr)


class ReplaySource:
    """A recording played back as a Source; `speed` paces frame gaps ("max": no pacing).

    Unreadable lines are skipped and counted in `bad_lines`; a file that ends early (a cut gzip stream,
    a half-written line) ends the replay; each is told once through `warn`.
    """

    virtual = True

    def __init__(
        self, path: str, speed: float | str = "max", warn: Callable[[str], None] = _warn_on_stderr
    ) -> None:
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
        self._warn = warn
        self.bad_lines = 0
        # fail now, with the file name, rather than at the first frame
        first = next(self._read(quiet=True), None)
        if first is None:
            raise RecordingError(f"Recording {path} holds no readable frames.")
        self.bad_lines = 0

    def _read(self, quiet: bool = False) -> Iterator[Frame]:
        """The readable frames; counts and skips bad lines, stops where a cut-short file ends."""
        last_good = 0
        try:
            for lineno, line, complete in _lines(self.path):
                if not line.strip():
                    continue
                try:
                    frame = _frame(line, self.path, lineno)
                except RecordingError as exc:
                    if not complete:
                        raise RecordingCut("its last line is half written") from None
                    self.bad_lines += 1
                    if self.bad_lines == 1 and not quiet:
                        self._warn(f"{str(exc).rstrip('.')}; skipping unreadable lines "
                                   "(counted as feed.bad_lines in the report).")
                    continue
                last_good = lineno
                yield frame
        except RecordingCut as cut:
            if not quiet:
                self._warn(f"Recording {self.path} ends early after line {last_good}, its last complete frame: "
                           f"{cut}; the replay stops there.")

    async def frames(self) -> AsyncIterator[Frame]:
        loop = asyncio.get_running_loop()
        start_wall: float | None = None
        start_t = 0.0
        for n, frame in enumerate(self._read()):
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
