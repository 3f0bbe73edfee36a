"""The run report (the README "Outputs" schema plus fill mode, paper latency and skipped orders) and its console summary."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(slots=True)
class RunStats:
    """Running totals the engine keeps; `to_report` turns them into the report dict."""

    decisions: int = 0
    trades: int = 0
    wins: int = 0
    pnl: float = 0.0
    fees: float = 0.0
    windows: int = 0
    updates: int = 0
    stale_seconds: float = 0.0
    unresolved_closes: int = 0
    shutdown_closes: int = 0
    pnl_by_asset: dict[str, float] = field(default_factory=dict)

    @property
    def win_rate(self) -> float:
        return self.wins / self.trades if self.trades else 0.0

    def add_trade(self, asset: str, pnl: float, fee: float) -> None:
        self.trades += 1
        self.wins += pnl > 0.0
        self.pnl += pnl
        self.fees += fee
        self.pnl_by_asset[asset] = self.pnl_by_asset.get(asset, 0.0) + pnl


def build_report(
    stats: RunStats,
    *,
    strategy: str,
    source: str,
    seed: int | None,
    fill: str,
    wall_seconds: float,
    messages: int,
    rejected: int,
    unknown: int,
    bad_lines: int,
    reconnects: int | Mapping[str, int],
    skipped: dict,
    assets: tuple[str, ...],
    latency_ms: float | None,
) -> dict:
    """`reconnects`: a total, or counts per feed (a live source's); `latency_ms`: the delay given to paper
    fills, None when a live venue filled the orders."""
    return {
        "strategy": strategy,
        "source": source,
        "seed": seed,
        "windows": stats.windows,
        "decisions": stats.decisions,
        "trades": stats.trades,
        "wins": stats.wins,
        "win_rate": round(stats.win_rate, 6),
        "pnl": round(stats.pnl, 6),
        "fees": round(stats.fees, 6),
        "pnl_by_asset": {a: round(stats.pnl_by_asset.get(a, 0.0), 6) for a in sorted(assets)},
        "updates": stats.updates,
        "wall_seconds": round(wall_seconds, 3),
        "decisions_per_second": round(stats.decisions / wall_seconds, 1) if wall_seconds > 0 else 0.0,
        "feed": {
            "messages": messages,
            "rejected": rejected,
            "unknown": unknown,  # well-formed events of a type the parsers do not know
            "bad_lines": bad_lines,  # unreadable recording lines skipped by a replay
            "reconnects": int(sum(reconnects.values())) if isinstance(reconnects, Mapping) else int(reconnects),
            "stale_seconds": round(stats.stale_seconds, 3),
        },
        "model_saved": None,
        "fill": fill,
        "latency_ms": latency_ms,
        "skipped_orders": skipped,
        "unresolved_closes": stats.unresolved_closes,
        "shutdown_closes": stats.shutdown_closes,
    }


def _skipped_lines(skipped: dict) -> tuple[int, list[str]]:
    """Order counts by reason, venue refusals by reason (the live broker's `rejected`) and shares still
    held on the venue (its `still_held`), in words; share amounts (dust, unsold) are not order counts."""
    counts = {k: v for k, v in skipped.items() if type(v) is int and v}
    refused = {k: v for k, v in (skipped.get("rejected") or {}).items() if v}
    total = sum(counts.values()) + sum(refused.values())
    lines = []
    if counts or refused:
        parts = [", ".join(f"{k} {v}" for k, v in counts.items())] if counts else []
        if refused:
            parts.append(f"refused by the venue: {', '.join(f'{k} {v}' for k, v in refused.items())}")
        lines.append("skipped orders: " + "; ".join(parts))
    held = skipped.get("still_held") or []
    if held:
        lines.append("still held on the venue, outside the PnL: " + "; ".join(
            f"{h.get('asset')} {h.get('side')} {h.get('shares', 0.0):,.2f} shares ({h.get('why')})" for h in held))
    return total, lines


def format_summary(report: dict) -> str:
    """A few lines for people: PnL, trades, win rate, fees, per asset, speed, what was not traded."""
    per_asset = "  ".join(f"{a} ${v:+,.2f}" for a, v in report.get("pnl_by_asset", {}).items())
    skipped_total, skipped_lines = _skipped_lines(report.get("skipped_orders", {}))
    feed = report.get("feed", {})
    latency = report.get("latency_ms")
    latency_text = "" if latency is None else f", latency {latency:g} ms"
    lines = [
        f"{report.get('strategy')} on {report.get('source')} (fill {report.get('fill')}{latency_text}): "
        f"PnL ${report.get('pnl', 0.0):+,.2f} after ${report.get('fees', 0.0):,.2f} fees",
        f"trades {report.get('trades', 0)}  win rate {100 * report.get('win_rate', 0.0):.1f}%  "
        f"windows {report.get('windows', 0)}  decisions {report.get('decisions', 0):,}  "
        f"({report.get('decisions_per_second', 0.0):,.0f}/s over {report.get('wall_seconds', 0.0):.1f} s)",
        f"per asset: {per_asset or '-'}",
        f"feed: {feed.get('messages', 0):,} messages, {feed.get('rejected', 0)} rejected, "
        f"{feed.get('stale_seconds', 0.0):.0f} stale market-seconds; skipped orders {skipped_total}",
        *skipped_lines,
    ]
    if report.get("updates"):
        lines.append(f"PPO updates {report['updates']}")
    lib = report.get("library")
    if lib:
        mixed = f" and {lib['sim_windows']} simulator windows" if "sim_windows" in lib else ""
        lines.append(f"recordings: {lib['files']} file(s), {lib['windows_complete']} complete windows x "
                     f"{lib['epochs']} epoch(s){' shuffled' if lib.get('shuffle_seed') is not None else ''}{mixed}; "
                     f"{lib['windows_cut']} cut windows skipped, {lib['bad_lines']} unreadable lines")
    return "\n".join(lines)


def format_outputs(report: dict, report_file: str | None = None) -> str:
    """Where the run's files went: the model loaded and saved, the logs, the report, the recording, charts."""
    lines = []
    if report.get("model_loaded"):
        name = report["model_loaded"]
        lines.append(f"model loaded  {name}.safetensors + {name}_stats.npz")
    if report.get("model_saved"):
        name = report["model_saved"]
        lines.append(f"model saved   {name}.safetensors + {name}_stats.npz")
    elif report.get("model_loaded"):
        lines.append("model saved   no (inference never writes the model; --train learns and saves)")
    logs = report.get("logs") or {}
    files = [
        ("logs", [logs[k] for k in ("trades", "updates", "episodes") if k in logs]),
        ("report", [report_file] if report_file else []),
        ("recording", report.get("recording_files") or ([report["recording"]] if report.get("recording") else [])),
        ("tensorboard", [report["tensorboard"]] if report.get("tensorboard") else []),
        ("charts", report.get("charts") or []),
    ]
    for label, paths in files:  # one path a line: each can be copied as it stands
        lines += [f"{label if i == 0 else '':<14}{path}" for i, path in enumerate(paths)]
    return "\n".join(lines)
