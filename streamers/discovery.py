"""Market discovery: Gamma REST JSON -> MarketInfo, and the async client that keeps the list current.

The 15-minute Up/Down markets have predictable slugs, `{coin}-updown-15m-{window start}`, so discovery
asks Gamma for the current window's slug per asset and, shortly before the window ends, the next one.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import aiohttp

from core.clock import Clock
from core.endpoints import Endpoints
from core.frames import FEED_DISCOVERY, WINDOW_SECONDS, Frame, MarketInfo

log = logging.getLogger(__name__)

DEFAULT_FEE_RATE = 0.07  # crypto taker rate when a fee-enabled market carries no feeSchedule
DEFAULT_FEE_EXPONENT = 1.0  # crypto fee exponent when the feeSchedule carries none
DEFAULT_TICK_SIZE = 0.01
DEFAULT_MIN_SIZE = 5.0
SLUG_MARKER = "-updown-15m-"


class DiscoveryError(ValueError):
    """A Gamma payload that cannot be turned into a MarketInfo."""


class UnsupportedMarket(DiscoveryError):
    """A market of a protocol version the bot cannot trade: Gamma `version` "v2" (Polymarket Protocol V2)
    markets trade position IDs on Exchange V3; the bot reads `clobTokenIds` and signs CTF Exchange V2
    orders, which is what version "v1" (and older answers without the field) means."""


class VenueUnreachable(ConnectionError):
    """A venue could not be reached at startup; the message is one sentence for the user."""

    def __init__(self, venue: str, url: str) -> None:
        self.venue = venue
        self.url = url
        super().__init__(f"could not reach {venue} at {url}; check the network or use --source sim")


# ---------------------------------------------------------------- slugs and windows


def window_start(t: float) -> int:
    """Start (unix s) of the 15-minute window containing clock time `t`."""
    s = int(t)
    return s - s % WINDOW_SECONDS


def market_slug(asset: str, start: int) -> str:
    return f"{asset.lower()}{SLUG_MARKER}{int(start)}"


def parse_slug(slug: str) -> tuple[str, int]:
    """`btc-updown-15m-1767225600` -> ("BTC", 1767225600)."""
    coin, marker, start = slug.partition(SLUG_MARKER)
    if not marker or not coin or not start.isdigit():
        raise DiscoveryError(f"not a 15-minute Up/Down slug: {slug!r}")
    return coin.upper(), int(start)


# ---------------------------------------------------------------- pure Gamma parsing


def _json_field(value: Any, name: str) -> Any:
    """Gamma encodes several list fields as JSON text inside the JSON; accept both forms."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise DiscoveryError(f"field {name} is not valid JSON: {value!r}") from exc
    return value


def _fee_schedule(market: dict) -> tuple[float, float]:
    """(rate, exponent) of the market's taker fee; the crypto defaults where `feeSchedule` lacks them."""
    schedule = _json_field(market.get("feeSchedule"), "feeSchedule")
    if not isinstance(schedule, dict):
        schedule = {}
    rate = schedule.get("rate")
    exponent = schedule.get("exponent")
    return (
        0.0 if market.get("feesEnabled") is False else DEFAULT_FEE_RATE if rate is None else float(rate),
        DEFAULT_FEE_EXPONENT if exponent is None else float(exponent),
    )


def _price_to_beat(*holders: dict | None) -> float | None:
    for holder in holders:
        if not isinstance(holder, dict):
            continue
        meta = _json_field(holder.get("eventMetadata"), "eventMetadata")
        if isinstance(meta, dict) and meta.get("priceToBeat") is not None:
            return float(meta["priceToBeat"])
    return None


def parse_gamma_market(market: dict, slug: str, event: dict | None = None) -> MarketInfo:
    """One Gamma market object (from /events `markets[]` or /markets) -> MarketInfo for `slug`.

    `event` is the enclosing event when known; priceToBeat lives in its `eventMetadata`.
    """
    asset, start = parse_slug(slug)
    version = market.get("version")
    if version not in (None, "v1"):
        raise UnsupportedMarket(
            f"market {slug} has version {version!r}; only CTF markets (version 'v1') can be traded here"
        )
    try:
        outcomes = [str(o).strip().lower() for o in _json_field(market["outcomes"], "outcomes")]
        tokens = [str(t) for t in _json_field(market["clobTokenIds"], "clobTokenIds")]
        condition_id = str(market["conditionId"])
    except (KeyError, TypeError) as exc:
        raise DiscoveryError(f"market {slug} lacks outcomes/clobTokenIds/conditionId") from exc
    if len(tokens) != len(outcomes) or "up" not in outcomes or "down" not in outcomes:
        raise DiscoveryError(f"market {slug} has outcomes {outcomes} for {len(tokens)} tokens, not Up/Down")
    # the nested `events` list appears on /markets answers; it carries the same eventMetadata
    nested = market.get("events")
    nested_event = nested[0] if isinstance(nested, list) and nested and isinstance(nested[0], dict) else None
    fee_rate, fee_exponent = _fee_schedule(market)
    return MarketInfo(
        asset=asset,
        condition_id=condition_id,
        token_up=tokens[outcomes.index("up")],
        token_down=tokens[outcomes.index("down")],
        start=start,
        end=start + WINDOW_SECONDS,
        price_to_beat=_price_to_beat(event, market, nested_event),
        tick_size=float(market.get("orderPriceMinTickSize") or DEFAULT_TICK_SIZE),
        min_size=float(market.get("orderMinSize") or DEFAULT_MIN_SIZE),
        fee_rate=fee_rate,
        fee_exponent=fee_exponent,
    )


def parse_events_response(body: Any, slug: str) -> MarketInfo | None:
    """Gamma `/events?slug=` answer (array of events with `markets[]`) -> the market for `slug`, if any.

    Gamma ignores filters it does not know and may return unrelated events, so slugs are checked.
    """
    if not isinstance(body, list):
        return None
    for event in body:
        if not isinstance(event, dict) or event.get("slug") != slug:
            continue
        for market in event.get("markets") or []:
            if isinstance(market, dict) and market.get("slug", slug) == slug:
                return parse_gamma_market(market, slug, event)
    return None


def parse_markets_response(body: Any, slug: str) -> MarketInfo | None:
    """Gamma `/markets?slug=` answer (array of markets) -> the market for `slug`, if any."""
    if not isinstance(body, list):
        return None
    for market in body:
        if isinstance(market, dict) and market.get("slug") == slug:
            return parse_gamma_market(market, slug)
    return None


def discovery_message(markets: Iterable[MarketInfo]) -> str:
    """The `discovery` feed's text: a JSON list of MarketInfo dicts."""
    return json.dumps([m.to_dict() for m in markets], separators=(",", ":"))


# ---------------------------------------------------------------- REST with retries


class RestFailure(ConnectionError):
    """A REST request that kept failing after all retries."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 4  # tries per request before giving up until the next pass
    initial_delay: float = 0.5  # wall seconds; doubles per failure
    max_delay: float = 30.0
    timeout: float = 10.0  # wall seconds per request


def _retry_after(header: str | None) -> float | None:
    """Seconds from an HTTP Retry-After header (delta-seconds or HTTP-date)."""
    if not header:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    # an HTTP-date is wall time by definition
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


async def get_text(session: aiohttp.ClientSession, url: str, policy: RetryPolicy) -> tuple[int, str]:
    """GET `url`, retrying network errors and 5xx with backoff; a 429 waits its Retry-After first.

    Returns (status, body) for any final answer below 500 other than 429; raises RestFailure when
    every attempt failed. Retry waits are wall time: they pace the venue, not trading decisions.
    """
    delay = policy.initial_delay
    last_error = "no attempt"
    for attempt in range(policy.attempts):
        wait = delay * (0.5 + random.random() / 2)
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=policy.timeout)) as resp:
                body = await resp.text()
                if resp.status == 429:
                    last_error = "HTTP 429"
                    wait = _retry_after(resp.headers.get("Retry-After")) or wait
                elif resp.status >= 500:
                    last_error = f"HTTP {resp.status}"
                else:
                    return resp.status, body
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            last_error = f"{type(exc).__name__}: {exc}"
        if attempt + 1 < policy.attempts:
            log.debug("GET %s failed (%s); retrying in %.1f s", url, last_error, wait)
            await asyncio.sleep(wait)
            delay = min(delay * 2, policy.max_delay)
    raise RestFailure(f"GET {url} failed after {policy.attempts} attempts ({last_error})")


# ---------------------------------------------------------------- the discovery client


@dataclass(frozen=True, slots=True)
class DiscoverySettings:
    lookahead: float = 60.0  # clock seconds before a window's end from which the next window is sought
    grace: float = 180.0  # clock seconds a market stays listed after its end (settlement, resolution)
    poll_interval: float = 5.0  # clock seconds between passes
    min_wall_pause: float = 0.1  # wall floor between passes, so a fast scaled clock cannot spin
    retry: RetryPolicy = RetryPolicy()


class Discovery:
    """Keeps the list of current and next-window markets for the configured assets.

    `refresh()` runs one pass and says whether the list changed; `run(on_change)` repeats passes and
    calls `on_change(markets)` whenever the list changes.
    """

    def __init__(
        self,
        clock: Clock,
        endpoints: Endpoints,
        assets: Sequence[str],
        session: aiohttp.ClientSession,
        settings: DiscoverySettings | None = None,
    ) -> None:
        self.clock = clock
        self.endpoints = endpoints
        self.assets = tuple(a.upper() for a in assets)
        self.session = session
        self.settings = settings or DiscoverySettings()
        self._known: dict[str, MarketInfo] = {}  # slug -> market
        self._unsupported: set[str] = set()  # slugs of markets the bot cannot trade: asked once
        self._reached = False  # Gamma answered at least once: later failures are retried, not fatal
        self.requests = 0
        self.failures = 0

    @property
    def markets(self) -> list[MarketInfo]:
        return sorted(self._known.values(), key=lambda m: (m.start, m.asset))

    def frame(self) -> Frame:
        return Frame(self.clock.now(), FEED_DISCOVERY, discovery_message(self.markets))

    async def _get_json(self, url: str) -> Any:
        self.requests += 1
        try:
            status, body = await get_text(self.session, url, self.settings.retry)
        except RestFailure:
            self.failures += 1
            if not self._reached:
                raise VenueUnreachable("Polymarket Gamma", self.endpoints.gamma) from None
            raise
        self._reached = True
        if status != 200:
            return None
        try:
            return json.loads(body)
        except json.JSONDecodeError:
            log.warning("Gamma answered %s with text that is not JSON", url)
            return None

    async def fetch(self, slug: str) -> MarketInfo | None:
        """Look `slug` up via /events, falling back to /markets; None when Gamma does not list it."""
        base = self.endpoints.gamma
        q = quote(slug)
        try:
            found = parse_events_response(await self._get_json(f"{base}/events?slug={q}"), slug)
            if found is None:
                found = parse_markets_response(await self._get_json(f"{base}/markets?slug={q}"), slug)
        except UnsupportedMarket as exc:
            self._unsupported.add(slug)
            log.warning("skipping %s", exc)
            return None
        except DiscoveryError as exc:
            log.warning("skipping malformed Gamma market %s: %s", slug, exc)
            return None
        return found

    def _wanted_slugs(self, now: float) -> list[str]:
        start = window_start(now)
        starts = [start]
        if now >= start + WINDOW_SECONDS - self.settings.lookahead:
            starts.append(start + WINDOW_SECONDS)
        missing = [market_slug(a, s) for s in starts for a in self.assets]
        missing = [slug for slug in missing if slug not in self._known and slug not in self._unsupported]
        # a market listed before its opening has no priceToBeat yet: ask again until it has one
        unpriced = [slug for slug, m in self._known.items() if m.price_to_beat is None and m.end > now]
        return missing + unpriced

    async def refresh(self) -> bool:
        """One discovery pass; True when the list of known markets changed."""
        now = self.clock.now()
        changed = False
        for slug in [s for s, m in self._known.items() if m.end + self.settings.grace < now]:
            del self._known[slug]
            changed = True
        slugs = self._wanted_slugs(now)
        results = await asyncio.gather(*(self.fetch(s) for s in slugs), return_exceptions=True)
        for slug, result in zip(slugs, results, strict=True):
            if isinstance(result, VenueUnreachable):
                raise result
            if isinstance(result, BaseException):
                if not isinstance(result, RestFailure):
                    raise result
                log.warning("discovery of %s failed: %s", slug, result)
                continue
            if result is not None and self._known.get(slug) != result:
                self._known[slug] = result
                changed = True
        return changed

    async def run(self, on_change: Callable[[list[MarketInfo]], Awaitable[None]]) -> None:
        """Discovery passes forever; `on_change` gets the full list each time it changes."""
        while True:
            if await self.refresh():
                await on_change(self.markets)
            target = self.clock.now() + self.settings.poll_interval
            await asyncio.sleep(max(self.settings.min_wall_pause, self.clock.seconds_until(target)))
