"""Price, flow and book dynamics of the simulated market, driven only by numpy Generators.

The index (the resolution source) is a log jump diffusion whose volatility follows a log-OU
process; Binance prices trail it by a small feed delay and sit on it with a wandering basis; the
Polymarket UP book quotes the digital-option value of the index as the maker sees it (in the
realistic profile: the undelayed index with its full variance, jumps included), on the venue's tick
grid, with sticky quotes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

WINDOW = 900


@dataclass(slots=True, frozen=True)
class AssetParams:
    asset: str  # "BTC"
    name: str  # "Bitcoin", used in market titles
    symbol: str  # Binance symbol, lowercase ("btcusdt")
    rtds_symbol: str  # RTDS chainlink symbol ("btc/usd")
    price0: float  # typical price level
    return_std_15m: float  # target std of the 15-minute log return
    tick: float  # futures price tick
    price_decimals: int  # decimals Binance prints for prices
    qty_decimals: int  # decimals Binance prints for quantities
    median_qty: float  # median futures trade size, base units


ASSET_PARAMS: dict[str, AssetParams] = {
    "BTC": AssetParams("BTC", "Bitcoin", "btcusdt", "btc/usd", 87000.0, 0.0022, 0.1, 2, 3, 0.02),
    "ETH": AssetParams("ETH", "Ethereum", "ethusdt", "eth/usd", 3000.0, 0.0029, 0.01, 2, 3, 0.4),
    "SOL": AssetParams("SOL", "Solana", "solusdt", "sol/usd", 130.0, 0.0033, 0.01, 2, 2, 6.0),
    "XRP": AssetParams("XRP", "XRP", "xrpusdt", "xrp/usd", 2.0, 0.0028, 0.0001, 4, 1, 400.0),
}


@dataclass(slots=True, frozen=True)
class ModelParams:
    """Every tunable number of the market model, one line each. The defaults are the `lagged` what-if
    scenario (the first calibration, whose maker trails the index by seconds); `sim/profiles.py` holds
    the named profiles, `realistic` being the default one."""

    # the index (resolution source)
    vol_of_vol: float = 0.8  # stationary std of log volatility (drives the kurtosis of 15-min returns)
    vol_half_life_s: float = 5400.0  # persistence of the volatility regime
    jump_share: float = 0.35  # share of return variance that comes from jumps
    jump_rate_per_s: float = 1.0 / 5400.0  # mean jump frequency
    season_boost: float = 0.7  # extra vol right after each quarter hour (quarter-hour seasonality) ...
    season_decay_s: float = 200.0  # ... decaying with this time constant; the window's variance is unchanged
    second_return_df: float = 0.0  # Student-t degrees of freedom of the 1-second diffusion moves (0: normal)
    # what the bot's public feeds show of it
    rtds_delay_s: tuple[float, float] = (0.15, 0.6)  # Chainlink value of second s reaches RTDS at s + U(lo, hi)
    futures_delay_s: tuple[float, float] = (0.0, 0.0)  # per asset and run: Binance trails the index this long
    basis_mean: float = 2.0e-4  # futures premium over the index
    basis_std: float = 1.5e-4  # stationary std of the basis
    basis_half_life_s: float = 600.0
    basis_fast_std: float = 0.0  # a fast-wandering part of the basis (Binance vs the resolution source) ...
    basis_fast_half_life_s: float = 10.0  # ... and its persistence
    futures_noise: float = 2.0e-5  # relative scatter of each futures trade around the futures price
    spot_noise: float = 3.0e-5  # spot vs index, relative
    flow_tilt: float = 0.12  # max shift of the taker-buy probability toward an index move ...
    flow_horizon_s: int = 5  # ... over this many seconds ...
    flow_offset_s: int = 0  # ... starting this many seconds from now (0: the coming move; -horizon: the last one)
    futures_extra_trade_probs: tuple[float, float] = (0.65, 0.3)  # per second: a 2nd and a 3rd futures trade
    trade_size_sigma: float = 1.3  # log-normal spread of futures and spot trade sizes around the asset's median
    block_trade_prob: float = 0.02  # share of trades that are blocks ...
    block_trade_scale: float = 20.0  # ... of up to 1 + this times their drawn size
    kline_every_s: int = 2  # a kline_1m update every this many seconds (and the closing one each minute)
    depth_size_median: float = 8.0  # size of a Binance depth level, in median trade sizes ...
    depth_size_sigma: float = 1.0  # ... and its log-normal spread
    funding_basis_share: float = 0.5  # the mark price's funding rate is this share of the basis ...
    funding_rate_cap: float = 0.003  # ... capped at plus or minus this
    liquidation_prob: float = 0.003  # per second per asset
    liquidation_sell_prob: float = 0.5  # share of liquidations that are forced sales (longs closed)
    liquidation_size_median: float = 20.0  # a liquidation's size in median trade sizes (log-normal spread 1)
    liquidation_slippage: float = 0.001  # a liquidation's price, this far through the futures price
    spot_second_trade_prob: float = 0.15  # per second per asset
    # the Polymarket maker
    lag_range_s: tuple[int, int] = (1, 8)  # per market: how many seconds behind the index the maker quotes
    final_lag_per_s: float = 0.05  # in the last minute the maker speeds up: lag <= 1 + this * seconds left
    maker_reaction_s: tuple[float, float] = (0.05, 0.95)  # the quote for second s appears at s + U(lo, hi)
    maker_vol_scale: float = 1.0  # the maker's vol is the diffusion vol times this
    maker_prices_jumps: bool = False  # the maker also prices the chance of a jump before the end
    quote_noise_std: float = 0.15  # stationary std of the quoting noise, in logit units
    quote_noise_half_life_s: float = 60.0
    requote_threshold: float = 0.0085  # the maker moves only when its target drifts this far from the mid
    requote_fraction: float = 0.55  # share of the gap to its target closed per second (1: all at once)
    catch_up_gap: float = 0.04  # a gap this large is closed at once (news, jumps)
    spread_ticks_probs: tuple[float, ...] = (0.0, 0.80, 0.14, 0.035, 0.025)  # P(spread = k cents)
    spread_resample_prob: float = 0.06  # per second
    book_levels: int = 5
    size_median: float = 120.0  # Polymarket level size, shares
    size_sigma: float = 1.1  # log-normal spread of level sizes
    size_update_prob: float = 0.6  # per second, one level's size is re-drawn
    last_trade_prob: float = 0.15  # per second per market
    last_trade_up_prob: float = 0.5  # share of those trades in the UP token
    last_trade_buy_prob: float = 0.5  # share of those trades whose taker buys
    last_trade_size_median: float = 40.0  # a trade's size, shares (at least 1) ...
    last_trade_size_sigma: float = 1.2  # ... and its log-normal spread


class RandomPool:
    """Pre-drawn uniforms and normals: one draw is a `next` on a list iterator, not a numpy call."""

    __slots__ = ("_n", "_rng", "_size", "_u")

    def __init__(self, rng: np.random.Generator, size: int = 16384) -> None:
        self._rng = rng
        self._size = size
        self._u: Iterator[float] = iter(())
        self._n: Iterator[float] = iter(())

    def uniform(self) -> float:
        try:
            return next(self._u)
        except StopIteration:
            self._u = iter(self._rng.random(self._size).tolist())
            return next(self._u)

    def normal(self) -> float:
        try:
            return next(self._n)
        except StopIteration:
            self._n = iter(self._rng.standard_normal(self._size).tolist())
            return next(self._n)

    def lognormal(self, median: float, sigma: float) -> float:
        return median * math.exp(sigma * self.normal())

    def choice(self, probs: tuple[float, ...]) -> int:
        u = self.uniform()
        acc = 0.0
        for i, p in enumerate(probs):
            acc += p
            if u < acc:
                return i
        return len(probs) - 1


class Seasonality:
    """Volatility is highest just after each quarter hour and decays through the window.

    `multiplier[u]` scales the diffusion at second u of a window (mean square 1 over the window);
    `remaining[u]` is the variance still to come from second u to the end, in plain seconds.
    """

    def __init__(self, model: ModelParams) -> None:
        u = np.arange(WINDOW, dtype=float)
        m = 1.0 + model.season_boost * np.exp(-u / model.season_decay_s)
        m /= math.sqrt(float(np.mean(m * m)))
        self.multiplier = m
        self.remaining: list[float] = np.concatenate([np.cumsum((m * m)[::-1])[::-1], [0.0]]).tolist()

    def remaining_from(self, u: int) -> float:
        return self.remaining[min(max(u, 0), WINDOW)]


class AssetPath:
    """Per-second index price, its volatility and the futures basis, generated in chunks ahead.

    `delay` is how far the futures feed trails the index (seconds); `aux_rng` draws the fast basis, so
    a profile without one draws exactly what it drew before the fast basis existed.
    Memory is bounded: seconds older than `keep_s` behind the newest requested one are dropped.
    """

    def __init__(
        self,
        params: AssetParams,
        model: ModelParams,
        rng: np.random.Generator,
        t0: int,
        chunk_s: int = WINDOW,
        keep_s: int = 2 * WINDOW,
        delay: float = 0.0,
        aux_rng: np.random.Generator | None = None,
    ) -> None:
        self.params = params
        self.model = model
        self._rng = rng
        self._aux = aux_rng if aux_rng is not None else np.random.default_rng(0)
        self._chunk = chunk_s
        self._keep = keep_s
        self.delay = delay
        self.base = t0  # unix second of prices[0]
        self.prices: list[float] = []
        self.sigmas: list[float] = []  # regime diffusion vol per sqrt(second), before the seasonal multiplier
        self.bases: list[float] = []
        var_diffusion = (1.0 - model.jump_share) * params.return_std_15m**2 / WINDOW
        # log-vol ~ N(m, vol_of_vol^2) with E[sigma^2] = var_diffusion
        self._log_vol_mean = 0.5 * math.log(var_diffusion) - model.vol_of_vol**2
        self.jump_var_per_s = model.jump_share * params.return_std_15m**2 / WINDOW
        self._jump_std = math.sqrt(self.jump_var_per_s / model.jump_rate_per_s)
        self._season = Seasonality(model).multiplier
        self._log_vol = self._log_vol_mean + model.vol_of_vol * float(rng.standard_normal())
        self._basis = model.basis_mean + model.basis_std * float(rng.standard_normal())
        self._fast = model.basis_fast_std * float(self._aux.standard_normal()) if model.basis_fast_std else 0.0
        self._last = params.price0 * math.exp(0.03 * float(rng.standard_normal()))

    @property
    def end(self) -> int:
        """First second not generated yet."""
        return self.base + len(self.prices)

    def ensure(self, sec: int) -> None:
        while sec >= self.end:
            self._extend()
        drop = sec - self._keep - self.base
        if drop > self._chunk:
            del self.prices[:drop], self.sigmas[:drop], self.bases[:drop]
            self.base += drop

    def price(self, sec: int) -> float:
        return self.prices[sec - self.base]

    def sigma(self, sec: int) -> float:
        return self.sigmas[sec - self.base]

    def basis(self, sec: float) -> float:
        """The futures basis in force for what the feed shows at `sec`."""
        return self.bases[math.floor(sec - self.delay) - self.base]

    def futures(self, sec: float) -> float:
        """What the futures feed shows at a fractional second: the index `delay` earlier, times (1 + basis)."""
        x = sec - self.delay
        s = math.floor(x)
        i = s - self.base
        w = x - s
        p = self.prices[i] * (1.0 - w) + self.prices[i + 1] * w
        return p * (1.0 + self.bases[i])

    def _extend(self) -> None:
        m, n, rng = self.model, self._chunk, self._rng
        a = 0.5 ** (1.0 / m.vol_half_life_s)
        b = m.vol_of_vol * math.sqrt(1.0 - a * a)
        ab = 0.5 ** (1.0 / m.basis_half_life_s)
        bb = m.basis_std * math.sqrt(1.0 - ab * ab)
        z_vol = rng.standard_normal(n).tolist()
        z_basis = rng.standard_normal(n).tolist()
        log_vol = np.empty(n)
        basis = np.empty(n)
        x, y, mu = self._log_vol, self._basis, self._log_vol_mean
        for k in range(n):
            x = mu + a * (x - mu) + b * z_vol[k]
            y = m.basis_mean + ab * (y - m.basis_mean) + bb * z_basis[k]
            log_vol[k] = x
            basis[k] = y
        self._log_vol, self._basis = x, y
        sig = np.exp(log_vol)
        jumps = (rng.random(n) < m.jump_rate_per_s) * rng.standard_normal(n) * self._jump_std
        season = self._season[np.arange(self.end, self.end + n) % WINDOW]
        if m.second_return_df > 2.0:  # fat-tailed 1-second moves, unit variance
            eps = rng.standard_t(m.second_return_df, n) * math.sqrt((m.second_return_df - 2.0) / m.second_return_df)
        else:
            eps = rng.standard_normal(n)
        rets = sig * season * eps + jumps
        path = self._last * np.exp(np.cumsum(rets))
        if m.basis_fast_std:
            af = 0.5 ** (1.0 / m.basis_fast_half_life_s)
            bf = m.basis_fast_std * math.sqrt(1.0 - af * af)
            z_fast = self._aux.standard_normal(n).tolist()
            f = self._fast
            for k in range(n):
                f = af * f + bf * z_fast[k]
                basis[k] += f
            self._fast = f
        self._last = float(path[-1])
        self.prices.extend(path.tolist())
        self.sigmas.extend(sig.tolist())
        self.bases.extend(basis.tolist())

    def up_probability(
        self, sec: int, strike: float, seconds_left: float, season_remaining: float, vol_scale: float, jumps: bool
    ) -> float:
        """P(index at the window end >= strike) from second `sec`, as the maker prices it: the diffusion
        still to come (current regime vol x `vol_scale`, seasonal shape) and, with `jumps`, the chance of
        a jump before the end (at most one: a mixture of the two digitals)."""
        price = self.prices[sec - self.base]
        var = (self.sigmas[sec - self.base] * vol_scale) ** 2 * season_remaining
        p = digital_fair(price, strike, math.sqrt(var), 1.0)
        if not jumps or seconds_left <= 0.0:
            return p
        q = 1.0 - math.exp(-self.model.jump_rate_per_s * seconds_left)
        return (1.0 - q) * p + q * digital_fair(price, strike, math.sqrt(var + self._jump_std**2), 1.0)


def digital_fair(price: float, strike: float, sigma: float, tau: float) -> float:
    """P(index at expiry >= strike) for a driftless log-normal index, `tau` seconds ahead."""
    if tau <= 0.0 or sigma <= 0.0:
        return 1.0 if price >= strike else 0.0
    z = math.log(price / strike) / (sigma * math.sqrt(tau))
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


@dataclass(slots=True)
class UpBook:
    """The UP token's quoted book in integer thousandths of a dollar; DOWN is its mirror (1 - price)."""

    bids: dict[int, float] = field(default_factory=dict)  # price (1/1000) -> size in shares
    asks: dict[int, float] = field(default_factory=dict)
    tick: int = 10  # 10 = 0.01, 1 = 0.001 (above 0.96 / below 0.04)
    spread_ticks: int = 1
    noise: float = 0.0  # logit-space quoting noise
    mid: float = 0.5  # quoted mid (price units) the maker centres on

    @property
    def best_bid(self) -> int:
        return max(self.bids) if self.bids else 0

    @property
    def best_ask(self) -> int:
        return min(self.asks) if self.asks else 1000


def tick_for(price: float) -> int:
    """The venue's tick (in thousandths) for a book whose mid is at `price`."""
    return 1 if price > 0.96 or price < 0.04 else 10


class Quoter:
    """The Polymarket maker: sticky quotes around a noisy fair value, several levels of depth."""

    def __init__(self, model: ModelParams, pool: RandomPool) -> None:
        self.model = model
        self.pool = pool
        qh = 0.5 ** (1.0 / model.quote_noise_half_life_s)
        self._noise_a = qh
        self._noise_b = model.quote_noise_std * math.sqrt(1.0 - qh * qh)

    def new_book(self, fair: float) -> UpBook:
        book = UpBook(noise=self.model.quote_noise_std * self.pool.normal())
        book.spread_ticks = max(1, self.pool.choice(self.model.spread_ticks_probs))
        self.requote(book, fair, force=True)
        return book

    def target(self, book: UpBook, fair: float) -> float:
        """Advance the quoting noise one second and return the price the maker wants to centre on."""
        book.noise = self._noise_a * book.noise + self._noise_b * self.pool.normal()
        f = min(max(fair, 1e-4), 1.0 - 1e-4)
        x = math.log(f / (1.0 - f)) + book.noise
        return 1.0 / (1.0 + math.exp(-x))

    def requote(self, book: UpBook, target: float, force: bool = False) -> bool:
        """Move the quotes when the target left the hysteresis band; True when the book changed."""
        pool, m = self.pool, self.model
        changed = False
        if pool.uniform() < m.spread_resample_prob:
            k = max(1, pool.choice(m.spread_ticks_probs))
            if k != book.spread_ticks:
                book.spread_ticks, force = k, True
        tick = tick_for(target)
        if tick != book.tick:
            book.tick, force = tick, True
        gap = target - book.mid
        if force or abs(gap) > m.requote_threshold:
            if not force and abs(gap) < m.catch_up_gap:
                # partial adjustment: close about half the gap per second, in whole cents
                step = min(abs(gap), math.ceil(abs(gap) * m.requote_fraction * 100.0) / 100.0)
                target = book.mid + math.copysign(step, gap)
            spread = book.spread_ticks * 10  # spreads stay in cents even on the fine grid
            bid = round((target * 1000.0 - spread / 2.0) / tick) * tick
            bid = max(min(bid, 1000 - tick - spread), tick)  # both sides inside [tick, 1 - tick]
            ask = min(bid + spread, 1000 - tick)
            self._set_levels(book, bid, ask)
            book.mid = (bid + ask) / 2000.0
            changed = True
        if pool.uniform() < m.size_update_prob and book.bids and book.asks:
            side = book.bids if pool.uniform() < 0.5 else book.asks
            prices = sorted(side)
            level = prices[int(pool.uniform() * len(prices))]
            side[level] = self.level_size()
            changed = True
        return changed

    def level_size(self) -> float:
        return round(min(max(self.pool.lognormal(self.model.size_median, self.model.size_sigma), 5.0), 20000.0), 2)

    def _set_levels(self, book: UpBook, bid: int, ask: int) -> None:
        """Rebuild the ladders from the new top, keeping the size resting at prices that survive."""
        n, tick = self.model.book_levels, book.tick
        old_b, old_a = book.bids, book.asks
        new_b: dict[int, float] = {}
        new_a: dict[int, float] = {}
        for i in range(n):
            pb = bid - i * tick
            if pb >= tick:
                new_b[pb] = old_b.get(pb) or self.level_size()
            pa = ask + i * tick
            if pa <= 1000 - tick:
                new_a[pa] = old_a.get(pa) or self.level_size()
        book.bids, book.asks = new_b, new_a
