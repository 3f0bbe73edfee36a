"""Clocks: every timing decision reads one of these, never time.time() directly."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """What the live clients and the engine read time from: a RealClock or a VirtualClock."""

    def now(self) -> float: ...

    def seconds_until(self, t: float) -> float: ...


class RealClock:
    """Wall-clock time, optionally scaled: now = sim_origin + (wall - wall_origin) * speed."""

    virtual = False

    def __init__(self, speed: float = 1.0, sim_origin: float | None = None) -> None:
        self.speed = float(speed)
        self._wall_origin = time.time()
        self._sim_origin = self._wall_origin if sim_origin is None else float(sim_origin)

    @classmethod
    def from_origins(cls, wall_origin: float, sim_origin: float, speed: float) -> RealClock:
        """A clock that agrees with another process's clock started at `wall_origin`."""
        clock = cls(speed, sim_origin)
        clock._wall_origin = float(wall_origin)
        return clock

    @property
    def wall_origin(self) -> float:
        return self._wall_origin

    @property
    def sim_origin(self) -> float:
        return self._sim_origin

    def now(self) -> float:
        return self._sim_origin + (time.time() - self._wall_origin) * self.speed

    def seconds_until(self, t: float) -> float:
        """Wall seconds until clock time `t` (for sleeping)."""
        return max(0.0, (t - self.now()) / self.speed)


class VirtualClock:
    """Time driven by message timestamps; never goes backwards."""

    virtual = True

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)

    def now(self) -> float:
        return self._now

    def advance(self, t: float) -> None:
        if t > self._now:
            self._now = t

    def restart(self) -> None:
        """A new episode of a library replay: the next advance sets the time, even an earlier one."""
        self._now = 0.0

    def seconds_until(self, t: float) -> float:
        return 0.0
