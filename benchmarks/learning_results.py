"""The results of `benchmarks.learning`: each strategy's held-out outcome with its 95 % interval, the tables
and verdicts printed, and the summaries over agent seeds and resume checks.

The unit of the intervals is one 15-minute window of one evaluation seed or recording (PnL summed over the
assets traded in it); the interval is mean +- 1.96 standard errors (normal approximation).
"""

from __future__ import annotations

import csv
import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

Z95 = 1.96


@dataclass
class Outcome:
    """One strategy's figures over several engine runs (seeds) with one fill mode."""

    strategy: str
    fill: str
    windows: int = 0
    decisions: int = 0
    trades: int = 0
    wins: int = 0
    fees: float = 0.0
    pnl: float = 0.0
    window_pnls: list[float] = field(default_factory=list)  # one per completed (seed, window)
    pnl_by_asset: dict[str, float] = field(default_factory=dict)

    def add(self, report: dict, window_pnls: list[float]) -> None:
        self.windows += report["windows"]
        self.decisions += report["decisions"]
        self.trades += report["trades"]
        self.wins += report["wins"]
        self.fees += report["fees"]
        self.pnl += report["pnl"]
        self.window_pnls += window_pnls
        for asset, value in report["pnl_by_asset"].items():
            self.pnl_by_asset[asset] = self.pnl_by_asset.get(asset, 0.0) + value

    @property
    def win_rate(self) -> float:
        return self.wins / self.trades if self.trades else 0.0

    def mean_ci(self) -> tuple[float, float, float]:
        """Mean PnL per window and its 95 % interval (normal approximation)."""
        n = len(self.window_pnls)
        if n == 0:
            return 0.0, 0.0, 0.0
        mean, sd = mean_sd(self.window_pnls)
        half = Z95 * sd / math.sqrt(n)
        return mean, mean - half, mean + half

    @classmethod
    def from_dict(cls, data: dict) -> Outcome:
        """The Outcome `to_dict` wrote (its derived figures are computed again)."""
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})

    def to_dict(self) -> dict:
        mean, low, high = self.mean_ci()
        out = dataclasses.asdict(self)
        out.update(win_rate=self.win_rate, mean_per_window=mean, ci95=[low, high])
        return out


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for fewer than two values)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def window_pnls(episodes_csv: str) -> list[float]:
    """PnL per completed window (summed over assets) from an engine's episodes CSV; shutdown partials excluded."""
    totals: dict[str, float] = {}
    partial: set[str] = set()
    with open(episodes_csv, newline="") as fh:
        for row in csv.DictReader(fh):
            totals[row["window_start"]] = totals.get(row["window_start"], 0.0) + float(row["pnl"])
            if row["outcome"] == "shutdown":
                partial.add(row["window_start"])
    return [v for k, v in sorted(totals.items()) if k not in partial]


def update_summary(updates_csv: str) -> dict[str, float]:
    """Mean of the PPO metrics over the last half of a run's updates (the first half is still moving)."""
    with open(updates_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return {"updates": 0}
    tail = rows[len(rows) // 2 :]
    out: dict[str, float] = {"updates": len(rows)}
    for key in ("entropy", "value_loss", "explained_variance", "approx_kl", "clip_fraction"):
        values = [float(r[key]) for r in tail if r[key] not in ("", "nan")]
        out[key] = sum(values) / len(values) if values else float("nan")
    return out


def selected_candidate(rows: Sequence[dict]) -> str | None:
    """The checkpoint with the highest validation PnL (the later one on a tie), or None without validation."""
    scored = [r for r in rows if "val_pnl" in r]
    return max(reversed(scored), key=lambda r: r["val_pnl"])["candidate"] if scored else None


def print_table(outcomes: list[Outcome], title: str) -> None:
    print(f"\n{title}")
    print(
        f"{'strategy':<22}{'fill':<6}{'windows':>8}{'trades':>8}{'win %':>7}{'fees $':>10}{'net PnL $':>12}"
        f"{'mean $/window [95% CI]':>34}"
    )
    for o in outcomes:
        mean, low, high = o.mean_ci()
        print(
            f"{o.strategy:<22}{o.fill:<6}{o.windows:>8}{o.trades:>8}{100 * o.win_rate:>7.1f}{o.fees:>10,.0f}"
            f"{o.pnl:>12,.0f}{mean:>12,.1f} [{low:>8,.1f}, {high:>8,.1f}]"
        )


def ratio_line(rl: Outcome, fair: Outcome) -> str:
    """RL against fair_value: a ratio where fair_value earns, the difference where it does not."""
    if fair.pnl > 0:
        return f"RL / fair_value net PnL ({rl.fill} fill): {rl.pnl:,.0f} / {fair.pnl:,.0f} = {rl.pnl / fair.pnl:.2f}"
    return (f"RL - fair_value net PnL ({rl.fill} fill): {rl.pnl:,.0f} - ({fair.pnl:,.0f}) = {rl.pnl - fair.pnl:+,.0f} "
            "(fair_value does not earn here, so no ratio)")


def verdict(rl: Outcome, others: list[Outcome]) -> str:
    """Whether RL's interval lies above every rule baseline's (fair_value included), and its PnL is positive."""
    _, rl_low, _ = rl.mean_ci()
    beaten = [o.strategy for o in others if o.mean_ci()[2] < rl_low]
    not_beaten = [o.strategy for o in others if o.strategy not in beaten]
    sign = "positive" if rl.pnl > 0 else "not positive"
    if rl.pnl <= 0:
        sign += ", " + ("within its interval of zero" if rl.mean_ci()[2] >= 0 else "a loss beyond its interval")
    if not not_beaten:
        return f"RL ({rl.fill}): net PnL {sign}; interval above every baseline's"
    return f"RL ({rl.fill}): net PnL {sign}; intervals overlap or lie below: {', '.join(not_beaten)}"


def seed_summary(runs: list[dict], fill: str) -> str:
    """Mean and spread over agent seeds of the held-out net PnL and of RL / fair_value."""
    lines = [f"\nover {len(runs)} agent seeds, --fill {fill}:"]
    keys = (
        (f"pnl_{fill}", "net PnL $", ",.0f"),
        (f"ratio_{fill}", "RL / fair_value", ".2f"),
        (f"diff_{fill}", "RL - fair_value net PnL $", "+,.0f"),
        (f"pnl_sel_{fill}", "net PnL $, checkpoint selected on validation", ",.0f"),
        (f"ratio_sel_{fill}", "RL / fair_value, checkpoint selected on validation", ".2f"),
    )
    for key, label, fmt in keys:
        values = [r[key] for r in runs if key in r and r[key] == r[key]]  # NaN: no ratio for that seed
        if not values:
            continue
        mean, sd = mean_sd(values)
        each = ", ".join(f"{v:{fmt}}" for v in values)
        lines.append(f"  {label}: mean {mean:{fmt}}, sd {sd:{fmt}}, range {min(values):{fmt}} .. "
                     f"{max(values):{fmt}} (per seed: {each})")
    return "\n".join(lines)


def resume_summary(checks: list[dict], fill: str) -> str:
    """Held-out net PnL of the straight and the resumed model per agent seed, and their paired difference."""
    pairs = [(c["pnl"][fill]["straight"], c["pnl"][fill]["resumed"]) for c in checks]
    diffs = [b - a for a, b in pairs]
    mean, sd = mean_sd(diffs)
    each = ", ".join(f"{a:,.0f} / {b:,.0f}" for a, b in pairs)
    (straight, _), (resumed, _) = mean_sd([a for a, _ in pairs]), mean_sd([b for _, b in pairs])
    return (f"\nresume check over {len(pairs)} agent seeds, --fill {fill}: held-out net PnL straight / resumed: "
            f"{each}\n  means {straight:,.0f} / {resumed:,.0f}; "
            f"resumed - straight: mean {mean:+,.0f}, sd {sd:,.0f} (t = {mean / (sd / math.sqrt(len(diffs))) if sd else 0:.1f})")
