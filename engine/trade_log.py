"""The run's CSV logs: trades, PPO updates and per-window episodes, flushed row by row.

One set per run in `log_dir`: `trades_<run_id>.csv`, `updates_<run_id>.csv`, `episodes_<run_id>.csv`.
Timestamps are the run's clock time in ISO 8601 UTC, so a replayed run logs the recorded times.
The updates columns are the reference project's, so its logs and ours plot together.
"""

from __future__ import annotations

import csv
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


class _CsvFile:
    def __init__(self, path: Path, columns: tuple[str, ...]) -> None:
        self.path = path
        self._fh: IO[str] = path.open("w", newline="")
        self._writer = csv.writer(self._fh)
        self._writer.writerow(columns)
        self._fh.flush()

    def write(self, row: list) -> None:
        self._writer.writerow(row)
        self._fh.flush()  # a crash loses at most the line being written

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()


def _num(x: float) -> str:
    return f"{x:.6f}".rstrip("0").rstrip(".") if x == x else "nan"


class RunLogs:
    """Opens the three CSV files of one run; `close()` is idempotent."""

    def __init__(self, log_dir: str | Path, run_id: str) -> None:
        directory = Path(log_dir)
        directory.mkdir(parents=True, exist_ok=True)
        self.trades = _CsvFile(directory / f"trades_{run_id}.csv", TRADE_COLUMNS)
        self.updates = _CsvFile(directory / f"updates_{run_id}.csv", UPDATE_COLUMNS)
        self.episodes = _CsvFile(directory / f"episodes_{run_id}.csv", EPISODE_COLUMNS)

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
