"""`SimSource`: the simulator as a virtual-clock Source (no sockets, as fast as possible).

`frames()` runs the simulator in a child process by default, so generating the market (about 40 % of
a single-core `--speed max` run) overlaps with the engine on a second core; the frames are the same
as `iter_frames()`, which always runs in-process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import os
import pickle
import signal
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import fields
from pathlib import Path
from typing import BinaryIO

from core.frames import ASSETS, FEED_DISCOVERY, FEED_FUTURES_MARKET, Frame
from sim.faults import FaultSpec
from sim.market import SimMarket
from sim.profiles import SimProfile

WARMUP_KLINES = 120  # 1m bars of futures history before start_time (the features need 61)
YIELD_EVERY = 512  # frames between cooperative yields to the event loop
BATCH_FRAMES = 512  # frames per message from the simulator process (one pickle, one pipe write)
_LENGTH = struct.Struct("<I")  # byte length before each pickled batch
_PIPE_LIMIT = 1 << 20  # stream buffer: a couple of batches read ahead, no more
_PIPE_BYTES = 1 << 20  # the OS pipe: fewer, larger reads wake the writer less often


class SimulatorFailed(RuntimeError):
    """The simulator process stopped before the source was closed."""


class SimSource:
    """Frames of `SimMarket(seed)`: first each asset's klines warm-up frame and the discovery list, then
    the venue messages with a discovery frame wherever the market list changes."""

    virtual = True

    def __init__(
        self,
        seed: int,
        assets: Sequence[str] = ASSETS,
        faults: FaultSpec | None = None,
        background: bool = True,
        profile: SimProfile | None = None,
    ) -> None:
        self.market = SimMarket(seed, assets, faults, profile=profile)
        self.profile = self.market.profile
        self.background = background  # False: frames() generates in this process too
        self._spec = (seed, tuple(assets), faults)
        self._closed = False
        self._process: subprocess.Popen[bytes] | None = None
        self._transport: asyncio.ReadTransport | None = None

    @property
    def start_time(self) -> int:
        return self.market.start_time

    @property
    def pid(self) -> int | None:
        """The simulator process while `frames()` runs one (for monitoring its memory), else None."""
        return self._process.pid if self._process is not None else None

    def iter_frames(self) -> Iterator[Frame]:
        """The same frames as `frames()`, synchronously and in this process (benchmarks and tests)."""
        market = self.market
        t0 = float(market.start_time)
        for asset in market.assets:
            symbol = f"{asset.lower()}usdt"
            body = market.klines_rest_body(symbol, None, WARMUP_KLINES)
            yield Frame(t0, FEED_FUTURES_MARKET, '{"stream":"' + symbol + '@klines_rest","data":' + body + "}")
        first = market.discovery_json(t0)
        yield Frame(t0, FEED_DISCOVERY, first)
        for ev in market.timeline():
            if ev.feed == FEED_DISCOVERY and ev.msg == first:
                first = ""  # the list at t0 was already sent
                continue
            yield Frame(ev.t, ev.feed, ev.msg)

    async def frames(self) -> AsyncIterator[Frame]:
        if not self.background:
            for n, frame in enumerate(self.iter_frames(), 1):
                if self._closed:
                    return
                yield frame
                if n % YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # let other tasks (dashboard, signals) run between batches
            return
        # a plain Popen with our own read transport: stopping it needs no await, so it also completes
        # when the generator is finalized during the event loop's shutdown
        process = subprocess.Popen(
            [sys.executable, "-m", "sim.source", *self._worker_args()],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, env=_worker_env(),
        )  # fmt: skip
        self._process = process
        reader = asyncio.StreamReader(limit=_PIPE_LIMIT)
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), process.stdout)
        try:
            while not self._closed:
                try:
                    size = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))[0]
                    blob = await reader.readexactly(size)
                except asyncio.IncompleteReadError:
                    if self._closed:
                        return
                    for _ in range(500):  # the pipe ended: give the process a moment to be reaped
                        if process.poll() is not None:
                            break
                        await asyncio.sleep(0.01)
                    raise SimulatorFailed(f"the simulator process ended (exit code {process.returncode})") from None
                batch = pickle.loads(blob)
                if isinstance(batch, str):
                    raise SimulatorFailed(f"the simulator process failed: {batch}")
                for t, feed, msg in batch:
                    if self._closed:
                        return
                    yield Frame(t, feed, msg)
        finally:
            self._stop_process()

    def _worker_args(self) -> list[str]:
        seed, assets, faults = self._spec
        spec = ",".join(f"{f.name}={getattr(faults, f.name)!r}" for f in fields(FaultSpec)) if faults else ""
        profile = json.dumps(self.profile.to_dict(), separators=(",", ":"))
        return ["--seed", str(seed), "--assets", ",".join(assets), "--faults", spec, "--profile", profile]

    def _stop_process(self) -> None:
        process, transport = self._process, self._transport
        self._process = self._transport = None
        if transport is not None and not transport.is_closing():
            transport.close()
        if process is not None:
            process.kill()  # nothing happens if it already ended
            process.wait()  # reaps it at once: SIGKILL leaves nothing to wait for
            process.stdout.close()  # type: ignore[union-attr]

    async def close(self) -> None:
        self._closed = True
        self._stop_process()


def _worker_env() -> dict[str, str]:
    """This environment with the repository first on the path, wherever the parent was started from."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


def _produce(
    out: BinaryIO, seed: int, assets: tuple[str, ...], faults: FaultSpec | None, profile: SimProfile
) -> None:
    """The simulator process: length-prefixed pickled batches of (t, feed, msg) until the reader goes away."""
    try:
        batch: list[tuple[float, str, str]] = []
        for frame in SimSource(seed, assets, faults, background=False, profile=profile).iter_frames():
            batch.append((frame.t, frame.feed, frame.msg))
            if len(batch) == BATCH_FRAMES:
                blob = pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)
                out.write(_LENGTH.pack(len(blob)) + blob)
                out.flush()
                batch = []
    except BrokenPipeError:
        return  # the engine closed the source or exited
    except Exception as exc:  # shown to the engine as SimulatorFailed
        blob = pickle.dumps(f"{type(exc).__name__}: {exc}")
        out.write(_LENGTH.pack(len(blob)) + blob)
        out.flush()


if __name__ == "__main__":
    # Ctrl+C reaches the whole process group: the engine decides when to stop, then closes the source
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _parser = argparse.ArgumentParser(description="SimSource's simulator process (started by SimSource.frames)")
    _parser.add_argument("--seed", type=int, required=True)
    _parser.add_argument("--assets", required=True)
    _parser.add_argument("--faults", default="")
    _parser.add_argument("--profile", required=True, help="the SimProfile as JSON")
    _args = _parser.parse_args()
    with contextlib.suppress(AttributeError, OSError):  # Linux: a 1 MiB pipe, two batches, not one 64 KiB piece
        fcntl.fcntl(sys.stdout.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
    _produce(sys.stdout.buffer, _args.seed, tuple(_args.assets.split(",")),
             FaultSpec.parse(_args.faults) if _args.faults else None,
             SimProfile.from_dict(json.loads(_args.profile)))
