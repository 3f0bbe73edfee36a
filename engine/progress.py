"""What the dashboard and the per-window lines show of a run's course: bounded histories and progress.

`Series` keeps a whole run in a fixed number of points (pairs are averaged when it fills up), so a
24-hour run draws its equity and learning curves from the same memory as a 1-minute run.
"""

from __future__ import annotations

import math
from collections import deque

from engine.positions import TradeRecord


class History:
    """The run's course as the dashboard draws it: the equity and learning curves, the last 8 trades, the
    last PPO update's metrics; bounded however long the run."""

    def __init__(self) -> None:
        self.equity = Series()
        self.entropy = Series()
        self.explained = Series()
        self.recent_trades: deque[dict] = deque(maxlen=8)
        self.last_update: dict | None = None

    def trade(self, record: TradeRecord, cumulative_pnl: float) -> None:
        self.equity.append(cumulative_pnl)
        self.recent_trades.append({
            "time": record.timestamp, "asset": record.asset, "side": record.side,
            "entry": record.entry_price, "exit": record.exit_price, "pnl": record.pnl,
            "reason": record.exit_reason,
        })

    def update(self, metrics: dict) -> None:
        self.last_update = metrics
        self.entropy.append(float(metrics.get("entropy", math.nan)))
        self.explained.append(float(metrics.get("explained_variance", math.nan)))

    def curves(self) -> dict:
        return {
            "equity": self.equity.values(),
            "recent_trades": list(self.recent_trades),
            "learning": {"entropy": self.entropy.values(), "explained_variance": self.explained.values()},
        }


class Series:
    """At most `size` points covering everything appended, each the mean of `stride` consecutive values."""

    def __init__(self, size: int = 128) -> None:
        self._points: deque[float] = deque(maxlen=size)
        self._stride = 1
        self._pending: list[float] = []

    def append(self, value: float) -> None:
        self._pending.append(value)
        if len(self._pending) < self._stride:
            return
        self._points.append(sum(self._pending) / len(self._pending))
        self._pending.clear()
        if len(self._points) == self._points.maxlen:  # full: halve the resolution, keep the whole run
            pairs = list(self._points)
            self._points.clear()
            self._points.extend((a + b) / 2.0 for a, b in zip(pairs[::2], pairs[1::2], strict=False))
            self._stride *= 2

    def values(self) -> list[float]:
        return list(self._points)

    def __len__(self) -> int:
        return len(self._points)


def run_progress(
    *,
    windows: int,
    max_windows: int | None,
    duration: float | None,
    started_at: float | None,
    now: float,
    current_window: tuple[float, float] | None,
    wall_seconds: float,
) -> dict:
    """How far a run with --markets and/or --duration is, and a wall-clock ETA from the pace so far.

    `current_window` is the (start, end) clock time of the earliest window not yet resolved; the
    windows still to come are assumed to be as long as it.
    """
    elapsed = max(0.0, now - started_at) if started_at is not None else 0.0
    fractions = []
    if duration is not None:
        fractions.append(elapsed / duration)
    if max_windows is not None:
        if windows >= max_windows:
            fractions.append(1.0)
        elif current_window is not None and started_at is not None:
            start, end = current_window
            expected_end = end + (max_windows - windows - 1) * max(1.0, end - start)
            span = expected_end - started_at
            fractions.append(elapsed / span if span > 0 else 0.0)
        else:
            fractions.append(windows / max_windows)
    fraction = min(1.0, max(fractions)) if fractions else None
    eta = None
    if fraction is not None and fraction > 0.0 and started_at is not None:
        eta = wall_seconds * (1.0 - fraction) / fraction
    return {
        "windows": windows,
        "max_windows": max_windows,
        "duration": duration,
        "elapsed": elapsed,
        "wall_seconds": wall_seconds,
        "fraction": fraction,
        "eta_seconds": eta,
    }
