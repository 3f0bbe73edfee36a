"""Live console dashboard (rich): markets, positions, PnL and learning, refreshed about once a second.

It only reads `engine.snapshot()`; it never touches trading state, so it cannot change a decision.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text


def render(snap: dict) -> Group:
    clock = datetime.fromtimestamp(snap.get("clock", 0.0), tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    head = Text.assemble(
        (f"updown · {snap.get('strategy', '?')} · {snap.get('source', '?')} · {clock}\n", "bold"),
        f"PnL ${snap.get('pnl', 0.0):+,.2f}  fees ${snap.get('fees', 0.0):,.2f}  "
        f"trades {snap.get('trades', 0)}  win {100 * snap.get('win_rate', 0.0):.1f}%  "
        f"windows {snap.get('windows', 0)}  decisions/s {snap.get('decisions_per_second', 0.0):,.0f}",
    )
    markets = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("asset", "left", "UP bid", "UP ask", "position", "entry", "uPnL"):
        markets.add_column(col, justify="right" if col != "asset" else "left")
    for m in snap.get("markets", []):
        markets.add_row(
            m["asset"],
            f"{m['seconds_left']:.0f}s",
            f"{m['bid']:.3f}" if m.get("bid") is not None else "-",
            f"{m['ask']:.3f}" if m.get("ask") is not None else "-",
            m.get("side") or "flat",
            f"{m['entry']:.3f}" if m.get("entry") else "-",
            f"{m.get('unrealized', 0.0):+.2f}",
        )
    parts: list = [head, markets]
    learn = snap.get("last_update")
    if learn:
        parts.append(Text(
            f"PPO update {learn.get('update_num', 0)}: entropy {learn.get('entropy', 0.0):.3f}  "
            f"value loss {learn.get('value_loss', 0.0):.4f}  KL {learn.get('approx_kl', 0.0):.4f}  "
            f"explained var {learn.get('explained_variance', 0.0):.3f}"
        ))
    return Group(*parts)


async def run_dashboard(snapshot: Callable[[], dict], stop: asyncio.Event, console: Console | None = None) -> None:
    """Redraw until `stop` is set; wall-clock pacing is fine here: it only paints the screen."""
    with Live(render(snapshot()), console=console, refresh_per_second=2, transient=True) as live:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)
            live.update(render(snapshot()))
