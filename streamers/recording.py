"""Recordings: JSON Lines of `{"t", "feed", "msg"}`, gzip when the name ends in `.gz`.

`Recorder` writes the frames a run receives, `RotatingRecorder` the same in parts named by time;
`read_lines` and `read_frames` read them back. A recording cut short by a crash (truncated gzip
stream or a half written last line) reads back up to the last complete frame. Replaying files,
folders and globs is `streamers.library`; `python -m streamers.recording info PATH...` inspects them.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from typing import IO

import orjson

from streamers.frames import FEED_SOURCE, FEEDS, Frame

RECORDING_SUFFIXES = (".jsonl.gz", ".jsonl")  # what a folder of recordings is searched for
FLUSH_EVERY_S = 1.0  # of frame time: a crash loses at most about this much
FLUSH_EVERY_LINES = 5000  # and at most this many frames in a burst


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
        self._error: str | None = None
        self.frames_written = 0

    @property
    def error(self) -> str | None:
        """Why writing stopped (a full disk, a folder that cannot be made); later frames are dropped."""
        return self._error or (self._part.error if self._part is not None else None)

    def write(self, frame: Frame) -> None:
        if self._closed:
            raise RecordingError(f"Recording {self.pattern} is already closed.")
        if self._error is not None:
            return
        second = int(frame.t)
        if second != self._second:  # the name can only change with the second
            self._second = second
            name = time.strftime(self.pattern, time.gmtime(second))
            if name != self._name:
                self._rotate(name, frame.t)
                if self._error is not None:
                    return
        self._part.write(frame)  # type: ignore[union-attr]
        self._last_t = frame.t

    def _rotate(self, name: str, t: float) -> None:
        prelude = self._restate(t) if self._part is not None else []
        if self._part is not None:
            self.frames_written += self._part.frames_written
            self._part.close()
            self._error = self._part.error
            self._part = None
            if self._error is not None:
                return
        path = _free_name(name)
        folder = os.path.dirname(path)
        try:
            if folder:
                os.makedirs(folder, exist_ok=True)
            part = {"run": self._run, "index": len(self.paths), "since": self._last_t, "prelude": len(prelude)}
            self._part = Recorder(path, header=orjson.dumps({**self._header, "part": part}).decode())
        except (OSError, RecordingError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).rstrip(".")
            self._error = f"cannot start the recording part {path}: {reason}"
            return
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
            self._error = self._error or self._part.error

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


def read_lines(path: str, offset: int = 0) -> Iterator[tuple[int, int, Frame | str]]:
    """(byte offset after the line, line number, its frame or why it cannot be read) from byte `offset` on,
    blank lines left out; RecordingCut where the file ends early (a half-written last line, a cut gzip stream)."""
    with _open_read(path) as f:
        if offset:
            f.seek(offset)  # gzip: decompresses up to there
        end = offset
        lineno = 0
        try:
            for line in f:
                lineno += 1
                end += len(line)
                if not line.strip():
                    continue
                try:
                    yield end, lineno, _frame(line, path, lineno)
                except RecordingError as exc:
                    if not line.endswith(b"\n"):
                        raise RecordingCut("its last line is half written") from None
                    yield end, lineno, str(exc).rstrip(".")
        except (EOFError, zlib.error):
            raise RecordingCut("the gzip stream is cut short") from None
        except OSError as exc:
            if lineno == 0:
                raise RecordingError(f"Recording {path} cannot be read: {exc}.") from None
            raise RecordingCut(f"it cannot be read further ({exc})") from None


def read_frames(path: str) -> Iterator[Frame]:
    """Every frame of a recording, in order, up to where a crash cut it; RecordingError on a missing file or
    an unreadable line (the library's replay skips and counts those instead)."""
    try:
        for _, _, item in read_lines(path):
            if type(item) is str:
                raise RecordingError(item + ".")
            yield item  # type: ignore[misc]
    except RecordingCut:
        return  # a half-written last line or a gzip stream cut short by a crash: keep what was read


if __name__ == "__main__":
    from streamers.library import info_main

    raise SystemExit(info_main())
