"""What a recording shows of its market: the figures of the calibration table (TRAINING_JOURNAL.md, H1) and the mid/index lead-lag.

It reads frames only (a recording of the live venues, of the simulator, any source), rebuilt with the
engine's own parsers: `MarketData` for Polymarket books, Chainlink prices, discovery and resolutions,
`binance.handle_futures` for futures trades. At every whole second s it samples the state as of s (every
frame with t <= s applied): the UP top of book of each market whose window runs, and per asset the last
futures trade price and the latest Chainlink price received. Outcomes come from `market_resolved` frames,
else from Chainlink at the window's end against the price to beat (Up wins ties). What it cannot use is
counted, and every figure carries the number of markets and samples behind it.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np

from core.errors import ParseError
from core.frames import (
    ASSETS,
    FEED_DISCOVERY,
    FEED_FUTURES_MARKET,
    FEED_POLYMARKET,
    FEED_RTDS,
    FEED_SOURCE,
    WINDOW_SECONDS,
    Frame,
    MarketInfo,
)
from streamers import binance
from streamers.binance import AggTrade
from streamers.market_data import MarketData
from streamers.recording import read_frames

BUCKETS = ((600, 900), (300, 600), (60, 300), (0, 60))  # seconds left, (lo, hi]
LAGS = range(-10, 31)  # lead-lag: d(mid)(t + lag) against d(fair)(t)
VOL_WINDOW_S = 600  # trailing realized volatility of the index for the fair value ...
VOL_MIN_S = 60  # ... from at least this many one-second returns
LEAD_LAG_CUT_S = 30  # the last seconds of a window are left out of the lead-lag
VOL_RATIO_Z = (0.25, 2.5)  # the implied/realized volatility is read where |z| of the public fair value lies here
CHAINLINK_MAX_AGE_S = 5.0  # a Chainlink price older than this does not stand for a window's start or end
RV_MAX_GAP_S = 5.0  # Chainlink ticks further apart do not enter the realized variance
FINALIZE_AFTER_S = 60  # a market's outcome is read this long after its end (or at the recording's end)
_TICKS_KEPT = 4 * 3600  # Chainlink ticks per asset kept for start/end look-ups
TIMING_BIN_S = 0.01  # resolution of the RTDS delay and quote timing histograms (bounded memory on long recordings)
RTDS_DELAY_MIN_S = -2.0  # clocks disagree: a negative delay is possible; the histogram spans -2 .. 8 s
RTDS_DELAY_BINS = 1000
QUOTE_FRACTION_BINS = 100
_EPS = 1e-9


@dataclass(slots=True)
class MarketTrace:
    """One market's UP book second by second while its window ran, with its strike and outcome."""

    info: MarketInfo  # the latest discovery row
    secs: list[int] = field(default_factory=list)
    bid: list[float] = field(default_factory=list)  # nan when the book was missing, one-sided or out of sync
    ask: list[float] = field(default_factory=list)
    bid_size: list[float] = field(default_factory=list)  # size at the best bid / ask
    ask_size: list[float] = field(default_factory=list)
    levels: list[int] = field(default_factory=list)  # price levels on the thinner side
    strike: float | None = None
    strike_from_chainlink: bool = False  # the discovery rows never gave a price to beat
    final: float | None = None  # Chainlink at the window's end
    outcome: int | None = None  # 1 Up, 0 Down
    outcome_from: str | None = None  # "resolved" (market_resolved) or "chainlink"

    @property
    def log_return(self) -> float | None:
        if self.strike is None or self.final is None:
            return None
        return math.log(self.final / self.strike)


@dataclass(slots=True)
class AssetSeries:
    """Per-second index prices of one asset as the bot received them, from second `first` on (nan: none yet)."""

    first: int
    futures: list[float] = field(default_factory=list)  # last futures trade price
    chainlink: list[float] = field(default_factory=list)  # latest Chainlink price received
    # per window start: [sum of squared log changes between consecutive Chainlink ticks, source seconds spanned,
    # sum of |change| x |previous change| (bipower variation: the part of the variance that is not jumps)]
    rv: dict[int, list[float]] = field(default_factory=dict)
    last_change: float = math.nan  # the previous log change, for the bipower sum

    def realized(self) -> tuple[float, float]:
        """Squared log changes and the seconds they span, over the whole recording."""
        return sum(v[0] for v in self.rv.values()), sum(v[1] for v in self.rv.values())


@dataclass(slots=True)
class RecordingData:
    """Everything the figures need from one recording (or one simulator run)."""

    name: str
    markets: list[MarketTrace]
    assets: dict[str, AssetSeries]
    counts: Counter[str]
    header: dict | None = None  # the recording's `source` line (what produced it), when it has one
    # Chainlink receive time minus source time, counted in TIMING_BIN_S bins from RTDS_DELAY_MIN_S
    rtds_delays: list[int] = field(default_factory=lambda: [0] * RTDS_DELAY_BINS)
    # where within its second each price_change arrived, counted in TIMING_BIN_S bins
    quote_fractions: list[int] = field(default_factory=lambda: [0] * QUOTE_FRACTION_BINS)

    @staticmethod
    def quantiles(counts: list[int], qs: list[float], start: float = 0.0) -> list[float] | None:
        """Quantiles of a timing histogram (bin centres); None when it is empty."""
        cum = np.cumsum(counts)
        if not len(cum) or cum[-1] == 0:
            return None
        bins = [int(np.searchsorted(cum, q * cum[-1], side="left")) for q in qs]
        return [start + (b + 0.5) * TIMING_BIN_S for b in bins]


class RecordingReader:
    """Feed it frames in time order, then `finish()`; `last_second` stops the sampling (frames still apply)."""

    def __init__(self, name: str, last_second: int | None = None) -> None:
        self.name = name
        self.md = MarketData(ASSETS)
        self.counts: Counter[str] = Counter()
        self._last_second = last_second
        self._next: int | None = None  # next second to sample
        self._infos: dict[str, MarketInfo] = {}  # markets whose window has not ended by the sampled second
        self._ended: set[str] = set()
        self._open: dict[str, MarketTrace] = {}  # condition id -> trace, until finalized
        self._done: list[MarketTrace] = []
        self._futures: dict[str, float] = {}
        self._ticks: dict[str, deque[tuple[float, float]]] = {a: deque(maxlen=_TICKS_KEPT) for a in ASSETS}
        self._series: dict[str, AssetSeries] = {}
        self._rtds_delays = [0] * RTDS_DELAY_BINS
        self._quote_fractions = [0] * QUOTE_FRACTION_BINS

    def feed(self, frame: Frame) -> None:
        t = frame.t
        if self._next is None:
            self._next = math.ceil(t)
        while self._next < t:  # every second before t is complete: sample it
            self._sample(self._next)
            self._next += 1
        self.counts["frames"] += 1
        self.counts[f"frames_{frame.feed}"] += 1
        if frame.feed == FEED_FUTURES_MARKET:
            self._on_futures(frame.msg)
            return
        if frame.feed not in (FEED_RTDS, FEED_POLYMARKET, FEED_DISCOVERY, FEED_SOURCE):
            return  # spot and the futures book carry nothing these figures use
        self.md.handle(frame)
        if frame.feed == FEED_POLYMARKET and '"price_change"' in frame.msg:
            self._quote_fractions[min(int((t - math.floor(t)) / TIMING_BIN_S), QUOTE_FRACTION_BINS - 1)] += 1
        if frame.feed == FEED_DISCOVERY:
            for cid, info in self.md.markets.items():
                trace = self._open.get(cid)
                if trace is not None:
                    trace.info = info
                if cid not in self._ended:
                    self._infos[cid] = info
        elif frame.feed == FEED_RTDS:
            self._on_chainlink(t)

    def _on_futures(self, msg: str) -> None:
        if '@aggTrade"' not in msg:
            return  # klines, mark price, liquidations: the lead-lag reads trades only
        try:
            updates = binance.handle_futures(msg)
        except ParseError:
            self.counts["rejected"] += 1
            return
        for u in updates:
            if isinstance(u, AggTrade):
                asset = binance.asset_of_symbol(u.symbol)
                if asset in self._ticks:
                    self._futures[asset] = u.price

    def _on_chainlink(self, t: float) -> None:
        for asset, ticks in self._ticks.items():
            ts = self.md.chainlink_latest_ts(asset)
            if ts is None or (ticks and ts <= ticks[-1][0]):
                continue
            value = self.md.chainlink_price(asset)
            assert value is not None  # a timestamp comes with its price
            if ticks and ts - ticks[-1][0] <= RV_MAX_GAP_S:
                series = self._asset(asset)
                window = series.rv.setdefault(int(ts // WINDOW_SECONDS) * WINDOW_SECONDS, [0.0, 0.0, 0.0])
                change = math.log(value / ticks[-1][1])
                window[0] += change * change
                window[1] += ts - ticks[-1][0]
                if math.isfinite(series.last_change):
                    window[2] += abs(change * series.last_change)
                series.last_change = change
            elif asset in self._series:
                self._series[asset].last_change = math.nan
            ticks.append((ts, value))
            k = int((t - ts - RTDS_DELAY_MIN_S) / TIMING_BIN_S)
            self._rtds_delays[min(max(k, 0), RTDS_DELAY_BINS - 1)] += 1

    def _asset(self, asset: str) -> AssetSeries:
        series = self._series.get(asset)
        if series is None:
            assert self._next is not None
            series = self._series[asset] = AssetSeries(self._next)
        return series

    def _sample(self, s: int) -> None:
        if self._last_second is not None and s >= self._last_second:
            return
        for asset in ASSETS:
            fut = self._futures.get(asset)
            ticks = self._ticks[asset]
            if fut is None and not ticks and asset not in self._series:
                continue  # an asset this recording never priced
            series = self._asset(asset)
            while series.first + len(series.futures) < s:  # an asset first priced after the start: pad
                series.futures.append(math.nan)
                series.chainlink.append(math.nan)
            series.futures.append(math.nan if fut is None else fut)
            series.chainlink.append(ticks[-1][1] if ticks else math.nan)
        for cid, info in list(self._infos.items()):
            if s >= info.end:
                del self._infos[cid]
                self._ended.add(cid)
            elif s >= info.start:
                trace = self._open.get(cid)
                if trace is None:
                    trace = self._open[cid] = MarketTrace(info)
                self._sample_book(trace, s)
        for cid in [c for c, tr in self._open.items() if s >= tr.info.end + FINALIZE_AFTER_S]:
            self._finalize(self._open.pop(cid))

    def _sample_book(self, trace: MarketTrace, s: int) -> None:
        self.counts["samples"] += 1
        book = self.md.book(trace.info.token_up)
        bid = ask = bid_size = ask_size = math.nan
        levels = 0
        if book is None or book.best_bid is None or book.best_ask is None:
            self.counts["samples_without_two_sided_book"] += 1
        elif book.needs_resync:
            self.counts["samples_book_out_of_sync"] += 1
        else:
            (bid, bid_size), (ask, ask_size) = book.bids[0], book.asks[0]
            levels = min(len(book.bids), len(book.asks))
        trace.secs.append(s)
        trace.bid.append(bid)
        trace.ask.append(ask)
        trace.bid_size.append(bid_size)
        trace.ask_size.append(ask_size)
        trace.levels.append(levels)

    def _chainlink_at(self, asset: str, ts: float) -> float | None:
        """The Chainlink price standing at source time ts, if the feed reached ts and was not stale there."""
        ticks = self._ticks[asset]
        if not ticks or ticks[-1][0] < ts:
            return None
        i = bisect_right(ticks, ts, key=lambda tick: tick[0])
        if i == 0 or ts - ticks[i - 1][0] > CHAINLINK_MAX_AGE_S:
            return None
        return ticks[i - 1][1]

    def _finalize(self, trace: MarketTrace) -> None:
        info = trace.info
        self.counts["markets"] += 1
        trace.strike = info.price_to_beat
        if trace.strike is None:
            trace.strike = self._chainlink_at(info.asset, float(info.start))
            trace.strike_from_chainlink = trace.strike is not None
            self.counts["strikes_from_chainlink" if trace.strike is not None else "markets_without_strike"] += 1
        trace.final = self._chainlink_at(info.asset, float(info.end))
        by_index = None
        if trace.final is not None and trace.strike is not None:
            by_index = 1 if trace.final >= trace.strike else 0
        resolved = self.md.resolved_outcome(info.condition_id)
        if resolved is not None:
            trace.outcome, trace.outcome_from = (1 if resolved == "Up" else 0), "resolved"
            if by_index is not None and by_index != trace.outcome:
                self.counts["outcomes_disagreeing_with_chainlink"] += 1
        elif by_index is not None:
            trace.outcome, trace.outcome_from = by_index, "chainlink"
        else:
            self.counts["markets_without_outcome"] += 1
        if trace.outcome_from is not None:
            self.counts[f"outcomes_from_{trace.outcome_from}"] += 1
        self._done.append(trace)

    def finish(self) -> RecordingData:
        """Sample the last complete second, finalize every market and return what was read."""
        if self._next is not None:
            self._sample(self._next)
        for trace in self._open.values():
            self._finalize(trace)
        self._open.clear()
        self.counts["rejected"] += self.md.rejected
        self.counts["unknown_events"] += self.md.unknown
        self.counts["book_mismatches"] += self.md.book_mismatches
        return RecordingData(
            self.name, self._done, self._series, self.counts, self.md.source_info,
            self._rtds_delays, self._quote_fractions,
        )  # fmt: skip


def read(frames: Iterable[Frame], name: str, last_second: int | None = None) -> RecordingData:
    """One pass over frames in time order."""
    reader = RecordingReader(name, last_second)
    for frame in frames:
        reader.feed(frame)
    return reader.finish()


def read_recording(path: str) -> RecordingData:
    """Read a recording file (RecordingError when it is missing or malformed)."""
    return read(read_frames(path), path)


# ---------------------------------------------------------------------------------------------- figures


@dataclass(slots=True, frozen=True)
class Figure:
    value: float | None  # None when nothing could be measured
    markets: int  # markets (windows) behind it
    n: int  # samples, steps, pairs or windows behind it

    def to_dict(self) -> dict:
        return {"value": self.value, "markets": self.markets, "n": self.n}


@dataclass(slots=True)
class LeadLag:
    rho: dict[int, Figure]  # per lag

    def summary(self) -> dict[str, Figure]:
        known = {lag: f for lag, f in self.rho.items() if f.value is not None}
        if not known:
            none = Figure(None, 0, 0)
            return dict.fromkeys(("lead_lag_peak_lag", "lead_lag_peak_rho", "lead_lag_rho_0",
                                  "lead_lag_max_abs_from_2"), none)  # fmt: skip
        peak = max(known, key=lambda lag: known[lag].value)  # type: ignore[arg-type, return-value]
        late = [lag for lag in known if lag >= 2]
        worst = max(late, key=lambda lag: abs(known[lag].value)) if late else None  # type: ignore[arg-type]
        zero = self.rho.get(0, Figure(None, 0, 0))
        return {
            "lead_lag_peak_lag": Figure(float(peak), known[peak].markets, known[peak].n),
            "lead_lag_peak_rho": known[peak],
            "lead_lag_rho_0": zero,
            "lead_lag_max_abs_from_2": (
                Figure(abs(known[worst].value), known[worst].markets, known[worst].n)  # type: ignore[arg-type]
                if worst is not None else Figure(None, 0, 0)
            ),
        }  # fmt: skip


def quantile(values: np.ndarray, q: float) -> float:
    """The smallest observed value whose empirical CDF reaches q (so a tick-valued series gives a tick)."""
    return float(np.quantile(values, q, method="inverted_cdf"))


def phi(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.array([math.erf(x / math.sqrt(2.0)) for x in z.tolist()]))


@dataclass(slots=True)
class _MarketArrays:
    """One market's samples as arrays, with the public fair value on the same seconds (lead-lag grid)."""

    trace: MarketTrace
    secs: np.ndarray
    mid: np.ndarray
    spread: np.ndarray
    left: np.ndarray  # seconds to the window's end
    index: np.ndarray  # S: the index price the fair value uses (nan: unknown)
    sigma: np.ndarray  # trailing realized volatility of S per sqrt(second) (nan: too little history)
    fair: np.ndarray  # Phi(ln(S/K) / (sigma sqrt(tau))), nan where any input is missing


def _trailing_sigma(prices: np.ndarray) -> np.ndarray:
    """Realized volatility per sqrt(second) over the trailing VOL_WINDOW_S one-second log returns."""
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.diff(np.log(prices), prepend=np.nan)
    ok = np.isfinite(r)
    sq = np.concatenate([[0.0], np.cumsum(np.where(ok, r * r, 0.0))])
    cnt = np.concatenate([[0], np.cumsum(ok)])
    hi = np.arange(1, len(prices) + 1)
    lo = np.maximum(hi - VOL_WINDOW_S, 0)
    n = cnt[hi] - cnt[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        sigma = np.sqrt((sq[hi] - sq[lo]) / n)
    return np.where(n >= VOL_MIN_S, sigma, np.nan)


def market_arrays(data: RecordingData, via: str = "auto") -> list[_MarketArrays]:
    """Each market of one recording as arrays; S is the futures trade price, or Chainlink when the market's
    seconds saw no futures trade (via "auto"), or always the latest Chainlink price (via "chainlink")."""
    sigmas: dict[tuple[str, str], np.ndarray] = {}
    out = []
    for tr in data.markets:
        if not tr.secs:
            continue
        secs = np.asarray(tr.secs)
        bid, ask = np.asarray(tr.bid), np.asarray(tr.ask)
        series = data.assets.get(tr.info.asset)
        index = sigma = np.full(len(secs), np.nan)
        if series is not None:
            idx = secs - series.first
            futures = np.asarray(series.futures)[idx]
            kind = "futures" if via == "auto" and np.isfinite(futures).any() else "chainlink"
            prices = np.asarray(series.futures if kind == "futures" else series.chainlink)
            key = (tr.info.asset, kind)
            if key not in sigmas:
                sigmas[key] = _trailing_sigma(prices)
            index, sigma = prices[idx], sigmas[key][idx]
        left = tr.info.end - secs
        fair = np.full(len(secs), np.nan)
        if tr.strike is not None:
            with np.errstate(invalid="ignore", divide="ignore"):
                z = np.log(index / tr.strike) / (sigma * np.sqrt(left))
            ok = np.isfinite(z)
            fair[ok] = phi(z[ok])
        out.append(_MarketArrays(tr, secs, (bid + ask) / 2.0, np.round(ask - bid, 6), left, index, sigma, fair))
    return out


def _figure(values: list[np.ndarray], markets: int, stat: Callable[[np.ndarray], float]) -> Figure:
    pooled = np.concatenate(values) if values else np.empty(0)
    if len(pooled) == 0:
        return Figure(None, 0, 0)
    return Figure(float(stat(pooled)), markets, len(pooled))


def _pooled(parts: list[np.ndarray]) -> tuple[list[np.ndarray], int]:
    """The non-empty parts and how many markets they come from."""
    kept = [p for p in parts if len(p)]
    return kept, len(kept)


def vol_ratio(datas: list[RecordingData], via: str = "auto") -> Figure:
    """Median volatility implied by the mids over the realized one (the fair value's S as `market_arrays`)."""
    ratios, n = _pooled([_vol_ratios(m) for d in datas for m in market_arrays(d, via)])
    return _figure(ratios, n, np.median)


def figures(datas: list[RecordingData]) -> dict[str, Figure]:
    """Every figure of the calibration table (plus depth and a low-noise return figure), pooled over recordings."""
    arrays = [m for d in datas for m in market_arrays(d)]
    out: dict[str, Figure] = {}

    spreads, n = _pooled([m.spread[np.isfinite(m.spread)] for m in arrays])
    for q in (10, 50, 90, 99):
        out[f"spread_q{q}"] = _figure(spreads, n, lambda v, q=q: quantile(v, q / 100.0))

    steps, changes = [], []
    for m in arrays:
        consecutive = np.diff(m.secs) == 1
        d = np.round(np.abs(np.diff(m.mid)), 6)[consecutive]
        d = d[np.isfinite(d)]
        steps.append(d)
        changes.append(d[d > _EPS])
    steps_kept, n = _pooled(steps)
    out["mid_change_share"] = _figure(steps_kept, n, lambda v: np.mean(v > _EPS))
    changes, n = _pooled(changes)
    for q in (50, 90, 99):
        out[f"mid_change_q{q}"] = _figure(changes, n, lambda v, q=q: quantile(v, q / 100.0))

    for lo, hi in BUCKETS:
        in_bucket = [(m, (m.left > lo) & (m.left <= hi) & np.isfinite(m.mid)) for m in arrays]
        devs, n = _pooled([np.abs(m.mid[sel] - 0.5) for m, sel in in_bucket])
        out[f"abs_dev_{lo}_{hi}"] = _figure(devs, n, np.mean)
        briers, n = _pooled([(m.mid[sel] - m.trace.outcome) ** 2 for m, sel in in_bucket if m.trace.outcome is not None])
        out[f"brier_{lo}_{hi}"] = _figure(briers, n, np.mean)

    traces = [tr for d in datas for tr in d.markets]
    standardized = []
    for asset in ASSETS:
        rets = np.array([r for tr in traces if tr.info.asset == asset and (r := tr.log_return) is not None])
        out[f"ret_std_{asset}"] = _figure([rets], len(rets), np.std)
        if len(rets) >= 4 and np.std(rets) > 0.0:
            standardized.append((rets - rets.mean()) / rets.std())
        realized = [d.assets[asset].realized() for d in datas if asset in d.assets]
        rv_sum, rv_seconds = sum(r[0] for r in realized), sum(r[1] for r in realized)
        windows = sum(len(d.assets[asset].rv) for d in datas if asset in d.assets)
        out[f"ret_std_rv_{asset}"] = (
            Figure(math.sqrt(rv_sum / rv_seconds * 900.0), windows, round(rv_seconds))
            if rv_seconds > 0 else Figure(None, 0, 0)
        )  # fmt: skip
    z = np.concatenate(standardized) if standardized else np.empty(0)
    out["excess_kurtosis"] = Figure(float(np.mean(z**4) - 3.0), len(z), len(z)) if len(z) else Figure(None, 0, 0)
    outcomes = np.array([tr.outcome for tr in traces if tr.outcome is not None], dtype=float)
    out["up_share"] = _figure([outcomes], len(outcomes), np.mean)

    ratios, n = _pooled([_vol_ratios(m) for m in arrays])
    out["vol_ratio"] = _figure(ratios, n, np.median)

    top = [np.concatenate([m.trace.bid_size, m.trace.ask_size]) for m in arrays]
    sizes, n = _pooled([s[np.isfinite(s)] for s in top])
    for q in (10, 50, 90):
        out[f"depth_top_q{q}"] = _figure(sizes, n, lambda v, q=q: quantile(v, q / 100.0))
    levels, n = _pooled([np.asarray(m.trace.levels)[np.isfinite(m.mid)] for m in arrays])
    out["book_levels_q50"] = _figure(levels, n, lambda v: quantile(v, 0.5))
    return out


_NORMAL = NormalDist()


def _vol_ratios(m: _MarketArrays) -> np.ndarray:
    """sigma implied by the mid over the realized sigma, z(fair) / z(mid), where the public fair value is
    clearly off 0.5 (chosen on the fair value, not the mid, so the maker's own volatility picks no samples)."""
    strike = m.trace.strike
    if strike is None:
        return np.empty(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        z_fair = np.log(m.index / strike) / (m.sigma * np.sqrt(m.left))
    sel = (
        (m.left > LEAD_LAG_CUT_S) & np.isfinite(z_fair) & (np.abs(z_fair) >= VOL_RATIO_Z[0])
        & (np.abs(z_fair) <= VOL_RATIO_Z[1]) & np.isfinite(m.mid) & (m.mid > 0.01) & (m.mid < 0.99)
    )  # fmt: skip
    z_mid = np.array([_NORMAL.inv_cdf(p) for p in m.mid[sel].tolist()])
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = z_fair[sel] / z_mid
    return ratio[np.isfinite(ratio)]


def lead_lag(datas: list[RecordingData], via: str = "auto") -> LeadLag:
    """Pearson correlation of d(mid)(t + lag) with d(fair)(t), one-second steps pooled over markets."""
    pairs: dict[int, tuple[list[np.ndarray], list[np.ndarray], int]] = {lag: ([], [], 0) for lag in LAGS}
    for m in (m for d in datas for m in market_arrays(d, via)):
        start = m.trace.info.start
        width = m.trace.info.end - LEAD_LAG_CUT_S - start  # grid seconds start .. end - 31
        if width < 2:
            continue
        mid = np.full(width, np.nan)
        fair = np.full(width, np.nan)
        sel = m.left > LEAD_LAG_CUT_S
        mid[m.secs[sel] - start] = m.mid[sel]
        fair[m.secs[sel] - start] = m.fair[sel]
        d_mid, d_fair = np.diff(mid), np.diff(fair)  # element i: the change into second start + i + 1
        k = len(d_mid)
        for lag in LAGS:
            if abs(lag) >= k:
                continue
            x = d_fair[: k - lag] if lag >= 0 else d_fair[-lag:]
            y = d_mid[lag:] if lag >= 0 else d_mid[: k + lag]
            ok = np.isfinite(x) & np.isfinite(y)
            if ok.any():
                xs, ys, n = pairs[lag]
                xs.append(x[ok])
                ys.append(y[ok])
                pairs[lag] = (xs, ys, n + 1)
    rho: dict[int, Figure] = {}
    for lag, (xs, ys, markets) in pairs.items():
        x = np.concatenate(xs) if xs else np.empty(0)
        y = np.concatenate(ys) if ys else np.empty(0)
        if len(x) < 3 or np.std(x) == 0.0 or np.std(y) == 0.0:
            rho[lag] = Figure(None, markets, len(x))
        else:
            rho[lag] = Figure(float(np.corrcoef(x, y)[0, 1]), markets, len(x))
    return LeadLag(rho)
