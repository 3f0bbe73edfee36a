"""Calibration: the market figures of the calibration table (TRAINING_JOURNAL.md, H1) and the mid/index lead-lag, for recordings and the simulator.

    python -m benchmarks.calibration --recording mine.jsonl.gz [more.jsonl.gz ...]
    python -m benchmarks.calibration --sim --seeds 1,2,3,4 --windows 24 [--sim-profile lagged|FILE.json]
    python -m benchmarks.calibration --recording mine.jsonl.gz --sim --sim-profile fitted.json --json

Every figure is read from frames alone (`streamers.recording_stats`): a recording of the live venues,
of the simulator, or the simulator's own frames with `--sim`, all by the same reader, printed beside the
real reference values. Short runs are noisy: each figure shows the markets and samples behind it. With
`--sim`, a long run of the index alone (`--index-windows`) adds the return figures that need thousands
of windows (kurtosis above all).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import orjson

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.frames import ASSETS
from sim.fit import read_sim, seed_list
from sim.model import WINDOW, AssetPath
from sim.profiles import DEFAULT_PROFILE, ProfileError, SimProfile, load_profile
from streamers.recording import RecordingError
from streamers.recording_stats import LAGS, RecordingData, figures, lead_lag, read_recording

# real values (lo, hi): the real recordings' figures (TRAINING_JOURNAL.md, H1); lo == hi for a single figure
REAL: dict[str, tuple[float, float]] = {
    "spread_q10": (0.01, 0.01),
    "spread_q50": (0.01, 0.01),
    "spread_q90": (0.02, 0.02),
    "spread_q99": (0.04, 0.04),
    "mid_change_share": (0.47, 0.47),
    "mid_change_q50": (0.01, 0.01),
    "mid_change_q90": (0.03, 0.03),
    "mid_change_q99": (0.09, 0.09),
    "abs_dev_600_900": (0.14, 0.14),
    "abs_dev_300_600": (0.26, 0.26),
    "abs_dev_60_300": (0.37, 0.37),
    "abs_dev_0_60": (0.46, 0.46),
    "brier_600_900": (0.215, 0.215),
    "brier_300_600": (0.166, 0.166),
    "brier_60_300": (0.079, 0.079),
    "brier_0_60": (0.019, 0.019),
    "ret_std_BTC": (0.0022, 0.0022),
    "ret_std_ETH": (0.0029, 0.0029),
    "ret_std_SOL": (0.0033, 0.0033),
    "ret_std_XRP": (0.0028, 0.0028),
    "excess_kurtosis": (10.0, 15.0),
    "up_share": (0.49, 0.50),
    "vol_ratio": (1.0, 1.5),
    "lead_lag_peak_lag": (-1.0, -1.0),
    "lead_lag_peak_rho": (0.37, 0.37),
    "lead_lag_rho_0": (0.25, 0.25),
    "lead_lag_max_abs_from_2": (0.0, 0.08),
}

LABELS = {
    "spread_q10": "UP spread, q10",
    "spread_q50": "UP spread, q50",
    "spread_q90": "UP spread, q90",
    "spread_q99": "UP spread, q99",
    "mid_change_share": "1-s steps with a mid change",
    "mid_change_q50": "mid change size, q50",
    "mid_change_q90": "mid change size, q90",
    "mid_change_q99": "mid change size, q99",
    **{f"abs_dev_{lo}_{hi}": f"mean |mid-0.5|, {lo}-{hi} s left" for lo, hi in ((600, 900), (300, 600), (60, 300), (0, 60))},
    **{f"brier_{lo}_{hi}": f"Brier of the mid, {lo}-{hi} s left" for lo, hi in ((600, 900), (300, 600), (60, 300), (0, 60))},
    **{f"ret_std_{a}": f"15-min log-return std, {a}" for a in ASSETS},
    **{f"ret_std_rv_{a}": f"  same from 1-s Chainlink RV, {a}" for a in ASSETS},
    "excess_kurtosis": "excess kurtosis of 15-min returns",
    "up_share": "share of windows resolving Up",
    "vol_ratio": "vol implied by mids / realized",
    "depth_top_q10": "size at the UP top, q10 (shares)",
    "depth_top_q50": "size at the UP top, q50 (shares)",
    "depth_top_q90": "size at the UP top, q90 (shares)",
    "book_levels_q50": "UP book levels per side, q50",
    "lead_lag_peak_lag": "lead-lag: peak lag (s)",
    "lead_lag_peak_rho": "lead-lag: rho at the peak",
    "lead_lag_rho_0": "lead-lag: rho at 0 s",
    "lead_lag_max_abs_from_2": "lead-lag: max |rho| from +2 s",
}

COUNTS_SHOWN = (
    "frames", "rejected", "unknown_events", "book_mismatches", "samples", "samples_without_two_sided_book",
    "samples_book_out_of_sync", "markets", "markets_without_strike", "strikes_from_chainlink",
    "markets_without_outcome", "outcomes_from_resolved", "outcomes_from_chainlink",
    "outcomes_disagreeing_with_chainlink",
)  # fmt: skip


class BadInput(Exception):
    """One sentence for the user; exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise BadInput(f"{message} (see python -m benchmarks.calibration --help)")


def return_statistics(
    seed: int, windows: int, assets: tuple[str, ...] = ASSETS, profile: SimProfile | None = None
) -> dict[str, float]:
    """15-minute log-return std per asset, pooled excess kurtosis and Up share from a long index-only run
    (kurtosis needs thousands of windows, more than a full simulation affords)."""
    profile = profile or load_profile(None)
    out: dict[str, float] = {}
    pooled, ups = [], []
    for k, asset in enumerate(assets):
        rng = np.random.default_rng([seed, 1000 + k])
        path = AssetPath(profile.asset_params(asset), profile.model, rng, 0, keep_s=windows * WINDOW + WINDOW)
        path.ensure(windows * WINDOW)
        prices = np.asarray(path.prices[: windows * WINDOW + 1 : WINDOW])
        rets = np.diff(np.log(prices))
        out[f"ret_std_{asset}"] = float(np.std(rets))
        pooled.append(rets / np.std(rets))
        ups.append(rets >= 0.0)
    z = np.concatenate(pooled)
    out["excess_kurtosis"] = float(np.mean(z**4) / np.mean(z**2) ** 2 - 3.0)
    out["up_share"] = float(np.mean(np.concatenate(ups)))
    return out


def measure(datas: list[RecordingData]) -> dict:
    """Figures, lead-lag and counts of some recordings, as plain JSON-ready data."""
    figs = figures(datas)
    ll = lead_lag(datas)
    figs.update(ll.summary())
    counts: Counter[str] = Counter()
    for d in datas:
        counts.update(d.counts)
    return {
        "sources": [d.name for d in datas],
        "headers": [d.header for d in datas],
        "figures": {k: f.to_dict() for k, f in figs.items()},
        "lead_lag": {str(lag): f.to_dict() for lag, f in ll.rho.items()},
        "counts": dict(counts),
    }


def _real_text(key: str) -> str:
    ref = REAL.get(key)
    if ref is None:
        return ""
    lo, hi = ref
    if lo == hi:
        return f"{lo:g}"
    return f"<= {hi:g}" if lo == 0.0 else f"{lo:g} to {hi:g}"


def _cell(fig: dict | None) -> str:
    if fig is None or fig["value"] is None:
        return f"{'-':>10}{'':>16}"
    behind = f"{fig['n']} ({fig['markets']})"
    return f"{fig['value']:>10.4g}{behind:>16}"


def print_report(columns: dict[str, dict], extra: dict[str, float] | None) -> None:
    names = list(columns)
    head = "".join(f"{name:>10}{'n (markets)':>16}" for name in names)
    print(f"{'figure':<36}{head}{'real':>14}")
    keys = [k for k in LABELS if any(k in c["figures"] for c in columns.values())]
    for key in keys:
        cells = "".join(_cell(c["figures"].get(key)) for c in columns.values())
        print(f"{LABELS[key]:<36}{cells}{_real_text(key):>14}")
    print()
    print("lead-lag: rho of d(mid)(t + lag) with d(fair)(t), one-second steps pooled over markets")
    for chunk in (list(LAGS)[:20], list(LAGS)[20:]):
        print(f"{'lag (s)':<12}" + "".join(f"{lag:>6}" for lag in chunk))
        for name, c in columns.items():
            cells = []
            for lag in chunk:
                value = c["lead_lag"][str(lag)]["value"]
                cells.append(f"{'-':>6}" if value is None else f"{value:>6.2f}")
            print(f"{name:<12}" + "".join(cells))
    print("real        peak at -1 s (0.37), 0.25 at 0 s, |rho| <= 0.08 from +2 s")
    if extra:
        print()
        print(f"sim index only ({extra['windows']:.0f} windows per asset): "
              + ", ".join(f"{k} {v:.4g}" for k, v in extra.items() if k != "windows"))  # fmt: skip
    print()
    for name, c in columns.items():
        counts = c["counts"]
        shown = ", ".join(f"{k.replace('_', ' ')} {counts.get(k, 0)}" for k in COUNTS_SHOWN)
        print(f"{name}: {len(c['sources'])} source(s); {shown}")


def _describe(header: dict | None) -> str:
    """What produced a recording, from its `source` line."""
    if not header:
        return "no source line (recorded before headers, or by another tool)"
    text = f"source {header.get('source', '?')}"
    if "seed" in header:
        text += f", seed {header['seed']}"
    profile = header.get("sim_profile")
    if isinstance(profile, dict):
        text += f", profile {profile.get('name', '?')}"
    return text


def _assets(text: str) -> tuple[str, ...]:
    assets = tuple(a.strip().upper() for a in text.split(",") if a.strip())
    unknown = [a for a in assets if a not in ASSETS]
    if not assets or unknown:
        raise argparse.ArgumentTypeError(f"expected a comma list of {','.join(ASSETS)}, got {text!r}")
    return assets


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a whole number above 0, got {text!r}")
    return value


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = _Parser(prog="python -m benchmarks.calibration", description=__doc__.split("\n\n")[0])
    p.add_argument("--recording", nargs="+", metavar="FILE", default=[], help="recordings to measure (pooled)")
    p.add_argument("--sim", action="store_true", help="also measure the simulator's frames, read the same way")
    p.add_argument("--seeds", type=seed_list, default=[1, 2, 3, 4], help="simulator seeds (comma list)")
    p.add_argument("--windows", type=_positive, default=24, help="15-minute windows per simulator seed")
    p.add_argument("--assets", type=_assets, default=ASSETS, help="simulator assets (comma list)")
    p.add_argument("--sim-profile", default=DEFAULT_PROFILE,
                   help="simulator profile: realistic (default), lagged, or a JSON file from sim.fit")
    p.add_argument("--index-windows", type=int, default=2000,
                   help="windows of a long index-only run for the sim's return figures (0: none)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = p.parse_args(argv)
    if not args.recording and not args.sim:
        raise BadInput("nothing to measure: give --recording FILE and/or --sim")
    if args.index_windows < 0:
        raise BadInput(f"--index-windows must be 0 or more, got {args.index_windows}")
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parse(argv)
        columns: dict[str, dict] = {}
        extra: dict[str, float] | None = None
        t0 = time.perf_counter()
        if args.recording:
            columns["recording"] = measure([read_recording(path) for path in args.recording])
        t1 = time.perf_counter()
        if args.sim:
            profile = load_profile(args.sim_profile)
            columns["sim"] = measure(read_sim(args.seeds, args.assets, args.windows, profile))
            columns["sim"].update(
                seeds=args.seeds, windows=args.windows, assets=list(args.assets), profile=profile.to_dict()
            )
            if args.index_windows:
                extra = return_statistics(args.seeds[0], args.index_windows, args.assets, profile)
                extra["windows"] = args.index_windows
        t2 = time.perf_counter()
    except (BadInput, RecordingError, ProfileError) as exc:
        print(f"calibration: {exc}", file=sys.stderr)
        return 2
    if args.json:
        out = {"real": {k: list(v) for k, v in REAL.items()}, **columns}
        if extra is not None:
            out["sim_index_only"] = extra
        sys.stdout.write(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    if args.recording:
        print(f"recording: {len(args.recording)} file(s) read in {t1 - t0:.1f} s")
        for path, header in zip(args.recording, columns["recording"]["headers"], strict=True):
            print(f"  {path}: {_describe(header)}")
    if args.sim:
        print(f"sim: profile {columns['sim']['profile']['name']}, seeds {','.join(map(str, args.seeds))} x "
              f"{args.windows} windows x {','.join(args.assets)} in {t2 - t1:.1f} s")  # fmt: skip
    print()
    print_report(columns, extra)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
