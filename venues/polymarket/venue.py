"""What Polymarket's CLOB V2 answers mean: refusal reasons (which are fatal, which retryable), a market's
rules, fills and books as the venue states them, and `Venue`: the client calls whose failures become
counted refusals, the market rules cache and the venue's REST book."""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import NoReturn, TypeVar

from py_clob_client_v2 import ClobClient
from py_clob_client_v2.exceptions import PolyApiException, PolyException

from core.frames import MarketInfo
from engine.broker import Book, SkipCounts
from engine.positions import DOWN, UP
from venues.polymarket.credentials import LiveBrokerError, LiveBrokerFatal

log = logging.getLogger(__name__)
T = TypeVar("T")

POLYGON = 137
MIN_MARKET_BUY_DOLLARS = 1.0  # the venue's minimum notional for a market buy
ENV_EXIT_RETRY = "UPDOWN_EXIT_RETRY_SECONDS"
DEFAULT_EXIT_RETRY_SECONDS = 120.0  # covers an engine restart (425, about 90 s)
EPS = 1e-9
_MARKET_CACHE = 64  # markets whose rules are kept (8 live at a time: 4 assets x current/next window)
_TICKS = ("0.1", "0.01", "0.005", "0.0025", "0.001", "0.0001")  # the client's rounding table keys

# refusal reasons (the keys of LiveSkipCounts.rejected)
NOT_ENOUGH_BALANCE = "not_enough_balance"
NO_MATCH = "no_match"
INVALID_ORDER = "invalid_order"
TICK_SIZE = "tick_size"
RATE_LIMITED = "rate_limited"
ENGINE_RESTART = "engine_restart"
TRADING_DISABLED = "trading_disabled"
NETWORK = "network"
SERVER_ERROR = "server_error"
TRADE_FAILED = "trade_failed"
OTHER = "other"
PENDING = "pending"  # not a refusal: the order's fill is still unknown (never counted in `rejected`)
# a sale refused for one of these may succeed later: exits retry them
RETRYABLE = frozenset({NOT_ENOUGH_BALANCE, RATE_LIMITED, ENGINE_RESTART, TRADING_DISABLED, NETWORK,
                       SERVER_ERROR, PENDING})

# venue messages that mean the run cannot trade: fatal, with the usual cause
_FATAL = {
    "invalid signature": "check POLYMARKET_SIGNATURE_TYPE and POLYMARKET_FUNDER (the wallet holding the funds)",
    "invalid order version": "the venue expects another order version than py-clob-client-v2 signed",
    "order_version_mismatch": "the market takes orders for another exchange version than the CTF Exchange V2 "
                              "orders this bot signs",
    "maker address not allowed": "CLOB V2 refuses plain EOA makers; use a proxy or Safe wallet",
    "has to be the owner of the api key": "the API credentials belong to another account; set this key's own or "
                                          "unset POLYMARKET_API_KEY/SECRET/PASSPHRASE to derive them",
    "has to be the address of the api key": "the order's signer is not the address its API key was issued to; set "
                                            "the API credentials of POLYMARKET_PRIVATE_KEY or unset them to derive "
                                            "them",
    "allowance is not enough": "the funder has not approved the exchange contracts to move its pUSD or shares; "
                               "set the approvals once (README, 'Live orders') and start again",
    "address banned": "the venue banned this address",
    "closed only mode": "the venue lets this address only close positions",
}


@dataclass(slots=True)
class LiveSkipCounts(SkipCounts):
    """PaperBroker's counts (not sent: below the minimum, empty book, dust) plus the venue's."""

    exposure_cap: int = 0  # entries not sent: the run's dollar cap (fees included) is spent or reserved
    low_balance: int = 0  # entries not sent: the funder's pUSD cannot pay a minimum order and its fee
    pending_fill: int = 0  # orders not sent: an earlier order of the same market awaits its fill
    unknown_outcome: int = 0  # orders whose fill the venue had not shown when they were released
    unconfirmed_trades: int = 0  # booked trades not yet CONFIRMED (nor FAILED) when the run stopped
    unsold_shares: float = 0.0  # shares close_at_book could not sell: still in the wallet, booked at 0
    rejected: dict[str, int] = field(default_factory=dict)  # sent (or built) and refused, by reason
    still_held: list[dict] = field(default_factory=list)  # shares in the wallet that the run's PnL leaves out

    def to_dict(self) -> dict:
        return {
            **SkipCounts.to_dict(self),
            "exposure_cap": self.exposure_cap,
            "low_balance": self.low_balance,
            "pending_fill": self.pending_fill,
            "unknown_outcome": self.unknown_outcome,
            "unconfirmed_trades": self.unconfirmed_trades,
            "unsold_shares": round(self.unsold_shares, 6),
            "rejected": dict(sorted(self.rejected.items())),
            "still_held": [dict(h) for h in self.still_held],
        }

    def refused(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def hold(self, info: MarketInfo, token: str, shares: float, why: str) -> None:
        side = UP if token == info.token_up else DOWN
        self.still_held.append({"asset": info.asset, "side": side, "token_id": token,
                                "condition_id": info.condition_id, "shares": round(shares, 6), "why": why})


@dataclass(frozen=True, slots=True)
class Rules:
    """A market's trading rules as the venue states them."""

    tick: str  # e.g. "0.01", a key of the client's rounding table
    min_size: float  # shares
    fee_rate: float
    fee_exponent: float
    neg_risk: bool

    @property
    def tick_value(self) -> float:
        return float(self.tick)


@dataclass(frozen=True, slots=True)
class VenueFill:
    shares: float  # shares traded (all delivered on a buy)
    cash: float  # dollars paid (buy, fee excluded) or received before the fee (sale)
    fee: float  # USDC taker fee
    avg_price: float
    limit: float
    order_id: str


@dataclass(slots=True)
class VenueBook:
    bids: list[tuple[float, float]]
    asks: list[tuple[float, float]]
    tick_size: float
    updated_at: float = 0.0


class Refused(Exception):
    """An order not sent or refused, already counted and logged; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Client(ClobClient):
    """The official client without its post-trade wait for settlement hashes (up to 30 s of polling):
    fills are booked from the order response, and settlement is checked later without stalling a tick."""

    def _resolve_transactions_hashes(self, response):
        return response


def message(error: object) -> str:
    if isinstance(error, dict):
        return str(error.get("error") or error.get("errorMsg") or error)
    return str(error)


def error_text(exc: PolyException) -> str:
    """The venue's message of a library error; PolyApiException has `error_msg` and no `msg`."""
    if isinstance(exc, PolyApiException):
        return message(exc.error_msg)
    return str(getattr(exc, "msg", exc))


def trade_levels(trade: dict) -> list[tuple[float, float]]:
    """(shares, price) a taker trade matched: its maker orders, each at its own price; the trade's own
    size and price when it lists none."""
    makers = trade.get("maker_orders") or []
    if makers:
        return [(float(m["matched_amount"]), float(m["price"])) for m in makers]
    return [(float(trade["size"]), float(trade["price"]))]


def unanswered(status: int | None) -> bool:
    """No answer, or a 5xx other than 503 (trading disabled): the venue may have matched the order."""
    return status is None or (status >= 500 and status != 503)


def classify(status: int | None, text: str) -> str:
    text = text.lower()
    if "not enough balance" in text:
        return NOT_ENOUGH_BALANCE
    if "fok orders are" in text or "fak order" in text or "no match" in text:
        return NO_MATCH
    if "minimum tick size" in text or "invalid tick size" in text:
        return TICK_SIZE
    if status == 429:
        return RATE_LIMITED
    if status == 425:
        return ENGINE_RESTART
    if status == 503:
        return TRADING_DISABLED
    if status is None:
        return NETWORK
    if status >= 500:
        return SERVER_ERROR
    if "invalid" in text or "lower than the minimum" in text or "crosses" in text:
        return INVALID_ORDER
    return OTHER


def check_fatal(status: int | None, text: str) -> None:
    """Raise LiveBrokerFatal when the venue's answer means no retry can help."""
    lowered = text.lower()
    if status == 401:
        raise LiveBrokerFatal(f"the CLOB refused the API credentials (401: {text}); the run cannot trade.")
    for needle, hint in _FATAL.items():
        if needle in lowered:
            raise LiveBrokerFatal(f"the CLOB refused the order with '{text}': {hint}.")


def exit_retry_seconds(env: Mapping[str, str]) -> float:
    raw = env.get(ENV_EXIT_RETRY, "").strip()
    if not raw:
        return DEFAULT_EXIT_RETRY_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0.0 <= value < math.inf:
        raise LiveBrokerError(f"{ENV_EXIT_RETRY} must be a number of seconds (0 or more), not {raw!r}.")
    return value


class Venue:
    """The client's calls as the broker makes them: a failure is a counted refusal (or fatal), never a
    crash; a market's rules, cached and read again when its tick changes; the venue's REST book."""

    def __init__(self, client: Client, skipped: LiveSkipCounts) -> None:
        self.client = client
        self.skipped = skipped
        self._rules: OrderedDict[str, Rules] = OrderedDict()
        self._book_ticks: dict[str, float] = {}  # token -> the tick its book last reported

    def call(self, fn: Callable[[], T], what: str, info: MarketInfo | None = None) -> T:
        """A library call whose failure is a counted refusal (or fatal), never a crash."""
        try:
            return fn()
        except PolyApiException as exc:
            self.refuse_api(exc, what, info)
        except PolyException as exc:
            self.reject(OTHER, what, error_text(exc), info)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:  # an answer of an unexpected shape
            self.reject(OTHER, what, f"unexpected answer ({type(exc).__name__}: {exc})", info)

    def refuse_api(self, exc: PolyApiException, what: str, info: MarketInfo | None = None) -> NoReturn:
        """The venue answered an error: fatal (FatalVenueError) or a refusal counted by its reason."""
        text = error_text(exc)
        check_fatal(exc.status_code, text)
        self.reject(classify(exc.status_code, text), what, f"{text} (status {exc.status_code})", info)

    def reject(self, reason: str, what: str, detail: object, info: MarketInfo | None = None) -> NoReturn:
        """Count and log a refusal, then raise Refused."""
        self.skipped.refused(reason)
        if reason == TICK_SIZE and info is not None:
            self._rules.pop(info.condition_id, None)  # the tick changed under us: read the rules again
        log.warning("live order refused (%s): %s: %s", reason, what, detail)
        raise Refused(reason)

    def market_rules(self, info: MarketInfo, token: str, book: Book | None) -> Rules:
        cid = info.condition_id
        rules = self._rules.get(cid)
        seen, tick = self._book_ticks.get(token), getattr(book, "tick_size", None)
        if tick:
            self._book_ticks[token] = tick
            if rules is not None and seen is not None and abs(tick - seen) > EPS:
                log.info("%s tick changed to %g: reading the market's rules again", info.asset, tick)
                rules = None
        if rules is not None:
            return rules
        raw = self.call(lambda: self.client.get_clob_market_info(cid), f"market rules for {info.asset} {cid}", info)
        tick_text = f"{float(raw.get('mts', info.tick_size)):g}" if isinstance(raw, dict) else ""
        if tick_text not in _TICKS:
            self.reject(INVALID_ORDER, f"market rules for {info.asset}", f"unsupported tick size {tick_text!r}", info)
        fees = raw.get("fd") or {}
        rules = Rules(
            tick=tick_text,
            min_size=float(raw.get("mos") or info.min_size),
            fee_rate=float(fees.get("r", info.fee_rate)),
            fee_exponent=float(fees.get("e") or 1.0),
            neg_risk=bool(raw.get("nr", False)),
        )
        self._rules[cid] = rules
        if len(self._rules) > _MARKET_CACHE:
            self._rules.popitem(last=False)
        return rules

    def book(self, token: str) -> VenueBook | None:
        """The venue's current REST book for `token` (best first), or None when it cannot be read."""
        try:
            raw = self.client.get_order_book(token)
            bids = sorted(((float(x["price"]), float(x["size"])) for x in raw.get("bids") or []), reverse=True)
            asks = sorted((float(x["price"]), float(x["size"])) for x in raw.get("asks") or [])
            return VenueBook(bids, asks, float(raw.get("tick_size") or 0.0))
        except (PolyException, ValueError, TypeError, KeyError, AttributeError) as exc:
            log.debug("book of %s: %s", token, exc)
            return None
