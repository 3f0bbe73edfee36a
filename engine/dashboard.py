"""Live console dashboard (rich) and the plain per-window progress line of `--no-tui`.

Both only read `engine.snapshot()`; they never touch trading state, so they cannot change a decision.
The dashboard keeps a fixed layout (one row per asset, a fixed number of trade rows) so that
`rich.live.Live` redraws it in place without the screen jumping.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

_BLOCKS = "▁▂▃▄▅▆▇█"
_TRADE_ROWS = 5
_UNIFORM_ENTROPY = math.log(3)  # three actions chosen at random


def money(x: float) -> str:
    """$+1,234.56 / $-1,234.56, as the end-of-run summary writes it."""
    return f"${x:+,.2f}"


def hms(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _pnl_style(x: float) -> str:
    return "green" if x > 0 else "red" if x < 0 else ""


def resample(values: Sequence[float], width: int) -> list[float]:
    """At most `width` points: bucket means when there are more (NaNs left out)."""
    if len(values) <= width:
        return list(values)
    out = []
    for i in range(width):
        bucket = [v for v in values[i * len(values) // width:(i + 1) * len(values) // width] if v == v]
        out.append(sum(bucket) / len(bucket) if bucket else math.nan)
    return out


def drawdown(equity: Sequence[float]) -> float:
    """The largest fall from a running peak, in dollars (>= 0)."""
    peak, worst = -math.inf, 0.0
    for v in equity:
        peak = max(peak, v)
        worst = max(worst, peak - v)
    return worst


def sparkline(values: Sequence[float], width: int, style: Callable[[float], str] | str = "") -> Text:
    """Values as block characters scaled from their min to their max, at most `width` wide."""
    points = resample(values, max(1, width))
    finite = [v for v in points if math.isfinite(v)]
    text = Text()
    if not finite:
        return text
    low, high = min(finite), max(finite)
    span = high - low
    for v in points:
        if not math.isfinite(v):
            text.append(" ")
            continue
        level = int((v - low) / span * (len(_BLOCKS) - 1)) if span > 0 else len(_BLOCKS) // 2
        text.append(_BLOCKS[level], style=style(v) if callable(style) else style)
    return text


def stats_line(snap: dict) -> Text:
    """PnL, fees, trades, win rate, speed: at most 80 columns for any realistic run."""
    pnl = snap.get("pnl", 0.0)
    return Text.assemble(
        "PnL ", (money(pnl), f"bold {_pnl_style(pnl)}".strip()),
        f"  fees ${snap.get('fees', 0.0):,.2f}  trades {snap.get('trades', 0):,}"
        f"  win {100 * snap.get('win_rate', 0.0):.1f}%  {snap.get('decisions_per_second', 0.0):,.0f} dec/s",
    )


def progress_text(progress: dict) -> str:
    """'windows done 3/10  42%  elapsed 0:01:10  ETA 0:01:37'; without a target only the count and time."""
    windows, target = progress.get("windows", 0), progress.get("max_windows")
    head = f"windows done {windows}/{target}" if target else f"windows done {windows}"
    fraction = progress.get("fraction")
    parts = [head]
    if fraction is not None:
        parts.append(f"{100 * fraction:.0f}%")
    parts.append(f"elapsed {hms(progress.get('wall_seconds'))}")
    if fraction is not None:
        parts.append(f"ETA {hms(progress.get('eta_seconds'))}")
    return "  ".join(parts)


def window_line(snap: dict) -> str:
    """`--no-tui`: one line per resolved window: progress, PnL so far, trades, speed, last PPO update."""
    progress = snap.get("progress", {})
    windows, target = progress.get("windows", 0), progress.get("max_windows")
    parts = [
        f"window {windows}/{target}" if target else f"window {windows}",
        f"PnL {money(snap.get('pnl', 0.0))}",
        f"trades {snap.get('trades', 0):,}",
        f"{snap.get('decisions_per_second', 0.0):,.0f} dec/s",
    ]
    if progress.get("fraction") is not None and progress.get("fraction") < 1.0:
        parts.append(f"ETA {hms(progress.get('eta_seconds'))}")
    learn = snap.get("last_update")
    if snap.get("training") and learn:
        parts.append(f"entropy {learn.get('entropy', math.nan):.3f}")
        parts.append(f"EV {learn.get('explained_variance', math.nan):+.2f}")
    return "  ".join(parts)


def _clock(snap: dict) -> str:
    if not snap.get("started"):
        return "waiting for data"
    return datetime.fromtimestamp(snap.get("clock", 0.0), tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _header(snap: dict, width: int) -> Panel:
    progress = snap.get("progress", {})
    line = Table.grid(padding=(0, 1))
    fraction = progress.get("fraction")
    if fraction is not None:
        text = progress_text(progress)
        line.add_column(width=max(8, min(30, width - 5 - len(text))))  # the bar takes what the text leaves
        line.add_column()
        bar = ProgressBar(total=1.0, completed=fraction, complete_style="cyan", finished_style="green")
        line.add_row(bar, text)
    else:
        line.add_column()
        line.add_row(progress_text(progress) + "  (until Ctrl+C)")
    mode = "training" if snap.get("training") else "trading"
    title = f"updown · {snap.get('strategy', '?')} {mode} · {snap.get('source', '?')}"
    return Panel(Group(stats_line(snap), line), title=title, title_align="left",
                 subtitle=_clock(snap), subtitle_align="right", padding=(0, 1))


def _time_bar(seconds_left: float, window: float, width: int) -> Text:
    filled = round(width * min(1.0, max(0.0, seconds_left / window))) if window > 0 else 0
    colour = "green" if seconds_left > 300 else "yellow" if seconds_left > 60 else "red"
    return Text.assemble(("━" * filled, colour), ("─" * (width - filled), "grey35"),
                         (f" {int(seconds_left) // 60:2d}:{int(seconds_left) % 60:02d}", colour))


def _markets(snap: dict, width: int) -> Panel:
    wide = width >= 90
    table = Table(box=None, header_style="bold", pad_edge=False, padding=(0, 1))
    columns = [("asset", 5), ("time left", 17 if wide else 12), ("UP bid", 6), ("UP ask", 6), ("fair", 6),
               ("edge", 7), *([("vs open", 8)] if wide else []), ("pos", 4), ("entry", 5), ("uPnL", 8)]
    for name, size in columns:  # fixed widths: the columns stay put from one frame to the next
        table.add_column(name, width=size, no_wrap=True,
                         justify="left" if name in ("asset", "time left", "pos") else "right")
    current: dict[str, dict] = {}
    for m in snap.get("markets", []):  # one row per asset: the latest window (the old one may be settling)
        if m["asset"] not in current or m.get("start", 0) > current[m["asset"]].get("start", 0):
            current[m["asset"]] = m
    for asset in snap.get("assets") or sorted(current):
        m = current.get(asset)
        if m is None:
            table.add_row(asset, Text("waiting for data" if not snap.get("started") else "no market", "dim"),
                          *[""] * (len(columns) - 2))
            continue
        fair, mid, change = m.get("fair"), m.get("mid"), m.get("index_change")
        edge = None if fair is None or mid is None else fair - mid
        upnl = m.get("unrealized", 0.0)
        cells = [
            asset,
            _time_bar(m["seconds_left"], m.get("window_seconds", 900.0), 10 if wide else 5),
            f"{m['bid']:.3f}" if m.get("bid") is not None else "-",
            f"{m['ask']:.3f}" if m.get("ask") is not None else "-",
            f"{fair:.3f}" if fair is not None else "-",
            Text(f"{100 * edge:+.1f}¢", _pnl_style(round(100 * edge, 1))) if edge is not None else "-",
        ]
        if wide:
            cells.append(Text(f"{100 * change:+.3f}%", _pnl_style(change)) if change is not None else "-")
        cells += [
            Text(m.get("side") or "flat", "bold" if m.get("side") else "dim"),
            f"{m['entry']:.3f}" if m.get("entry") else "-",
            Text(f"{upnl:+.2f}", _pnl_style(upnl)) if m.get("side") else Text("-", "dim"),
        ]
        table.add_row(*cells)
    title = "markets · fair: UP value implied by the index · edge: fair - mid · vs open: index vs strike"
    return Panel(table, title=title if wide else "markets · edge: fair - UP mid", title_align="left",
                 padding=(0, 1))


def _curves(snap: dict, width: int) -> Panel:
    label, value = 8, 34
    spark = max(10, width - 4 - label - value - 2)  # panel borders and padding, two column gaps
    grid = Table.grid(padding=(0, 1))
    grid.add_column(width=label, no_wrap=True)
    grid.add_column(width=spark, no_wrap=True)
    grid.add_column(width=value, no_wrap=True)
    pnl = snap.get("pnl", 0.0)
    equity = [0.0, *snap.get("equity", []), pnl] if snap.get("trades") else []
    if equity:
        grid.add_row("equity", sparkline(equity, spark, _pnl_style),
                     Text.assemble((money(pnl), f"bold {_pnl_style(pnl)}".strip()),
                                   f"  max DD ${drawdown(equity):,.2f}"))
    else:
        grid.add_row("equity", Text("no trades yet", "dim"), "")
    learn = snap.get("last_update")
    history = snap.get("learning", {})
    if not snap.get("training"):
        rows = [("learning", Text("not training: this run only decides (--train learns)", "dim"), "")]
    elif not learn:
        rows = [("entropy", Text("no PPO update yet (each needs 256 decisions)", "dim"), ""), ("expl.var", "", "")]
    else:
        rows = [
            ("entropy", sparkline(history.get("entropy", []), spark, "cyan"),
             f"{learn.get('entropy', math.nan):.3f}  (uniform {_UNIFORM_ENTROPY:.3f})"),
            ("expl.var", sparkline(history.get("explained_variance", []), spark, "magenta"),
             f"{learn.get('explained_variance', math.nan):+.3f}  (1: critic exact)"),
        ]
    for row in [*rows, *[("", "", "")] * (2 - len(rows))]:  # a fixed height whatever the state
        grid.add_row(*row)
    detail = Text("")
    if snap.get("training") and learn:
        detail = Text(f"PPO update {learn.get('update_num', snap.get('updates', 0))}:  value loss "
                      f"{learn.get('value_loss', math.nan):.4f}  KL {learn.get('approx_kl', math.nan):.4f}  "
                      f"clip {learn.get('clip_fraction', math.nan):.3f}", "dim", no_wrap=True, overflow="ellipsis")
    return Panel(Group(grid, detail), title="equity and learning", title_align="left", padding=(0, 1))


def _trades(snap: dict, rows: int) -> Panel:
    table = Table(box=None, show_header=False, pad_edge=False, padding=(0, 1))
    for justify, size in (("left", 8), ("left", 4), ("left", 4), ("left", 13), ("right", 11), ("left", 10)):
        table.add_column(justify=justify, width=size, no_wrap=True)
    recent = list(snap.get("recent_trades", []))[-rows:][::-1]  # newest first
    for t in recent:
        when = datetime.fromtimestamp(t["time"], tz=UTC).strftime("%H:%M:%S")
        table.add_row(when, t["asset"], t["side"], f"{t['entry']:.3f} → {t['exit']:.3f}",
                      Text(money(t["pnl"]), _pnl_style(t["pnl"])), Text(t["reason"], "dim"))
    for i in range(rows - len(recent)):
        table.add_row(Text("no trades yet", "dim") if i == 0 and not recent else "", "", "", "", "", "")
    return Panel(table, title="last trades", title_align="left", padding=(0, 1))


def render(snap: dict, width: int = 100, height: int = 30) -> Group:
    """The whole screen for a snapshot, at most `height - 1` lines tall (Live needs one spare line)."""
    parts: list = [_header(snap, width), _markets(snap, width), _curves(snap, width)]
    used = 4 + (3 + len(snap.get("assets") or ())) + 6  # header, markets, curves panels
    trade_rows = min(_TRADE_ROWS, height - 1 - used - 2)
    if trade_rows > 0:
        parts.append(_trades(snap, trade_rows))
    return Group(*parts)


async def run_dashboard(snapshot: Callable[[], dict], stop: asyncio.Event, console: Console | None = None) -> None:
    """Redraw about once a second until `stop` is set; wall-clock pacing is fine here: it only paints."""
    console = console or Console()

    def frame() -> Group:
        return render(snapshot(), console.width, console.height)

    with Live(frame(), console=console, auto_refresh=False, transient=True) as live:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)
            live.update(frame(), refresh=True)
