"""SimSource's simulator process: the same frames as in-process, stopped by close, failures surfaced."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal

import pytest

from sim.faults import FaultSpec
from sim.source import SimSource, SimulatorFailed
from streamers.frames import Frame

FAULTS = FaultSpec(garbage=0.01, drop=0.001)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_process_frames_equal_in_process_frames_with_faults() -> None:
    async def take(n: int) -> list[Frame]:
        src = SimSource(7, assets=("ETH", "SOL"), faults=FAULTS)
        got = []
        async for frame in src.frames():
            got.append(frame)
            if len(got) == n:
                break
        await src.close()
        return got

    n = 5000
    got = asyncio.run(take(n))
    expected = list(itertools.islice(SimSource(7, assets=("ETH", "SOL"), faults=FAULTS).iter_frames(), n))
    assert got == expected
    assert any(f.feed == "discovery" for f in got[5:])  # past the opening frames


def test_in_process_mode_starts_no_process_and_gives_the_same_frames() -> None:
    async def take(n: int) -> tuple[list[Frame], int | None]:
        src = SimSource(2, assets=("BTC",), background=False)
        got = []
        async for frame in src.frames():
            got.append(frame)
            if len(got) == n:
                pid = src.pid
                await src.close()
        return got, pid

    got, pid = asyncio.run(take(1000))
    assert pid is None
    assert got[:1000] == list(itertools.islice(SimSource(2, assets=("BTC",)).iter_frames(), 1000))


def test_close_ends_the_simulator_process() -> None:
    async def run() -> tuple[int, int]:
        src = SimSource(3, assets=("BTC", "XRP"))
        count = 0
        pid = None
        async for _ in src.frames():
            count += 1
            if count == 2000:
                pid = src.pid
                await src.close()
        assert pid is not None
        return pid, count

    pid, count = asyncio.run(run())
    assert count in (2000, 2001)  # closing takes effect at the next frame
    assert not _alive(pid)


def test_a_killed_simulator_process_raises_instead_of_ending_quietly() -> None:
    async def run() -> None:
        src = SimSource(4, assets=("SOL",))
        try:
            async for _ in src.frames():
                pid = src.pid
                assert pid is not None
                if _alive(pid):
                    os.kill(pid, signal.SIGKILL)
        finally:
            await src.close()

    with pytest.raises(SimulatorFailed, match="ended"):
        asyncio.run(run())


def test_ctrl_c_to_the_simulator_process_leaves_the_stream_to_the_engine() -> None:
    async def run(n: int) -> list[Frame]:
        src = SimSource(6, assets=("BTC",))
        got: list[Frame] = []
        async for frame in src.frames():
            got.append(frame)
            if len(got) == 10:
                pid = src.pid
                assert pid is not None
                os.kill(pid, signal.SIGINT)  # what a terminal's Ctrl+C sends to every process in the group
            if len(got) == n:
                break
        await src.close()
        return got

    n = 20000  # well past what the pipe had buffered when the signal arrived
    got = asyncio.run(run(n))
    assert got == list(itertools.islice(SimSource(6, assets=("BTC",)).iter_frames(), n))


def test_close_returns_when_the_reader_stopped_on_a_full_buffer() -> None:
    async def run() -> None:
        src = SimSource(8)
        async for _ in src.frames():
            await asyncio.sleep(1.0)  # the engine busy elsewhere: the child fills the pipe and the read buffer
            await asyncio.wait_for(src.close(), timeout=10.0)

    asyncio.run(run())
