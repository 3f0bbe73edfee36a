"""PNG charts from CSV logs: of any `run.py` run, or of `benchmarks/learning.py` runs.

    python -m benchmarks.charts --logs logs                      # the newest run.py run in logs/
    python -m benchmarks.charts --logs logs --run-id 20260101_120000 --out charts
    python -m benchmarks.charts --run standard=/tmp/std --run extended=/tmp/ext --out docs/img \
        --reference REFERENCE_LOGS   # the reference project's published training logs

A `run.py` run (`--logs DIR`, the files `trades_<run id>.csv` and `updates_<run id>.csv` that it writes)
gets its equity curve, PnL by asset, trade PnL distribution and, when it trained, entropy and explained
variance over PPO updates; logs with no trade and no update are refused rather than drawn blank.

Each `--run LABEL=DIR` is a learning benchmark output folder (`--out`): its training logs
(`updates_*_train_*.csv`, `episodes_*_train_*.csv`, in the order they were written) and its held-out
evaluation logs (`episodes_eval_<strategy>_<fill>_s<seed>.csv`). Runs made with `--agent-seeds` get one
chart instead: held-out net PnL per agent seed, recipe beside recipe. Needs matplotlib (optional extra).
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import sys
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_EVAL = re.compile(r"episodes_eval_(?P<strategy>.+)_(?P<fill>book|mid)_s(?P<seed>\d+)\.csv$")
_AGENT_TRAIN = re.compile(r"^(?P<kind>updates|episodes)_rla(?P<agent>\d+)_train_s(?P<seed>\d+)\.csv$")
_AGENT = re.compile(r"^a(?P<seed>\d+)(?P<selected>sel)?$")  # `--agent-seeds` runs: a3 = last model, a3sel = picked


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _by_time(paths: list[Path]) -> list[Path]:
    return sorted(paths, key=lambda p: p.stat().st_mtime)


def training_updates(run_dir: Path) -> list[dict[str, str]]:
    """Every PPO update row of the run's training, in order."""
    return [r for p in _by_time(list(run_dir.glob("updates_*_train_*.csv"))) for r in _rows(p)]


def training_window_pnls(run_dir: Path) -> list[float]:
    """PnL per completed training window (assets summed), in the order trained."""
    out: list[float] = []
    for path in _by_time(list(run_dir.glob("episodes_*_train_*.csv"))):
        rows = _rows(path)
        partial = {r["window_start"] for r in rows if r["outcome"] == "shutdown"}  # cut off by the run's end
        totals: dict[str, float] = defaultdict(float)
        for r in rows:
            totals[r["window_start"]] += float(r["pnl"])
        out += [totals[k] for k in sorted(totals) if k not in partial]
    return out


def eval_episodes(run_dir: Path, fill: str) -> dict[str, list[dict[str, str]]]:
    """Held-out episode rows per strategy for one fill mode, seeds in order."""
    found: dict[str, list[tuple[int, Path]]] = defaultdict(list)
    for path in run_dir.glob("episodes_eval_*.csv"):
        m = _EVAL.search(path.name)
        if m and m["fill"] == fill:
            found[m["strategy"]].append((int(m["seed"]), path))
    return {s: [r for _, p in sorted(paths) for r in _rows(p)] for s, paths in sorted(found.items())}


def _window_series(rows: list[dict[str, str]]) -> list[float]:
    """PnL per completed window (assets summed) in the order the rows list them; seeds have distinct starts."""
    partial = {r["window_start"] for r in rows if r["outcome"] == "shutdown"}
    totals: dict[str, float] = {}
    for r in rows:
        if r["window_start"] not in partial:
            totals[r["window_start"]] = totals.get(r["window_start"], 0.0) + float(r["pnl"])
    return list(totals.values())


def _rolling_mean(values: list[float], n: int) -> list[float]:
    """Trailing mean over up to n values: single updates are too noisy to read by eye."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v - (values[i - n] if i >= n else 0.0)
        out.append(total / min(i + 1, n))
    return out


class NothingToDraw(Exception):
    """The logs hold no row any chart could be drawn from."""


def require_matplotlib() -> None:
    """Raise ImportError with what to install; imported only when drawing, so --help needs none of it."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display
        import matplotlib.pyplot
    except ImportError:
        raise ImportError("charts need matplotlib: pip install -e '.[bench]'") from None


def _subplots(*args: Any, **kwargs: Any) -> tuple[Figure, Any]:
    require_matplotlib()
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def _save(fig: Figure, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _cumulative(values: list[float]) -> list[float]:
    out, total = [], 0.0
    for v in values:
        total += v
        out.append(total)
    return out


def plot_equity(runs: dict[str, Path], fill: str, out: Path) -> Path:
    """Held-out cumulative PnL per window for every strategy (the first run's baselines, each run's rl)."""
    fig, ax = _subplots(figsize=(9, 5))
    first = True
    for label, run_dir in runs.items():
        for strategy, rows in eval_episodes(run_dir, fill).items():
            is_rl = strategy.startswith("rl")
            if not is_rl and not first:
                continue  # the baselines are the same on every run
            name = f"rl ({label})" if is_rl else strategy
            ax.plot(_cumulative(_window_series(rows)), label=name, linewidth=2.2 if is_rl else 1.2)
        first = False
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_xlabel("held-out 15-minute window (seeds in order)")
    ax.set_ylabel("cumulative net PnL ($)")
    ax.set_title(f"Equity on held-out seeds, --fill {fill}")
    ax.legend(fontsize=8)
    return _save(fig, out / f"equity_{fill}.png")


def plot_pnl_by_asset(runs: dict[str, Path], fill: str, out: Path) -> Path:
    """Held-out net PnL per asset, grouped bars per strategy."""
    table: dict[str, dict[str, float]] = {}
    first = True
    for label, run_dir in runs.items():
        for strategy, rows in eval_episodes(run_dir, fill).items():
            is_rl = strategy.startswith("rl")
            if not is_rl and not first:
                continue
            per_asset: dict[str, float] = defaultdict(float)
            for r in rows:
                per_asset[r["asset"]] += float(r["pnl"])
            table[f"rl ({label})" if is_rl else strategy] = per_asset
        first = False
    assets = sorted({a for v in table.values() for a in v})
    fig, ax = _subplots(figsize=(9, 5))
    width = 0.8 / max(1, len(assets))
    for i, asset in enumerate(assets):
        xs = [j + i * width for j in range(len(table))]
        ax.bar(xs, [table[s].get(asset, 0.0) for s in table], width, label=asset)
    ax.set_xticks([j + width * (len(assets) - 1) / 2 for j in range(len(table))])
    ax.set_xticklabels(list(table), rotation=30, ha="right", fontsize=8)
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_ylabel("net PnL ($)")
    ax.set_title(f"Held-out net PnL by asset, --fill {fill}")
    ax.legend()
    return _save(fig, out / f"pnl_by_asset_{fill}.png")


def plot_entropy(runs: dict[str, Path], reference: Path | None, out: Path) -> Path:
    """Policy entropy per PPO update of each run's training, beside the reference project's logs."""
    fig, ax = _subplots(figsize=(9, 5))
    for label, run_dir in runs.items():
        values = [float(r["entropy"]) for r in training_updates(run_dir)]
        ax.plot(_rolling_mean(values, 10), label=f"ours: {label} (mean of 10 updates)")
    if reference is not None:
        for path in sorted(reference.glob("updates_*.csv")):
            values = [float(r["entropy"]) for r in _rows(path) if r.get("entropy")]
            ax.plot(values, linestyle="--", linewidth=1.0, label=f"reference {path.stem}")
    ax.axhline(1.0986, color="grey", linewidth=0.8, linestyle=":", label="uniform over 3 actions (ln 3)")
    ax.set_xlabel("PPO update")
    ax.set_ylabel("policy entropy (nats)")
    ax.set_title("Entropy over updates")
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, out / "entropy.png")


def plot_training_equity(runs: dict[str, Path], out: Path) -> Path:
    """Cumulative PnL over the training windows (stochastic policy, learning as it goes)."""
    fig, ax = _subplots(figsize=(9, 5))
    for label, run_dir in runs.items():
        ax.plot(_cumulative(training_window_pnls(run_dir)), label=label)
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_xlabel("training window")
    ax.set_ylabel("cumulative net PnL while training ($)")
    ax.set_title("Training equity (--fill book)")
    ax.legend(fontsize=8)
    return _save(fig, out / "training_equity.png")


def agent_seed_pnls(run_dir: Path, fill: str) -> dict[str, dict[int, float]]:
    """Held-out net PnL per agent seed of an `--agent-seeds` run: {"last": {seed: pnl}, "selected": {...}}."""
    out: dict[str, dict[int, float]] = {"last": {}, "selected": {}}
    for strategy, rows in eval_episodes(run_dir, fill).items():
        m = _AGENT.match(strategy)
        if m:
            out["selected" if m["selected"] else "last"][int(m["seed"])] = sum(float(r["pnl"]) for r in rows)
    return out


def plot_agent_seeds(runs: dict[str, Path], fill: str, out: Path) -> Path | None:
    """Held-out net PnL of each agent seed's model, recipe beside recipe, against fair_value's line."""
    series: dict[str, dict[int, float]] = {}
    fair = None
    for label, run_dir in runs.items():
        pnls = agent_seed_pnls(run_dir, fill)
        for kind, name in (("last", label), ("selected", f"{label}, picked on validation")):
            if pnls[kind]:
                series[name] = pnls[kind]
        rows = eval_episodes(run_dir, fill).get("fair_value")
        if rows and fair is None:
            fair = sum(float(r["pnl"]) for r in rows)
    if not series:
        return None
    seeds = sorted({s for values in series.values() for s in values})
    fig, ax = _subplots(figsize=(9, 5))
    width = 0.8 / len(series)
    for i, (name, values) in enumerate(series.items()):
        ax.bar([j + i * width for j in range(len(seeds))], [values.get(s, 0.0) for s in seeds], width, label=name)
    if fair is not None:
        ax.axhline(fair, color="black", linewidth=1.2, linestyle="--", label=f"fair_value (${fair:,.0f})")
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_xticks([j + width * (len(series) - 1) / 2 for j in range(len(seeds))])
    ax.set_xticklabels([f"agent seed {s}" for s in seeds], fontsize=8)
    ax.set_ylabel("held-out net PnL ($)")
    ax.set_title(f"Held-out net PnL per agent seed, --fill {fill}")
    ax.legend(fontsize=8)
    return _save(fig, out / f"agent_seeds_{fill}.png")


def agent_training(run_dir: Path) -> dict[int, dict[str, float]]:
    """Per training seed, the mean over agents of its mean explained variance and of its training PnL."""
    ev: dict[int, list[float]] = defaultdict(list)
    pnl: dict[int, list[float]] = defaultdict(list)
    for path in run_dir.iterdir():
        m = _AGENT_TRAIN.match(path.name)
        if not m:
            continue
        rows = _rows(path)
        if m["kind"] == "updates":
            values = [float(r["explained_variance"]) for r in rows if r.get("explained_variance")]
            if values:
                ev[int(m["seed"])].append(sum(values) / len(values))
        else:
            pnl[int(m["seed"])].append(sum(float(r["pnl"]) for r in rows))
    return {
        seed: {"ev": sum(ev[seed]) / len(ev[seed]) if ev[seed] else float("nan"),
               "pnl": sum(pnl[seed]) / len(pnl[seed]) if pnl[seed] else float("nan")}
        for seed in sorted(set(ev) | set(pnl))
    }


def plot_agent_training(runs: dict[str, Path], out: Path) -> Path | None:
    """Explained variance and training PnL per training seed, averaged over an `--agent-seeds` run's agents."""
    tables = {label: agent_training(d) for label, d in runs.items()}
    if not any(tables.values()):
        return None
    fig, (top, bottom) = _subplots(2, 1, figsize=(9, 7), sharex=True)
    for label, table in tables.items():
        seeds = list(table)
        top.plot(range(1, len(seeds) + 1), [table[s]["ev"] for s in seeds], marker="o", label=label)
        bottom.plot(range(1, len(seeds) + 1), [table[s]["pnl"] for s in seeds], marker="o", label=label)
    top.axhline(0.0, color="grey", linewidth=0.8)
    bottom.axhline(0.0, color="grey", linewidth=0.8)
    top.set_ylabel("critic explained variance")
    bottom.set_ylabel("training PnL per seed ($)")
    bottom.set_xlabel("training seed in order (10 windows each)")
    top.set_title("While training, mean over agent seeds")
    top.legend(fontsize=8)
    return _save(fig, out / "agent_training.png")


# ---- one run.py run ---------------------------------------------------------------------------

_RUN_FILE = re.compile(r"^(?P<kind>trades|updates|episodes)_(?P<run_id>.+)\.csv$")


def run_ids(logs: Path) -> list[str]:
    """The run ids of the run.py logs in `logs`, newest first (by their files' modification time)."""
    latest: dict[str, float] = {}
    for path in logs.iterdir():
        m = _RUN_FILE.match(path.name)
        if m and path.is_file():
            latest[m["run_id"]] = max(latest.get(m["run_id"], 0.0), path.stat().st_mtime)
    return sorted(latest, key=lambda r: (latest[r], r), reverse=True)


def _money(x: float) -> str:
    return f"${x:+,.2f}"


def _colours(values: list[float]) -> list[str]:
    return ["tab:green" if v >= 0 else "tab:red" for v in values]


def plot_run_equity(trades: list[dict[str, str]], path: Path, name: str) -> Path:
    """Cumulative net PnL at each trade's exit time."""
    times = [datetime.fromisoformat(r["timestamp"]) for r in trades]
    equity = _cumulative([float(r["pnl"]) for r in trades])
    fig, ax = _subplots(figsize=(9, 5))
    ax.step(times, equity, where="post", color="black", linewidth=1.2)
    ax.fill_between(times, equity, 0.0, where=[v >= 0 for v in equity], step="post", color="tab:green", alpha=0.3)
    ax.fill_between(times, equity, 0.0, where=[v < 0 for v in equity], step="post", color="tab:red", alpha=0.3)
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_xlabel("clock time (UTC)")
    ax.set_ylabel("cumulative net PnL ($)")
    ax.set_title(f"Equity, run {name}: {_money(equity[-1])} after {len(trades):,} trades")
    fig.autofmt_xdate()
    return _save(fig, path)


def plot_run_pnl_by_asset(trades: list[dict[str, str]], path: Path, name: str) -> Path:
    """Net PnL per asset, trade counts on the bars."""
    pnl: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for r in trades:
        pnl[r["asset"]] += float(r["pnl"])
        count[r["asset"]] += 1
    assets = sorted(pnl)
    values = [pnl[a] for a in assets]
    fig, ax = _subplots(figsize=(7, 5))
    bars = ax.bar(assets, values, color=_colours(values), width=0.6)
    ax.set_xlim(-0.75, max(len(assets), 3) - 0.25)  # one or two assets: bars keep the same width
    ax.bar_label(bars, labels=[f"{_money(v)}\n{count[a]:,} trades" for a, v in zip(assets, values, strict=True)],
                 fontsize=8)
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.margins(y=0.2)
    ax.set_ylabel("net PnL ($)")
    ax.set_title(f"Net PnL by asset, run {name}")
    return _save(fig, path)


def plot_trade_pnl(trades: list[dict[str, str]], path: Path, name: str) -> Path:
    """Histogram of per-trade net PnL, gains and losses apart, the mean marked."""
    values = [float(r["pnl"]) for r in trades]
    low, high = min(values), max(values)
    if high - low < 1e-9:  # one value: give the single bar some width
        low, high = low - 0.5, high + 0.5
    step = (high - low) / max(10, min(60, int(math.sqrt(len(values)) * 2)))
    first = math.floor(low / step)  # bin edges on multiples of step: zero is an edge, no bin mixes gains and losses
    bins = [(first + i) * step for i in range(math.ceil(high / step) - first + 1)]
    wins = [v for v in values if v > 0]
    losses = [v for v in values if v <= 0]
    mean = sum(values) / len(values)
    fig, ax = _subplots(figsize=(9, 5))
    ax.hist([losses, wins], bins=bins, stacked=True, color=["tab:red", "tab:green"],
            label=[f"losses and flat ({len(losses):,})", f"gains ({len(wins):,})"])
    ax.axvline(mean, color="black", linestyle="--", linewidth=1.0, label=f"mean {_money(mean)}")
    ax.set_xlabel("net PnL per trade ($)")
    ax.set_ylabel("trades")
    ax.set_title(f"Trade PnL distribution, run {name}: win rate {100 * len(wins) / len(values):.1f}%")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_run_learning(updates: list[dict[str, str]], path: Path, name: str) -> Path:
    """Entropy and explained variance per PPO update, each with a 10-update trailing mean."""
    steps = [int(r["update_num"]) if r.get("update_num") else i + 1 for i, r in enumerate(updates)]
    entropy = [float(r["entropy"]) for r in updates]
    explained = [float(r["explained_variance"]) if r.get("explained_variance") else math.nan for r in updates]
    fig, (top, bottom) = _subplots(2, 1, figsize=(9, 7), sharex=True)
    top.plot(steps, entropy, color="tab:cyan", linewidth=0.8, alpha=0.6, label="per update")
    top.plot(steps, _rolling_mean(entropy, 10), color="tab:blue", linewidth=2.0, label="mean of 10 updates")
    top.axhline(1.0986, color="grey", linewidth=0.8, linestyle=":", label="uniform over 3 actions (ln 3)")
    top.set_ylabel("policy entropy (nats)")
    top.set_title(f"Learning, run {name}: {len(updates):,} PPO updates")
    top.legend(fontsize=7, loc="lower left")
    bottom.plot(steps, explained, color="tab:pink", linewidth=0.8, alpha=0.6, label="per update")
    bottom.plot(steps, _rolling_mean([0.0 if v != v else v for v in explained], 10), color="tab:purple",
                linewidth=2.0, label="mean of 10 updates")
    bottom.axhline(0.0, color="grey", linewidth=0.8)
    bottom.set_ylabel("critic explained variance")
    bottom.set_xlabel("PPO update")
    bottom.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def draw_run(trades: Path | None, updates: Path | None, out: Path, name: str) -> list[Path]:
    """The charts of one run.py run as `<chart>_<name>.png` in `out`; NothingToDraw when its logs have no row."""
    trade_rows = _rows(trades) if trades is not None and trades.is_file() else []
    update_rows = [r for r in _rows(updates) if r.get("entropy")] if updates is not None and updates.is_file() else []
    if not trade_rows and not update_rows:
        named = " and ".join(str(p) for p in (trades, updates) if p is not None) or "the logs"
        raise NothingToDraw(f"{named} hold no trade and no PPO update: nothing to draw")
    written = []
    if trade_rows:
        written += [plot_run_equity(trade_rows, out / f"equity_{name}.png", name),
                    plot_run_pnl_by_asset(trade_rows, out / f"pnl_by_asset_{name}.png", name),
                    plot_trade_pnl(trade_rows, out / f"trade_pnl_{name}.png", name)]
    if update_rows:
        written.append(plot_run_learning(update_rows, out / f"learning_{name}.png", name))
    return written


def draw_logs(logs: Path, run_id: str | None, out: Path) -> list[Path]:
    """Charts of the run `run_id` (default: the newest) among the run.py logs in the folder `logs`."""
    ids = run_ids(logs)
    if not ids:
        raise NothingToDraw(f"{logs} holds no run.py logs (trades_<run>.csv, updates_<run>.csv): nothing to draw")
    if run_id is None:
        run_id = ids[0]
    elif run_id not in ids:
        raise NothingToDraw(f"{logs} has no run {run_id!r}; its runs, newest first: {', '.join(ids[:5])}")
    return draw_run(logs / f"trades_{run_id}.csv", logs / f"updates_{run_id}.csv", out, run_id)


# ---- the command line ---------------------------------------------------------------------------


class _BadInput(Exception):
    """One sentence for the user, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one sentence, no usage dump
        raise _BadInput(f"{message} (see python -m benchmarks.charts --help)")


def _learning_runs(args: argparse.Namespace, out: Path) -> list[Path | None]:
    runs = {}
    for item in args.run:
        label, _, folder = item.partition("=")
        if not folder or not Path(folder).is_dir():
            raise _BadInput(f"--run {item!r}: expected LABEL=DIR with an existing folder")
        runs[label] = Path(folder)
    fills = [f for f in args.fills.split(",") if f]
    several = any(agent_seed_pnls(d, fill)["last"] for d in runs.values() for fill in ("book", "mid"))
    written: list[Path | None] = []
    if several:  # one curve per agent would be unreadable: training and equity curves are per single-agent run
        written.append(plot_agent_training(runs, out))
        written += [plot_agent_seeds(runs, fill, out) for fill in fills]
    else:
        if any(training_updates(d) for d in runs.values()):
            written.append(plot_entropy(runs, Path(args.reference) if args.reference else None, out))
        if any(training_window_pnls(d) for d in runs.values()):
            written.append(plot_training_equity(runs, out))
        for fill in fills:
            if any(eval_episodes(d, fill) for d in runs.values()):
                written += [plot_equity(runs, fill, out), plot_pnl_by_asset(runs, fill, out)]
    if not any(written):
        raise NothingToDraw(f"{', '.join(map(str, runs.values()))}: no training or evaluation logs to draw")
    return written


def main(argv: list[str] | None = None) -> int:
    p = _Parser(prog="python -m benchmarks.charts", description=__doc__.split("\n\n")[0])
    p.add_argument("--logs", metavar="DIR", help="a run.py log folder (its --log-dir): chart one run")
    p.add_argument("--run-id", metavar="ID", help="with --logs: which run (default: the newest)")
    p.add_argument("--run", action="append", metavar="LABEL=DIR", help="a learning benchmark folder (repeatable)")
    p.add_argument("--out", default=None, help="folder for the PNG files (default: the --logs folder; docs/img with --run)")
    p.add_argument("--reference", default=None, help="with --run: folder of the reference project's updates_*.csv")
    p.add_argument("--fills", default="book,mid", help="with --run: the fill modes to draw")
    try:
        args = p.parse_args(argv)
        if bool(args.logs) == bool(args.run):
            raise _BadInput("give either --logs DIR (a run.py run) or --run LABEL=DIR (learning benchmark folders)")
        if args.run_id and not args.logs:
            raise _BadInput("--run-id picks a run in --logs DIR")
        if args.logs and not Path(args.logs).is_dir():
            raise _BadInput(f"--logs {args.logs}: no such folder")
        out = Path(args.out or args.logs or "docs/img")
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _BadInput(f"--out: cannot create the folder {out}: {exc.strerror or exc}") from None
        require_matplotlib()
        written = draw_logs(Path(args.logs), args.run_id, out) if args.logs else _learning_runs(args, out)
    except (_BadInput, NothingToDraw, ImportError) as exc:
        print(f"charts: {exc}", file=sys.stderr)
        return 2
    for path in written:
        if path is not None:
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
