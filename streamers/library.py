"""A library of recordings (files, folders, globs) replayed as one source, and the sim/recording mix.

Scan: every file is read once, lightly (each line's time and feed, the discovery lists and the header),
for its time range, assets, windows, gaps and unreadable lines, and for how the files join up: the
consecutive parts of one rotated recording continue each other (their restated preludes are skipped);
any other file boundary, and any silence longer than GAP_SECONDS, cuts the data. A window is complete
when one stretch of uncut data holds it from its start to its end; only complete windows are traded,
the others are counted as cut, never half-traded.

Replay: in time order (the default) each recording (a file, or the chain of parts of a rotated one) plays
as one episode, the recordings one after another by their first frame (between two the engine forgets
markets, data and clock); `shuffle_seed` plays every complete window as an episode of its own, in a seeded
random order, from the state a MarketData pass restated WARMUP_SECONDS before it; `epochs` repeats the whole.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import os
import random
import sys
import time
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from streamers.frames import ASSETS, FEED_DISCOVERY, FEED_SOURCE, WINDOW_SECONDS, Episode, Frame
from streamers.market_data import MarketData
from streamers.recording import RECORDING_SUFFIXES, RecordingCut, RecordingError, read_lines

GAP_SECONDS = 10.0  # no frame of any feed for longer than this: the data is cut there
WARMUP_SECONDS = 300.0  # a shuffled window starts this long before its open (the longest feature lookback)
TAIL_SECONDS = 20.0  # ... and ends this long after its close, for the outcome to arrive
_YIELD_EVERY = 256  # at speed max, let other tasks run every this many frames
_TIME_SLACK = 1.0  # frames this far out of order still count as in order (feeds stamped on arrival)


def _warn_on_stderr(message: str) -> None:
    print(f"[replay] {message}", file=sys.stderr)


# ---------------------------------------------------------------- finding and scanning files


def resolve(spec: str) -> list[str]:
    """The recording files named by a file, a folder (searched recursively) or a glob; RecordingError if none."""
    if any(c in spec for c in "*?["):
        paths: list[str] = []
        for match in sorted(glob.glob(spec, recursive=True)):
            paths += _in_folder(match) if os.path.isdir(match) else [match]
        if not paths:
            raise RecordingError(f"No recordings match {spec}.")
        return paths
    if os.path.isdir(spec):
        paths = _in_folder(spec)
        if not paths:
            raise RecordingError(f"The folder {spec} holds no recordings (files ending {' or '.join(RECORDING_SUFFIXES)}).")
        return paths
    if not os.path.exists(spec):
        raise RecordingError(f"Recording {spec} does not exist; pass a file written with --record, a folder or a glob.")
    return [spec]


def _in_folder(folder: str) -> list[str]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        found += [os.path.join(root, f) for f in sorted(files) if f.endswith(RECORDING_SUFFIXES)]
    return found


@dataclass
class FileScan:
    """What one light pass over a recording file found."""

    path: str
    frames: int = 0
    first_t: float | None = None
    last_t: float | None = None
    by_feed: Counter[str] = field(default_factory=Counter)
    bad_lines: int = 0
    first_bad: str | None = None  # the first unreadable line's reason
    cut: str | None = None  # why the file ends early (a half-written last line, a cut gzip stream)
    last_good_line: int = 0
    header: dict | None = None  # the `source` header, when the file starts with one
    prelude_end: int = 0  # byte offset after the header and its restated prelude (where a continuation starts)
    gaps: list[tuple[float, float]] = field(default_factory=list)  # (last frame before, first frame after)
    windows: dict[int, tuple[int, set[str]]] = field(default_factory=dict)  # start -> (end, assets listed)

    @property
    def part(self) -> dict | None:
        """A rotated recording's part: run, index, since, prelude."""
        part = (self.header or {}).get("part")
        return part if isinstance(part, dict) else None

    @property
    def covers_from(self) -> float | None:
        """From when the data is complete: a part's prelude restates the state as of the previous part's end."""
        since = (self.part or {}).get("since")
        return float(since) if isinstance(since, int | float) and self.first_t is not None else self.first_t

    @property
    def assets(self) -> set[str]:
        return set().union(*(a for _, a in self.windows.values())) if self.windows else set()


def scan_file(path: str) -> FileScan:
    """One light pass: times, feeds, header, discovery windows, gaps, unreadable lines."""
    scan = FileScan(path)
    prelude_left = -1  # frames of the restated prelude still to pass (-1: no header seen)
    last_t: float | None = None
    try:
        for end, lineno, frame in read_lines(path):
            if type(frame) is str:
                scan.bad_lines += 1
                scan.first_bad = scan.first_bad or frame
                continue
            scan.last_good_line = lineno
            t = frame.t
            if scan.frames == 0:
                scan.first_t = t
                if frame.feed == FEED_SOURCE:
                    scan.header = _json_object(frame.msg)
                    prelude = (scan.part or {}).get("prelude", 0)
                    prelude_left = prelude if isinstance(prelude, int) else 0
            elif prelude_left >= 0:
                prelude_left -= 1
            if prelude_left == 0 or scan.frames == 0:
                scan.prelude_end = end
            scan.frames += 1
            scan.by_feed[frame.feed] += 1
            if last_t is not None and t - last_t > GAP_SECONDS:
                scan.gaps.append((last_t, t))
            if last_t is None or t > last_t:
                last_t = t
            if frame.feed == FEED_DISCOVERY:
                _add_windows(scan.windows, frame.msg)
    except RecordingCut as cut:
        scan.cut = str(cut)
    scan.last_t = last_t
    if scan.header is None:
        scan.prelude_end = 0
    return scan


def _json_object(text: str) -> dict | None:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _add_windows(windows: dict[int, tuple[int, set[str]]], msg: str) -> None:
    try:
        rows = orjson.loads(msg)
        for row in rows:
            start, end, asset = int(row["start"]), int(row["end"]), str(row["asset"])
            windows.setdefault(start, (end, set()))[1].add(asset)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return  # the replay's MarketData rejects and counts it


def _continues(prev: FileScan, cur: FileScan) -> bool:
    """Whether `cur` is the next part of the same rotated recording as `prev`, with no gap in between."""
    a, b = prev.part, cur.part
    if a is None or b is None or prev.cut is not None or prev.last_t is None or cur.first_t is None:
        return False
    return (a.get("run") == b.get("run") and b.get("index") == (a.get("index") or 0) + 1
            and -_TIME_SLACK <= cur.first_t - prev.last_t <= GAP_SECONDS)


def _spans(files: Sequence[FileScan], stitched: Sequence[bool]) -> list[tuple[float, float]]:
    """The stretches of uncut data: split at gaps and at file boundaries that are not continuations."""
    spans: list[tuple[float, float]] = []
    for scan, joined in zip(files, stitched, strict=True):
        if scan.first_t is None or scan.last_t is None:
            continue
        start = scan.covers_from if not joined else scan.first_t
        pieces = []
        for before, after in scan.gaps:
            pieces.append((start, before))
            start = after
        pieces.append((start, scan.last_t))
        if joined and spans:
            spans[-1] = (spans[-1][0], pieces[0][1])
            pieces = pieces[1:]
        spans += pieces
    return spans


def _classify(windows: dict[int, tuple[int, set[str]]], spans: Sequence[tuple[float, float]]) -> tuple[list[int], list[int]]:
    """(complete, partial) window starts: complete when one span holds the window, partial when data only touches it."""
    complete, partial = [], []
    for start in sorted(windows):
        end = windows[start][0]
        if any(a <= start and b >= end for a, b in spans):
            complete.append(start)
        elif any(a < end and b > start for a, b in spans):
            partial.append(start)
    return complete, partial


@dataclass
class _Group:
    """One recording: a file, or the consecutive parts of a rotated one; it plays as one episode."""

    files: list[int]
    stitched: list[bool]
    spans: list[tuple[float, float]]
    windows: dict[int, tuple[int, set[str]]]
    complete: list[int]
    partial: list[int]


# ---------------------------------------------------------------- the library


class Library:
    """Recording files in time order, how they join up, and which windows they hold completely."""

    def __init__(self, scans: Sequence[FileScan]) -> None:
        self.empty = [s for s in scans if s.frames == 0]
        self.files = sorted((s for s in scans if s.frames), key=lambda s: (s.first_t, s.path))
        if not self.files:
            names = ", ".join(s.path for s in scans[:3]) + (", ..." if len(scans) > 3 else "")
            raise RecordingError(f"Recording {names} holds no readable frames." if len(scans) == 1
                                 else f"None of the recordings ({names}) holds a readable frame.")
        self.groups: list[_Group] = []
        for i, scan in enumerate(self.files):
            g = next((g for g in self.groups if _continues(self.files[g.files[-1]], scan)), None)
            if g is None:
                g = _Group([], [], [], {}, [], [])
                self.groups.append(g)
            g.stitched.append(bool(g.files))
            g.files.append(i)
            for start, (end, assets) in scan.windows.items():
                g.windows.setdefault(start, (end, set()))[1].update(assets)
        for g in self.groups:
            g.spans = _spans([self.files[i] for i in g.files], g.stitched)
            g.complete, g.partial = _classify(g.windows, g.spans)

    @classmethod
    def open(cls, spec: str | Sequence[str]) -> Library:
        """Scan the files named by a path, folder or glob (or several)."""
        specs = [spec] if isinstance(spec, str) else list(spec)
        return cls([scan_file(p) for s in specs for p in resolve(s)])

    @property
    def windows_complete(self) -> int:
        return sum(len(g.complete) for g in self.groups)

    @property
    def windows_cut(self) -> int:
        """Windows that some recording touches but none holds whole (one cut across two files counts once)."""
        complete = {start for g in self.groups for start in g.complete}
        return len({start for g in self.groups for start in g.partial} - complete)

    @property
    def bad_lines(self) -> int:
        return sum(s.bad_lines for s in self.files)

    @property
    def assets(self) -> tuple[str, ...]:
        found = set().union(*(s.assets for s in self.files))
        return tuple(a for a in ASSETS if a in found)

    def complete_windows(self) -> list[tuple[int, int]]:
        """(start, end) of every complete window, in time order (a window held by two groups counts twice)."""
        return sorted((start, g.windows[start][0]) for g in self.groups for start in g.complete)

    def warnings(self) -> list[str]:
        """One sentence per problem a replay should tell about: unreadable lines, files that end early, empty files."""
        out = []
        bad = [s for s in self.files if s.bad_lines]
        if bad:
            out.append(f"{bad[0].first_bad}; skipping unreadable lines ({self.bad_lines} in {len(bad)} file(s), "
                       "counted as feed.bad_lines in the report).")
        out += [f"Recording {s.path} ends early after line {s.last_good_line}, its last complete frame: {s.cut}; "
                "its replay stops there." for s in self.files if s.cut]
        out += [f"Recording {s.path} holds no readable frames; skipped." for s in self.empty]
        return out

    def info(self) -> dict:
        """Per file (as if replayed alone) and in total: what `python -m streamers.recording info` prints."""
        files = []
        for scan in sorted(self.files + self.empty, key=lambda s: s.path):
            spans = _spans([scan], [False])
            complete, partial = _classify(scan.windows, spans)
            files.append({
                "path": scan.path, "first": scan.first_t, "last": scan.last_t, "assets": sorted(scan.assets),
                "windows_complete": len(complete), "windows_partial": len(partial),
                "frames": scan.frames, "frames_by_feed": dict(sorted(scan.by_feed.items())),
                "gaps": [{"after": a, "seconds": round(b - a, 3)} for a, b in scan.gaps],
                "bad_lines": scan.bad_lines, "ends_early": scan.cut, "part": scan.part,
            })
        by_feed: Counter[str] = Counter()
        for scan in self.files:
            by_feed.update(scan.by_feed)
        gaps = [{"after": a, "seconds": round(b - a, 3)} for g in self.groups for (_, a), (b, _) in
                zip(g.spans, g.spans[1:], strict=False)]  # between the uncut stretches of one recording
        total = {
            "files": len(self.files) + len(self.empty), "first": self.files[0].first_t,
            "last": max(s.last_t for s in self.files),  # type: ignore[type-var]
            "assets": list(self.assets), "windows_complete": self.windows_complete, "windows_partial": self.windows_cut,
            "frames": sum(by_feed.values()), "frames_by_feed": dict(sorted(by_feed.items())),
            "recordings": len(self.groups), "gaps": gaps, "bad_lines": self.bad_lines,
            "files_ending_early": sum(1 for s in self.files if s.cut),
        }
        return {"files": files, "total": total}


# ---------------------------------------------------------------- reading frames back


def _frames_from(path: str, offset: int) -> Iterator[tuple[int, Frame]]:
    """(byte offset after it, frame) from a byte offset: unreadable lines skipped (the scan counted them),
    ending quietly where the file is cut (the scan said so)."""
    try:
        for end, _, frame in read_lines(path, offset):
            if type(frame) is not str:
                yield end, frame  # type: ignore[misc]
    except RecordingCut:
        return


@dataclass
class _Start:
    """Where a window's episode starts: the state restated there, then the frames from a file offset."""

    file: int
    offset: int
    restated: bytes  # zlib of the restated frames as JSON


class LibrarySource:
    """A library replayed as episodes (see the module doc); `speed` paces frame gaps ("max": no pacing)."""

    virtual = True

    def __init__(
        self, library: Library, speed: float | str = "max", epochs: int = 1, shuffle_seed: int | None = None,
        warn: Callable[[str], None] = _warn_on_stderr,
    ) -> None:
        if speed != "max":
            try:
                speed = float(speed)
            except ValueError:
                raise RecordingError(f"Replay speed {speed!r} is not a number or 'max'.") from None
            if not speed > 0.0:
                raise RecordingError(f"Replay speed {speed} must be above 0.")
        if epochs < 1:
            raise RecordingError(f"Epochs must be 1 or more, got {epochs}.")
        self.library = library
        self.speed = speed
        self.epochs = epochs
        self.shuffle_seed = shuffle_seed
        self.bad_lines = library.bad_lines
        self.episodes_played = 0
        self._rate = None if speed == "max" else float(speed)
        self._closed = False
        self._starts: dict[tuple[int, int], _Start] | None = None  # (group, window start) -> where it starts
        for message in library.warnings():
            warn(message)

    def summary(self) -> dict:
        """The report's `library` entry."""
        lib = self.library
        return {
            "files": len(lib.files), "windows_complete": lib.windows_complete, "windows_cut": lib.windows_cut,
            "bad_lines": lib.bad_lines, "epochs": self.epochs, "shuffle_seed": self.shuffle_seed,
            "episodes": self.episodes_played, "first": lib.files[0].first_t,
            "last": max(s.last_t for s in lib.files),  # type: ignore[type-var]
        }

    async def episodes(self) -> AsyncIterator[Episode]:
        if self.shuffle_seed is None:
            for _ in range(self.epochs):
                for g in self.library.groups:
                    if self._closed:
                        return
                    self.episodes_played += 1
                    yield Episode(self._paced(self._group_frames(g)), _complete_in(g))
            return
        for key in self.window_order():
            if self._closed:
                return
            yield self.window_episode(key)

    def window_order(self) -> Iterator[tuple[int, int]]:
        """(group, window start) of every complete window, epoch after epoch: in time order, or shuffled
        afresh each epoch by one generator seeded with `shuffle_seed` (the same seed, the same order)."""
        keys = sorted(((gi, start) for gi, g in enumerate(self.library.groups) for start in g.complete),
                      key=lambda k: (k[1], k[0]))
        rng = None if self.shuffle_seed is None else random.Random(self.shuffle_seed)
        for _ in range(self.epochs):
            order = list(keys)
            if rng is not None:
                rng.shuffle(order)
            yield from order

    def window_episode(self, key: tuple[int, int]) -> Episode:
        """One complete window as an episode of its own: restated state WARMUP_SECONDS before, then its frames."""
        if self._starts is None:
            self._starts = self._restate_starts()
        gi, start = key
        g = self.library.groups[gi]
        end = g.windows[start][0]
        self.episodes_played += 1
        return Episode(self._paced(self._window_frames(g, self._starts[key], end + TAIL_SECONDS)),
                       lambda s, e, want=start: s == want)

    async def frames(self) -> AsyncIterator[Frame]:
        """Every episode's frames, one after the other (time goes back between episodes)."""
        async for episode in self.episodes():
            async for frame in episode.frames:
                yield frame

    async def close(self) -> None:
        self._closed = True

    # ---- frame streams -------------------------------------------------------------------------

    def _group_frames(self, g: _Group) -> Iterator[Frame]:
        for i, joined in zip(g.files, g.stitched, strict=True):
            scan = self.library.files[i]
            for _, frame in _frames_from(scan.path, scan.prelude_end if joined else 0):
                yield frame

    def _window_frames(self, g: _Group, at: _Start, stop: float) -> Iterator[Frame]:
        for t, feed, msg in orjson.loads(zlib.decompress(at.restated)):
            yield Frame(t, feed, msg)
        pos = g.files.index(at.file)
        offset = at.offset
        while True:
            for _, frame in _frames_from(self.library.files[g.files[pos]].path, offset):
                if frame.t > stop:
                    return
                yield frame
            pos += 1
            if pos >= len(g.files) or not g.stitched[pos]:
                return
            offset = self.library.files[g.files[pos]].prelude_end

    async def _paced(self, frames: Iterator[Frame]) -> AsyncIterator[Frame]:
        loop = asyncio.get_running_loop()
        start_wall: float | None = None
        start_t = 0.0
        for n, frame in enumerate(frames):
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

    def _restate_starts(self) -> dict[tuple[int, int], _Start]:
        """One MarketData pass over the library in time order: the state WARMUP_SECONDS before each complete window."""
        starts: dict[tuple[int, int], _Start] = {}
        for gi, g in enumerate(self.library.groups):
            targets = []
            for start in g.complete:
                span_start = next(a for a, b in g.spans if a <= start and b >= g.windows[start][0])
                targets.append((max(start - WARMUP_SECONDS, span_start), start))
            targets.sort()
            if not targets:
                continue
            md = MarketData(ASSETS)
            k = 0
            for i, joined in zip(g.files, g.stitched, strict=True):
                scan = self.library.files[i]
                offset = scan.prelude_end if joined else 0
                for end, frame in _frames_from(scan.path, offset):
                    while k < len(targets) and frame.t >= targets[k][0]:
                        t, window = targets[k]
                        restated = [(f.t, f.feed, f.msg) for f in md.restate(t, since=t)]
                        starts[(gi, window)] = _Start(i, offset, zlib.compress(orjson.dumps(restated), 1))
                        k += 1
                    md.handle(frame)
                    offset = end
        return starts


def _complete_in(g: _Group) -> Callable[[int, int], bool]:
    complete = frozenset(g.complete)
    return lambda start, end: start in complete


# ---------------------------------------------------------------- the simulator and recordings, mixed


class MixSource:
    """Training episodes that alternate simulator windows and recorded windows, `sim_share` of them simulated.

    Each recorded window is an episode of its own (time order, or shuffled as the library source says);
    each simulated window is a fresh simulator run, `make_sim(i)` for the i-th, played for one window.
    The mix ends when the recorded windows (times the library's epochs) are used up.
    """

    virtual = True

    def __init__(self, recorded: LibrarySource, make_sim: Callable[[int], Any], sim_share: float) -> None:
        if not 0.0 <= sim_share < 1.0:
            raise RecordingError(f"The simulator's share must be at least 0 and below 1, got {sim_share}.")
        self.recorded = recorded
        self.make_sim = make_sim
        self.sim_share = sim_share
        self.bad_lines = recorded.bad_lines
        self.sim_windows = 0
        self.recorded_windows = 0
        self._sim: Any = None
        self._closed = False

    def summary(self) -> dict:
        return {**self.recorded.summary(), "sim_share": self.sim_share, "sim_windows": self.sim_windows,
                "recorded_windows": self.recorded_windows}

    async def episodes(self) -> AsyncIterator[Episode]:
        keys = self.recorded.window_order()
        while not self._closed:
            # a simulated window whenever that keeps the simulated share of windows at or below sim_share
            if self.sim_windows + 1 <= self.sim_share * (self.sim_windows + self.recorded_windows + 1):
                yield self._sim_episode()
                continue
            key = next(keys, None)
            if key is None:
                return
            self.recorded_windows += 1
            yield self.recorded.window_episode(key)

    def _sim_episode(self) -> Episode:
        sim = self._sim = self.make_sim(self.sim_windows)
        self.sim_windows += 1
        start = int(sim.start_time)
        return Episode(self._sim_frames(sim, start + WINDOW_SECONDS + TAIL_SECONDS), lambda s, e: s == start)

    async def _sim_frames(self, sim: Any, stop: float) -> AsyncIterator[Frame]:
        try:
            async for frame in sim.frames():
                if frame.t > stop or self._closed:
                    return
                yield frame
        finally:
            await sim.close()

    async def close(self) -> None:
        self._closed = True
        await self.recorded.close()
        if self._sim is not None:
            await self._sim.close()


# ---------------------------------------------------------------- python -m streamers.recording info


def _when(t: float | None, with_date: bool = True) -> str:
    if t is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S" if with_date else "%H:%M:%S", time.gmtime(t))


def _feeds(by_feed: dict[str, int]) -> str:
    return ", ".join(f"{feed} {n:,}" for feed, n in sorted(by_feed.items(), key=lambda kv: -kv[1]))


def format_info(info: dict) -> str:
    """The human-readable `info` report."""
    lines = []
    for f in info["files"]:
        lines.append(f["path"])
        if not f["frames"]:
            lines.append("  no readable frames")
            continue
        part = f["part"]
        part_text = f", part {part.get('index')} of run {part.get('run')}" if part else ""
        lines.append(f"  time     {_when(f['first'])} .. {_when(f['last'])} UTC "
                     f"({(f['last'] - f['first']) / 60:.1f} min{part_text})")
        lines.append(f"  assets   {', '.join(f['assets']) or '-'}")
        lines.append(f"  windows  {f['windows_complete']} complete, {f['windows_partial']} partial (replayed alone)")
        lines.append(f"  frames   {f['frames']:,}: {_feeds(f['frames_by_feed'])}")
        gaps = f["gaps"]
        lines.append(f"  gaps     none longer than {GAP_SECONDS:g} s" if not gaps else
                     f"  gaps     {len(gaps)} longer than {GAP_SECONDS:g} s: " +
                     ", ".join(f"{_when(g['after'], False)} ({g['seconds']:.0f} s)" for g in gaps[:5]) +
                     (", ..." if len(gaps) > 5 else ""))
        bad = f"  unreadable lines {f['bad_lines']}"
        lines.append(bad + (f"; ends early: {f['ends_early']}" if f["ends_early"] else ""))
    t = info["total"]
    lines.append("")
    lines.append(f"total: {t['files']} file(s), {_when(t['first'])} .. {_when(t['last'])} UTC, "
                 f"assets {', '.join(t['assets']) or '-'}")
    lines.append(f"  windows  {t['windows_complete']} complete, {t['windows_partial']} partial (cut by a file "
                 "boundary or a gap: skipped, never half-traded)")
    lines.append(f"  frames   {t['frames']:,}: {_feeds(t['frames_by_feed'])}")
    lines.append(f"  pieces   {t['recordings']} recording(s) (a file, or the consecutive parts of one rotated "
                 f"recording: each replays as one stream), {len(t['gaps'])} gap(s) over {GAP_SECONDS:g} s inside them")
    lines.append(f"  unreadable lines {t['bad_lines']}; files ending early {t['files_ending_early']}")
    return "\n".join(lines)


class _OneSentence(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one sentence on stderr and exit 2, no usage dump
        print(f"updown: {message} (see python -m streamers.recording info --help)", file=sys.stderr)
        raise SystemExit(2)


def info_main(argv: Sequence[str] | None = None) -> int:
    p = _OneSentence(prog="python -m streamers.recording", description="Inspect recordings.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_OneSentence)
    info = sub.add_parser("info", help="per file and in total: time range, assets, windows, frames, gaps, bad lines")
    info.add_argument("paths", nargs="+", metavar="PATH", help="recording files, folders or globs")
    info.add_argument("--json", action="store_true", help="print JSON for scripts")
    args = p.parse_args(argv)
    try:
        library = Library.open(args.paths)
    except RecordingError as exc:
        print(f"updown: {exc}", file=sys.stderr)
        return 2
    report = library.info()
    print(json.dumps(report, indent=2) if args.json else format_info(report))
    return 0
