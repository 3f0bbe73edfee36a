"""The run's CSV logs: trades, PPO updates and per-window episodes, flushed row by row.

One set per run in `log_dir`: `trades_<run_id>.csv`, `updates_<run_id>.csv`, `episodes_<run_id>.csv`,
created exclusively: a run id already taken in that folder gets a suffix (`_2`, `_3`...), never shared.
A write that fails (disk full) stops that file and keeps the cause in `error`; the engine then stops.
Timestamps are the run's clock time in ISO 8601 UTC, so a replayed run logs the recorded times.
The updates columns are the reference project's, so its logs and ours plot together.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from engine.positions import TradeRecord

TRADE_COLUMNS = (
    "timestamp", "asset", "action", "side", "entry_price", "exit_price", "size", "shares", "fee", "pnl",
    "duration", "time_remaining_at_entry", "prob_at_entry", "prob_at_exit", "underlying_change",
    "exit_reason",
)
UPDATE_COLUMNS = (
    "timestamp", "update_num", "policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction",
    "explained_variance", "buffer_avg_reward", "buffer_win_rate", "cumulative_pnl", "cumulative_trades",
    "cumulative_win_rate",
)
# exposure: dollars spent opening positions in the window
EPISODE_COLUMNS = ("window_start", "asset", "market_id", "outcome", "trades", "pnl", "fees", "exposure")


def new_run_id() -> str:
    """A run's id: the time to the millisecond plus the process id (RunLogs adds a suffix if it is taken)."""
    return f"{datetime.now(UTC).strftime('%Y%m%d_%H%M%S_%f')[:-3]}_{os.getpid()}"


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).isoformat()


@dataclass(slots=True)
class EpisodeRecord:
    window_start: float
    asset: str
    market_id: str
    outcome: str  # Up, Down, or "unresolved"
    trades: int
    pnl: float
    fees: float
    exposure: float


class LogsUnwritable(Exception):
    """The log files cannot be created; one sentence for the user (run.py prints it and exits 1)."""

    one_sentence = True


class _CsvFile:
    def __init__(self, path: Path, columns: tuple[str, ...]) -> None:
        self.path = path
        self.error: str | None = None
        self._fh: IO[str] = path.open("x", newline="")  # FileExistsError: another run holds this name
        self._writer = csv.writer(self._fh)
        self._writer.writerow(columns)
        self._fh.flush()

    def write(self, row: list) -> None:
        if self.error is not None:
            return
        try:
            self._writer.writerow(row)
            self._fh.flush()  # a crash loses at most the line being written
        except OSError as exc:
            self.error = f"cannot write the log {self.path}: {exc.strerror or exc}"
            self.close()

    def close(self) -> None:
        if not self._fh.closed:
            with contextlib.suppress(OSError):  # a full disk: the rows already flushed stay
                self._fh.close()


def _num(x: float) -> str:
    return f"{x:.6f}".rstrip("0").rstrip(".") if x == x else "nan"


class RunLogs:
    """Opens the three CSV files of one run under a run id no other run in `log_dir` has; `close()` is idempotent."""

    def __init__(self, log_dir: str | Path, run_id: str) -> None:
        directory = Path(log_dir)
        directory.mkdir(parents=True, exist_ok=True)
        for n in itertools.count(1):
            self.run_id = run_id if n == 1 else f"{run_id}_{n}"
            opened: list[_CsvFile] = []
            try:
                for kind, columns in (("trades", TRADE_COLUMNS), ("updates", UPDATE_COLUMNS),
                                      ("episodes", EPISODE_COLUMNS)):
                    opened.append(_CsvFile(directory / f"{kind}_{self.run_id}.csv", columns))
            except OSError as exc:
                for f in opened:  # give back what this attempt made
                    f.close()
                    f.path.unlink(missing_ok=True)
                if isinstance(exc, FileExistsError):
                    continue  # the id is taken in this folder, by a run that got there first
                raise LogsUnwritable(f"cannot create the logs in {directory}: {exc.strerror or exc}") from None
            break
        self.trades, self.updates, self.episodes = opened

    @property
    def error(self) -> str | None:
        """Why a log stopped being written (the first file that failed), else None."""
        return self.trades.error or self.updates.error or self.episodes.error

    @property
    def paths(self) -> dict[str, str]:
        return {"trades": str(self.trades.path), "updates": str(self.updates.path),
                "episodes": str(self.episodes.path)}

    def write_trade(self, r: TradeRecord) -> None:
        self.trades.write([
            iso(r.timestamp), r.asset, r.action, r.side, _num(r.entry_price), _num(r.exit_price),
            _num(r.size), _num(r.shares), _num(r.fee), _num(r.pnl), _num(r.duration),
            _num(r.time_remaining_at_entry), _num(r.prob_at_entry), _num(r.prob_at_exit),
            _num(r.underlying_change), r.exit_reason,
        ])

    def write_update(self, t: float, metrics: dict, cumulative_pnl: float, trades: int, win_rate: float) -> None:
        row = [iso(t), metrics.get("update_num", "")]
        row += [metrics.get(name, "") for name in UPDATE_COLUMNS[2:10]]
        row += [_num(cumulative_pnl), trades, _num(win_rate)]
        self.updates.write(row)

    def write_episode(self, e: EpisodeRecord) -> None:
        self.episodes.write([
            iso(e.window_start), e.asset, e.market_id, e.outcome, e.trades, _num(e.pnl), _num(e.fees),
            _num(e.exposure),
        ])

    def close(self) -> None:
        self.trades.close()
        self.updates.close()
        self.episodes.close()
