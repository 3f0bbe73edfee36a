"""`python -m sim.fit REC [REC ...] --out profile.json`: a simulator profile fitted to recordings.

    python -m sim.fit mine.jsonl.gz --out mine.json
    python -m benchmarks.calibration --recording mine.jsonl.gz --sim --sim-profile mine.json
    python run.py --source sim --sim-profile mine.json ...

Recordings are read with the calibration reader (`streamers.recording_stats`), so any recording works:
of the live venues, of the simulator, of a replay. Two stages:

1. What a recording shows directly is measured directly: the spread distribution and how often it
   changes, the book's depth (levels per side, the size at the top, its log-normal spread and how often
   it changes), where within a second the quotes move (the maker's reaction), how late Chainlink reaches
   RTDS, and per asset, when Chainlink prices are present, the volatility (1-s realized variance) and how
   much it wanders from window to window (bipower variation, so jumps do not count as wandering).
2. What only the whole market shows is matched by simulation: a twin runs the current guess on fixed
   seeds, is read the same way, and four parameters move toward their figures for a few rounds:
   requote_threshold <- the mean size of a mid change (the maker moves once its target is this far off);
   futures_delay_s <- the centroid of the mid/fair lead-lag over lags -3..3 (the maker's lead over the
   public index); quote_noise_std <- how far the mid wanders from the Chainlink fair value in 10 s;
   maker_vol_scale <- the volatility the mids imply over the one Chainlink realized (Chainlink rather
   than futures: the futures basis makes that ratio depend on the seeds' regime). The round whose
   figures came closest is kept; the share of steps with a mid change is printed as a check.

Every other parameter keeps the base profile's value (`--base`, realistic by default).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from sim.model import WINDOW, ModelParams
from sim.profiles import DEFAULT_PROFILE, ProfileError, SimProfile, load_profile
from sim.source import SimSource
from streamers.frames import ASSETS, Frame
from streamers.recording import RecordingError
from streamers.recording_stats import (
    RTDS_DELAY_MIN_S,
    RecordingData,
    figures,
    lead_lag,
    market_arrays,
    read,
    read_recording,
    vol_ratio,
)

MIN_SAMPLES = 20  # fewer observations than this leave a parameter at the base value
SPREAD_CENTS_MAX = 10  # wider spreads count as this many cents
BOOK_LEVELS_MAX = 30  # deeper real books are quoted this deep (every level is a message on each requote)
NOISE_LAG_S = 10  # the mid's wander from the fair value is measured over this many seconds
CENTROID_LAGS = range(-3, 4)
# how the mean mid change responds to the threshold (measured on the realistic profile; the rounds correct the rest)
CHANGE_ELASTICITY = 0.6  # d ln(mean size of a mid change) / d ln(requote_threshold)
VOL_RATIO_ELASTICITY = 0.8  # d ln(implied / realized Chainlink vol) / d ln(maker_vol_scale)
DAMPING = 0.7  # after the first round, steps are shortened to this share (the twin's figures are noisy)
MAX_LOG_STEP = math.log(2.0)  # the threshold at most halves or doubles per round


class FitError(Exception):
    """Recordings that cannot be fitted; the message is one sentence for the user."""


def sim_frames(
    seed: int, assets: tuple[str, ...], windows: int, profile: SimProfile | None = None
) -> tuple[Iterator[Frame], int]:
    """The frames a `--source sim` run records for `windows` windows, and the second the last window ends."""
    source = SimSource(seed, assets, background=False, profile=profile)
    end = source.start_time + windows * WINDOW
    stop = end + 3  # the last window's resolution and closing Chainlink price arrive within a second

    def frames() -> Iterator[Frame]:
        for frame in source.iter_frames():
            if frame.t >= stop:
                return
            yield frame

    return frames(), end


def read_sim(
    seeds: Sequence[int], assets: tuple[str, ...], windows: int, profile: SimProfile | None = None
) -> list[RecordingData]:
    """The simulator's frames for each seed, read as a recording would be."""
    out = []
    for seed in seeds:
        frames, end = sim_frames(seed, assets, windows, profile)
        out.append(read(frames, f"sim seed {seed}", last_second=end))
    return out


@dataclass(slots=True)
class Moments:
    """The figures the simulated stage matches (None: the recording does not show it)."""

    mean_change: float | None  # mean size of a 1-s mid change (targets requote_threshold)
    centroid: float | None  # lead-lag centroid (s), negative when the mid moves first (targets futures_delay_s)
    wander: float | None  # median |10-s change of logit(mid) - logit(Chainlink fair)| (targets quote_noise_std)
    vol_ratio: float | None  # median vol implied by the mids over the realized Chainlink vol (maker_vol_scale)
    share: float | None  # share of 1-s steps in which the UP mid changes (a check)

    def line(self) -> str:
        def f(x: float | None, spec: str) -> str:
            return "-" if x is None else format(x, spec)

        return (f"mean mid change {f(self.mean_change, '.4f')}, lead-lag centroid {f(self.centroid, '+.2f')} s, "
                f"10-s wander {f(self.wander, '.3f')}, vol ratio {f(self.vol_ratio, '.3f')} | "
                f"mid-change share {f(self.share, '.3f')}")  # fmt: skip


def _has_futures(datas: list[RecordingData]) -> bool:
    return any(np.isfinite(s.futures).any() for d in datas for s in d.assets.values())


def _has_chainlink(datas: list[RecordingData]) -> bool:
    return any(np.isfinite(s.chainlink).any() for d in datas for s in d.assets.values())


def measure_moments(datas: list[RecordingData], via: str = "auto", wander_via: str = "chainlink") -> Moments:
    figs = figures(datas)
    rho = lead_lag(datas, via).rho
    weights = {lag: max(rho[lag].value or 0.0, 0.0) for lag in CENTROID_LAGS}
    total = sum(weights.values())
    centroid = sum(lag * w for lag, w in weights.items()) / total if total > 0.0 else None
    sizes = []
    for m in (m for d in datas for m in market_arrays(d)):
        step = np.abs(np.diff(m.mid))[np.diff(m.secs) == 1]
        sizes.append(step[np.isfinite(step) & (step > 1e-9)])
    size = np.concatenate(sizes) if sizes else np.empty(0)
    mean_change = float(np.mean(size)) if len(size) >= MIN_SAMPLES else None
    changes = []
    for m in (m for d in datas for m in market_arrays(d, wander_via)):
        ok = (m.left > 30) & (m.mid > 0.1) & (m.mid < 0.9) & (m.fair > 0.02) & (m.fair < 0.98)
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.where(ok, np.log(m.mid / (1.0 - m.mid)) - np.log(m.fair / (1.0 - m.fair)), np.nan)
        # samples are one per second within a market, so an index offset is a time offset
        d = r[NOISE_LAG_S:] - r[:-NOISE_LAG_S]
        changes.append(d[np.isfinite(d)])
    pooled = np.concatenate(changes) if changes else np.empty(0)
    wander = float(np.median(np.abs(pooled))) if len(pooled) >= MIN_SAMPLES else None
    return Moments(mean_change, centroid, wander, vol_ratio(datas, wander_via).value, figs["mid_change_share"].value)


# ---------------------------------------------------------------------------------------------- direct


def _uniform_range(counts: list[int], start: float, cap: float) -> tuple[float, float] | None:
    """(lo, hi) of a uniform distribution from the 5 % and 95 % quantiles of a timing histogram, inside [0, cap]."""
    q = RecordingData.quantiles(counts, [0.05, 0.95], start)
    if q is None or sum(counts) < MIN_SAMPLES:
        return None
    q05, q95 = q
    width = (q95 - q05) / 0.9
    lo = min(max(q05 - 0.05 * width, 0.0), cap)
    return float(lo), float(min(max(q95 + 0.05 * width, lo), cap))


@dataclass(slots=True)
class Estimate:
    name: str
    value: object  # the profile value
    basis: str  # what it was read from, for people


def _vol_of_vol(datas: list[RecordingData], half_life_s: float) -> tuple[float, int] | None:
    """Stationary std of log volatility from how the per-window bipower variance wanders, corrected for the
    part of the wander that windows close together cannot show (the regime persists for `half_life_s`)."""
    a = 0.5 ** (WINDOW / half_life_s)
    ss = expected = 0.0
    n_windows = 0
    for d in datas:
        for series in d.assets.values():
            full = sorted((w, v) for w, v in series.rv.items() if v[1] >= 0.95 * WINDOW and v[2] > 0.0)
            if len(full) < 2:
                continue
            t = np.array([w for w, _ in full], dtype=float) / WINDOW
            y = np.log([v[2] / v[1] for _, v in full])  # ln of the bipower variance per second
            n = len(y)
            ss += float(np.sum((y - y.mean()) ** 2))
            corr = a ** np.abs(t[:, None] - t[None, :])
            # ln variance = 2 ln vol: the sum of squares holds 4 v^2 (n - mean correlation x n)
            expected += 4.0 * (n - float(corr.sum()) / n)
            n_windows += n
    if n_windows < 4 or expected <= 0.0:
        return None
    return math.sqrt(ss / expected), n_windows


def direct_estimates(datas: list[RecordingData], base: ModelParams) -> tuple[list[Estimate], dict[str, float]]:
    """Model parameters read straight off the recordings, and each asset's 15-minute return std."""
    out: list[Estimate] = []
    arrays = [m for d in datas for m in market_arrays(d)]
    spreads, spread_steps, spread_changes = [], 0, 0
    levels, sizes = [], []
    size_steps = size_changes = 0
    for m in arrays:
        inner = np.isfinite(m.mid) & (m.mid >= 0.05) & (m.mid <= 0.95)  # no clamping at the edges of [0, 1]
        spreads.append(m.spread[inner])
        both = inner[1:] & inner[:-1] & (np.diff(m.secs) == 1)
        spread_steps += int(both.sum())
        spread_changes += int((np.abs(np.diff(m.spread)) > 1e-9)[both].sum())
        central = np.isfinite(m.mid) & (m.mid >= 0.1) & (m.mid <= 0.9)  # full ladders
        levels.append(np.asarray(m.trace.levels)[central])
        for price, size in ((m.trace.bid, m.trace.bid_size), (m.trace.ask, m.trace.ask_size)):
            p, q = np.asarray(price), np.asarray(size)
            sizes.append(q[central])
            same = central[1:] & central[:-1] & (np.diff(m.secs) == 1) & (np.abs(np.diff(p)) < 1e-9)
            size_steps += int(same.sum())
            size_changes += int((np.abs(np.diff(q)) > 1e-9)[same].sum())
    spread = np.concatenate(spreads) if spreads else np.empty(0)
    probs: tuple[float, ...] | None = None
    if len(spread) >= MIN_SAMPLES:
        cents = np.clip(np.rint(spread * 100.0).astype(int), 1, SPREAD_CENTS_MAX)
        counts = np.bincount(cents, minlength=2)
        probs = tuple(float(c) / len(cents) for c in counts)
        out.append(Estimate("spread_ticks_probs", probs, f"{len(spread)} one-second spreads"))
    if probs is not None and spread_steps >= MIN_SAMPLES:
        redraw_changes = 1.0 - sum(p * p for p in probs)  # a redraw changes the spread this often
        rate = spread_changes / spread_steps
        value = min(rate / redraw_changes, 1.0) if redraw_changes > 0 else base.spread_resample_prob
        out.append(Estimate("spread_resample_prob", value, f"{spread_changes} spread changes in {spread_steps} steps"))
    level = np.concatenate(levels) if levels else np.empty(0)
    book_levels = base.book_levels
    if len(level) >= MIN_SAMPLES:
        book_levels = min(max(1, int(np.median(level))), BOOK_LEVELS_MAX)
        out.append(Estimate("book_levels", book_levels, f"{len(level)} books with the mid in 0.1-0.9"))
    size = np.concatenate(sizes) if sizes else np.empty(0)
    size = size[np.isfinite(size) & (size > 0)]
    if len(size) >= MIN_SAMPLES:
        q25, q50, q75 = np.quantile(np.log(size), [0.25, 0.5, 0.75])
        out.append(Estimate("size_median", float(math.exp(q50)), f"{len(size)} sizes at the top"))
        out.append(Estimate("size_sigma", float(max((q75 - q25) / 1.349, 0.05)), "their interquartile range"))
    if size_steps >= MIN_SAMPLES:
        # one level of one side is redrawn per update: the top of a given side 1 / (2 x levels) of the time
        value = min(1.0, 2.0 * book_levels * size_changes / size_steps)
        out.append(Estimate("size_update_prob", value, f"{size_changes} top-size changes in {size_steps} steps"))
    fractions = [sum(c) for c in zip(*(d.quote_fractions for d in datas), strict=True)]
    reaction = _uniform_range(fractions, 0.0, 0.99)
    if reaction is not None:
        out.append(Estimate("maker_reaction_s", reaction, f"{sum(fractions)} price_change arrival times in their second"))
    delays = [sum(c) for c in zip(*(d.rtds_delays for d in datas), strict=True)]
    rtds = _uniform_range(delays, RTDS_DELAY_MIN_S, 0.99)
    if rtds is not None:
        out.append(Estimate("rtds_delay_s", rtds, f"{sum(delays)} Chainlink receive-minus-source times"))
    vov = _vol_of_vol(datas, base.vol_half_life_s)
    if vov is not None:
        out.append(Estimate("vol_of_vol", float(min(max(vov[0], 0.05), 2.0)), f"{vov[1]} full windows' bipower variance"))
    stds: dict[str, float] = {}
    for asset in ASSETS:
        realized = [d.assets[asset].realized() for d in datas if asset in d.assets]
        rv_sum, seconds = sum(r[0] for r in realized), sum(r[1] for r in realized)
        if seconds >= 600:
            stds[asset] = math.sqrt(rv_sum / seconds * WINDOW)
    return out, stds


# ---------------------------------------------------------------------------------------------- simulated


@dataclass(slots=True)
class _Guess:
    threshold: float
    delay_centre: float
    noise: float
    vol_scale: float

    def apply(self, model: ModelParams, delay_width: float) -> ModelParams:
        lo = max(self.delay_centre - delay_width / 2.0, 0.0)
        hi = max(self.delay_centre + delay_width / 2.0, lo)
        return replace(
            model, requote_threshold=self.threshold, futures_delay_s=(lo, hi), quote_noise_std=self.noise,
            maker_vol_scale=self.vol_scale,
        )  # fmt: skip


def _wander_per_noise(half_life_s: float) -> float:
    """Median |10-s change| of a logit-space OU noise of std 1: 0.6745 x std of its 10-s change."""
    a = 0.5 ** (NOISE_LAG_S / half_life_s)
    return 0.6745 * math.sqrt(2.0 * (1.0 - a))


def _change_elasticity(history: list[tuple[_Guess, Moments, float]]) -> float:
    """d ln(mean mid change) / d ln(threshold) from the last two rounds (the tick floors the mean change, so
    the response is far weaker at small thresholds than at large ones); CHANGE_ELASTICITY before that."""
    if len(history) >= 2:
        (g0, m0, _), (g1, m1, _) = history[-2], history[-1]
        dx = math.log(g1.threshold / g0.threshold)
        if abs(dx) > 0.05 and m0.mean_change and m1.mean_change:
            return min(max(math.log(m1.mean_change / m0.mean_change) / dx, 0.3), 1.5)
    return CHANGE_ELASTICITY


def _step(g: _Guess, sim: Moments, target: Moments, k: float, scale: float, elasticity: float) -> _Guess:
    """Move each parameter toward its figure, `scale` of the way its response says."""
    out = _Guess(g.threshold, g.delay_centre, g.noise, g.vol_scale)
    if sim.mean_change and target.mean_change:
        ratio = target.mean_change / sim.mean_change
        step = min(max(scale * math.log(ratio) / elasticity, -MAX_LOG_STEP), MAX_LOG_STEP)
        out.threshold = min(max(g.threshold * math.exp(step), 0.001), 0.1)
    if sim.centroid is not None and target.centroid is not None:
        # a later public feed moves the public fair value later, so the centroid falls one for one
        out.delay_centre = min(max(g.delay_centre + scale * (sim.centroid - target.centroid), 0.0), 5.0)
    if sim.wander is not None and target.wander is not None:
        # wander^2 = (the twin's wander without noise)^2 + (k x noise)^2
        floor = sim.wander**2 - (k * g.noise) ** 2
        wanted = math.sqrt(max(target.wander**2 - floor, 0.0)) / k
        out.noise = min(max(g.noise + scale * (wanted - g.noise), 0.0), 1.0)
    if sim.vol_ratio and target.vol_ratio and sim.vol_ratio > 0 and target.vol_ratio > 0:
        step = scale * math.log(target.vol_ratio / sim.vol_ratio) / VOL_RATIO_ELASTICITY
        out.vol_scale = min(max(g.vol_scale * math.exp(step), 0.3), 3.0)
    return out


def _distance(sim: Moments, target: Moments) -> float:
    """How far a twin's figures are from the recording's, each on a comparable scale."""
    d = 0.0
    if sim.mean_change and target.mean_change:
        d += abs(math.log(sim.mean_change / target.mean_change))
    if sim.centroid is not None and target.centroid is not None:
        d += abs(sim.centroid - target.centroid)
    if sim.wander and target.wander:
        d += abs(math.log(sim.wander / target.wander))
    if sim.vol_ratio and target.vol_ratio and sim.vol_ratio > 0 and target.vol_ratio > 0:
        d += abs(math.log(sim.vol_ratio / target.vol_ratio))
    return d


@dataclass(slots=True)
class FitResult:
    profile: SimProfile
    estimates: list[Estimate]
    target: Moments
    rounds: list[tuple[_Guess, Moments, float]]  # each round's guess, its twin's figures, their distance
    kept: int  # the round whose guess the profile holds


def fit(
    datas: list[RecordingData],
    base: SimProfile,
    seeds: Sequence[int] = (1, 2),
    windows: int = 4,
    rounds: int = 4,
    name: str = "fitted",
    log: Callable[[str], None] = print,
) -> FitResult:
    """A profile for the recordings: direct estimates, then `rounds` twin runs moving the simulated four."""
    assets = tuple(a for a in ASSETS if any(tr.info.asset == a for d in datas for tr in d.markets))
    if not assets or not any(tr.secs for d in datas for tr in d.markets):
        raise FitError("the recordings hold no market with a Polymarket book while its window ran; nothing to fit")
    estimates, stds = direct_estimates(datas, base.model)
    model = replace(base.model, **{e.name: e.value for e in estimates})
    for e in estimates:
        log(f"  {e.name:<22} {_show(e.value):<34} from {e.basis}")
    for asset, std in stds.items():
        log(f"  return_std_15m {asset:<7} {std:<34.5f} from 1-s Chainlink realized variance")
    # the same index for the lead-lag in the twin as in the recording; Chainlink for the wander when there is one
    via = "auto" if _has_futures(datas) else "chainlink"
    wander_via = "chainlink" if _has_chainlink(datas) else via
    target = measure_moments(datas, via, wander_via)
    log(f"recording: {target.line()}")
    lo, hi = model.futures_delay_s
    guess = _Guess(model.requote_threshold, (lo + hi) / 2.0, model.quote_noise_std, model.maker_vol_scale)
    k = _wander_per_noise(model.quote_noise_half_life_s)
    stds_all = {**base.return_std_15m, **stds}
    history: list[tuple[_Guess, Moments, float]] = []
    for r in range(rounds):
        profile = SimProfile(name, guess.apply(model, hi - lo), stds_all)
        sim = measure_moments(read_sim(seeds, assets, windows, profile), via, wander_via)
        dist = _distance(sim, target)
        history.append((guess, sim, dist))
        log(f"round {r + 1}: threshold {guess.threshold:.4f}, futures delay centre {guess.delay_centre:.2f} s, "
            f"noise {guess.noise:.3f}, vol scale {guess.vol_scale:.2f} -> {sim.line()} (distance {dist:.3f})")  # fmt: skip
        guess = _step(guess, sim, target, k, 1.0 if r == 0 else DAMPING, _change_elasticity(history))
    kept = min(range(len(history)), key=lambda i: history[i][2]) if history else -1
    final = history[kept][0] if history else guess
    description = (
        f"fitted by sim.fit to {len(datas)} recording(s) ({', '.join(d.name for d in datas)}) "
        f"on the {base.name} profile; twin seeds {','.join(map(str, seeds))} x {windows} windows"
    )
    profile = SimProfile(name, final.apply(model, hi - lo), stds_all, description)
    return FitResult(profile, estimates, target, history, kept)


def _show(value: object) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(f"{v:.3g}" for v in value) + "]"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write_profile(profile: SimProfile, path: str) -> None:
    """Atomically: a crash mid-write leaves the previous file (or none), never half a profile."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".profile-", suffix=".json", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(profile.to_json())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise FitError(f"{message} (see python -m sim.fit --help)")


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of whole numbers, got {text!r}") from None
    if not seeds:
        raise argparse.ArgumentTypeError("expected at least one seed")
    return seeds


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number, 0 or more, got {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    p = _Parser(prog="python -m sim.fit", description=__doc__.split("\n\n")[0].strip("`"))
    p.add_argument("recordings", nargs="+", metavar="REC", help="recordings to fit (pooled)")
    p.add_argument("--out", required=True, metavar="FILE", help="where to write the profile (JSON)")
    p.add_argument("--base", default=DEFAULT_PROFILE, help="profile whose values the fit starts from and keeps")
    p.add_argument("--name", default=None, help="the profile's name (default: the --out file's stem)")
    p.add_argument("--rounds", type=_count, default=4, help="twin runs of the simulated stage (0: direct only)")
    p.add_argument("--sim-seeds", type=_seeds, default=[1, 2], help="seeds of the twin runs")
    p.add_argument("--sim-windows", type=_count, default=4, help="15-minute windows per twin seed")
    try:
        args = p.parse_args(argv)
        if args.sim_windows < 1:
            raise FitError("--sim-windows must be at least 1")
        out_dir = os.path.dirname(os.path.abspath(args.out))
        if not os.path.isdir(out_dir):
            raise FitError(f"--out {args.out}: the folder {out_dir} does not exist")
        base = load_profile(args.base)
        datas = []
        for path in args.recordings:
            print(f"reading {path}")
            datas.append(read_recording(path))
        name = args.name or Path(args.out).stem
        print("direct estimates:")
        result = fit(datas, base, args.sim_seeds, args.sim_windows, args.rounds, name)
        write_profile(result.profile, args.out)
    except (FitError, RecordingError, ProfileError) as exc:
        print(f"sim.fit: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"sim.fit: cannot write {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    kept = f" (round {result.kept + 1} kept)" if result.rounds else ""
    print(f"wrote {args.out}{kept}; compare: python -m benchmarks.calibration --recording "
          f"{' '.join(args.recordings)} --sim --sim-profile {args.out}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
