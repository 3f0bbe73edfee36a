"""TensorBoard scalars of training: every PPO update (the updates CSV's columns) and every window's PnL.

The engine calls `write_update` beside each updates-CSV row and `write_window` when a 15-minute window has
resolved in every asset; the CSV logs stay as they are. One log may span several engine runs (the learning
benchmark trains one agent on seed after seed): its window count goes on, and updates use the agent's
`update_num`. Written with tensorboardX (protobuf only; TensorBoard's own writer needs TensorFlow or torch).

    tensorboard --logdir DIR
"""

from __future__ import annotations

import os

from engine.trade_log import UPDATE_COLUMNS

INSTALL_HINT = "pip install tensorboardX (or pip install -e '.[scale]')"


class TensorBoardError(Exception):
    """The TensorBoard folder cannot be used (one sentence)."""


def check_installed() -> None:
    """Fail before the run, not after it: the writer is installed (the folder is checked like every output)."""
    try:
        import tensorboardX  # noqa: F401
    except ImportError:
        raise TensorBoardError(f"--tensorboard needs tensorboardX: {INSTALL_HINT}") from None


class TensorBoardLog:
    """Scalars under `updates/<CSV column>` (step: update_num) and `windows/pnl...` (step: windows done)."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        from tensorboardX import SummaryWriter

        self.folder = str(folder)
        self.windows = 0
        self.total_pnl = 0.0  # over every window this log has seen, across engine runs
        self._writer = SummaryWriter(self.folder, flush_secs=10)

    def write_update(self, metrics: dict, cumulative_pnl: float, trades: int, win_rate: float) -> None:
        step = int(metrics["update_num"])
        add = self._writer.add_scalar
        for name in UPDATE_COLUMNS[2:10]:  # the PPO metrics between update_num and the cumulative columns
            if name in metrics:
                add(f"updates/{name}", float(metrics[name]), step)
        add("updates/cumulative_pnl", cumulative_pnl, step)
        add("updates/cumulative_trades", trades, step)
        add("updates/cumulative_win_rate", win_rate, step)

    def write_window(self, pnl_by_asset: dict[str, float]) -> None:
        """One resolved window: its PnL over the assets, each asset's, and the total of the windows so far."""
        self.windows += 1
        pnl = sum(pnl_by_asset.values())
        self.total_pnl += pnl
        add = self._writer.add_scalar
        add("windows/pnl", pnl, self.windows)
        for asset, value in sorted(pnl_by_asset.items()):
            add(f"windows/pnl_{asset}", value, self.windows)
        add("windows/cumulative_pnl", self.total_pnl, self.windows)

    def close(self) -> None:
        self._writer.close()
