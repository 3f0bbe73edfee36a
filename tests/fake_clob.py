"""A local fake of Polymarket's CLOB V2 REST API for the live broker's tests.

An aiohttp server on 127.0.0.1 (random port, own event loop in a background thread) that speaks the
paths, headers and JSON py_clob_client_v2 1.2.1 uses, and verifies what it receives the way the venue
does: L1 EIP-712 `ClobAuth` signatures for API-key creation, L2 HMAC headers against the credentials it
issued, and each order's EIP-712 signature under the V2 exchange domain (recovering the signer).
Orders match against per-token resting books the tests set: taker semantics, price-time priority,
FAK partial fills, FOK all-or-nothing, the taker fee `shares * rate * (p * (1 - p)) ** exponent` per
fill (collected in shares on buys, in USDC on sells). Amounts are kept in 6-decimal integer units,
like the contracts.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import secrets
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field

from aiohttp import web
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak

MICRO = 1_000_000
CHAIN_ID = 137
# V2 exchange contracts on Polygon (docs.polymarket.com/v2-migration), the domain orders must be signed for
EXCHANGE_V2 = "0xE111180000d2663C0091e4f400237545B87B996B"
NEG_RISK_EXCHANGE_V2 = "0xe2222d279d744050d28e00520010520000310F59"
CLOB_AUTH_MESSAGE = "This message attests that I control the given wallet"

ERR_BALANCE = "not enough balance / allowance"
ERR_FOK = "order couldn't be fully filled. FOK orders are fully filled or killed."
ERR_FAK = "no orders found to match with FAK order. FAK orders are partially filled or killed if no match is found."
ERR_POST_ONLY = "invalid post-only order: order crosses book"
ERR_SIGNATURE = "invalid signature"
ERR_VERSION = "invalid order version"
ERR_EOA = "maker address not allowed, please use the deposit wallet flow"
ERR_UNAUTHORIZED = "Unauthorized/Invalid api key"
ERR_L1 = "Invalid L1 Request headers"
ERR_OWNER = "the order owner has to be the owner of the API KEY"
ERR_SIGNER = "the order signer address has to be the address of the API KEY"
TOO_MANY_REQUESTS = (429, "Too Many Requests")
TRADING_DISABLED = (503, "Trading is currently disabled. Check polymarket.com for updates")
ENGINE_RESTART = (425, "the matching engine is restarting, please retry")

_ORDER_FIELDS = [
    {"name": "salt", "type": "uint256"},
    {"name": "maker", "type": "address"},
    {"name": "signer", "type": "address"},
    {"name": "tokenId", "type": "uint256"},
    {"name": "makerAmount", "type": "uint256"},
    {"name": "takerAmount", "type": "uint256"},
    {"name": "side", "type": "uint8"},
    {"name": "signatureType", "type": "uint8"},
    {"name": "timestamp", "type": "uint256"},
    {"name": "metadata", "type": "bytes32"},
    {"name": "builder", "type": "bytes32"},
]
_V1_ONLY_FIELDS = ("feeRateBps", "nonce", "taker")


@dataclass(slots=True)
class FakeMarket:
    condition_id: str
    token_up: str
    token_down: str
    tick: str = "0.01"
    min_size: float = 5.0
    fee_rate: float = 0.07
    fee_exponent: float = 1.0
    neg_risk: bool = False


@dataclass(slots=True)
class Resting:
    order_id: str
    price: float
    size: int  # micro shares left
    seq: int
    owner: str | None = None  # API key of a user order; None for liquidity the test set


@dataclass(slots=True)
class Wallet:
    usdc: int = 0  # micro pUSD
    shares: dict[str, int] = field(default_factory=dict)  # settled micro shares per token
    pending: dict[str, int] = field(default_factory=dict)  # bought, not yet sellable


@dataclass(frozen=True, slots=True)
class IssuedKey:
    api_key: str
    secret: str
    passphrase: str
    address: str


@dataclass(slots=True)
class FakeTrade:
    id: str
    taker_order_id: str
    asset_id: str
    side: str
    price: float
    size: float
    fee: float


def _fmt(micro: int) -> str:
    return f"{micro / MICRO:.6f}".rstrip("0").rstrip(".") or "0"


def _typed_data(primary: str, fields: list[dict], domain: dict, message: dict) -> dict:
    domain_fields = [{"name": k, "type": "address" if k == "verifyingContract" else
                      "uint256" if k == "chainId" else "string"} for k in domain]
    return {"primaryType": primary, "types": {"EIP712Domain": domain_fields, primary: fields},
            "domain": domain, "message": message}


def _order_typed_data(order: dict, exchange: str) -> dict:
    message = {
        "salt": int(order["salt"]),
        "maker": order["maker"],
        "signer": order["signer"],
        "tokenId": int(order["tokenId"]),
        "makerAmount": int(order["makerAmount"]),
        "takerAmount": int(order["takerAmount"]),
        "side": 0 if order["side"] == "BUY" else 1,
        "signatureType": int(order["signatureType"]),
        "timestamp": int(order["timestamp"]),
        "metadata": bytes.fromhex(order["metadata"].removeprefix("0x").zfill(64)),
        "builder": bytes.fromhex(order["builder"].removeprefix("0x").zfill(64)),
    }
    domain = {"name": "Polymarket CTF Exchange", "version": "2", "chainId": CHAIN_ID, "verifyingContract": exchange}
    return _typed_data("Order", _ORDER_FIELDS, domain, message)


class _Reject(Exception):
    def __init__(self, status: int, error: str) -> None:
        super().__init__(error)
        self.status = status
        self.error = error


class FakeClob:
    """The fake venue. `with FakeClob() as clob:` starts it; `clob.url` is the host for ClobClient."""

    def __init__(self) -> None:
        self.markets: dict[str, FakeMarket] = {}
        self.wallets: dict[str, Wallet] = {}  # by funder (maker) address, lower case
        self.hold_new_shares = False  # True: bought shares stay unsellable until settle() (venue balance lag)
        self.posted: list[dict] = []  # every POST /order body received, in order
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request
        self.balance_updates = 0  # calls of /balance-allowance/update
        self.trades: dict[str, FakeTrade] = {}
        self.orders: dict[str, dict] = {}  # accepted orders by id, as GET /data/order/{id} shows them
        self._books: dict[str, dict[str, list[Resting]]] = {}
        self._token_market: dict[str, FakeMarket] = {}
        self._keys: dict[str, IssuedKey] = {}
        self._keys_by_owner: dict[tuple[str, int], IssuedKey] = {}
        self._faults: dict[str, deque[tuple[int, str]]] = {}
        self._drop_answers: dict[str, int] = {}
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""

    # ---- test controls ----------------------------------------------------------------------
    def add_market(self, market: FakeMarket) -> None:
        with self._lock:
            self.markets[market.condition_id] = market
            for token in (market.token_up, market.token_down):
                self._token_market[token] = market
                self._books.setdefault(token, {"bids": [], "asks": []})

    def set_book(self, token: str, bids: list[tuple[float, float]] = (), asks: list[tuple[float, float]] = ()) -> None:
        """Replace the test-set liquidity of `token` (levels as (price, shares)); user orders stay."""
        with self._lock:
            book = self._books.setdefault(token, {"bids": [], "asks": []})
            for side, levels in (("bids", bids), ("asks", asks)):
                kept = [r for r in book[side] if r.owner is not None]
                kept += [Resting(f"0xbook{next(self._seq)}", p, round(s * MICRO), next(self._seq)) for p, s in levels]
                book[side] = kept

    def fund(self, funder: str, usdc: float) -> None:
        with self._lock:
            self._wallet(funder).usdc = round(usdc * MICRO)

    def usdc(self, funder: str) -> float:
        return self._wallet(funder).usdc / MICRO

    def shares(self, funder: str, token: str) -> float:
        """Shares the wallet holds (settled and pending)."""
        w = self._wallet(funder)
        return (w.shares.get(token, 0) + w.pending.get(token, 0)) / MICRO

    def settle(self) -> None:
        """Credit bought shares so they can be sold (the venue's balance catching up)."""
        with self._lock:
            for w in self.wallets.values():
                for token, qty in w.pending.items():
                    w.shares[token] = w.shares.get(token, 0) + qty
                w.pending.clear()

    def fail_next(self, path: str, status: int, error: str, times: int = 1) -> None:
        """Answer the next `times` requests to `path` (or under it, when it ends in "/") with `status` and
        `{"error": error}`."""
        with self._lock:
            self._faults.setdefault(path, deque()).extend([(status, error)] * times)

    def drop_answer_next(self, path: str, times: int = 1) -> None:
        """Process the next `times` requests to `path`, then close the connection without answering
        (an answer lost in transit: the client cannot tell whether the order traded)."""
        with self._lock:
            self._drop_answers[path] = self._drop_answers.get(path, 0) + times

    def issue_key(self, address: str, nonce: int = 0) -> IssuedKey:
        """The credentials the venue holds for (address, nonce), created if new."""
        with self._lock:
            return self._issue(address, nonce)

    def book_levels(self, token: str, side: str) -> list[tuple[float, float]]:
        with self._lock:
            return [(r.price, r.size / MICRO) for r in self._sorted(token, side)]

    def resting_user_orders(self) -> list[str]:
        with self._lock:
            return [r.order_id for b in self._books.values() for s in b.values() for r in s if r.owner]

    # ---- lifecycle --------------------------------------------------------------------------
    def start(self) -> str:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-clob", daemon=True)
        self._thread.start()
        port = asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(10)
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._loop = None

    def __enter__(self) -> FakeClob:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _serve(self) -> int:
        app = web.Application()
        get, post, delete = "GET", "POST", "DELETE"
        routes = [
            (get, "/ok", self._ok), (get, "/time", self._time), (get, "/version", self._version),
            (post, "/auth/api-key", self._create_key), (get, "/auth/derive-api-key", self._derive_key),
            (get, "/auth/api-keys", self._api_keys),
            (get, "/clob-markets/{cid}", self._clob_market), (get, "/markets-by-token/{token}", self._by_token),
            (get, "/tick-size", self._tick_size), (get, "/neg-risk", self._neg_risk), (get, "/fee-rate", self._fee_rate),
            (get, "/book", self._book),
            (post, "/order", self._post_order), (delete, "/order", self._cancel),
            (delete, "/orders", self._cancel_many), (delete, "/cancel-all", self._cancel_all),
            (get, "/data/orders", self._open_orders), (get, "/data/trades", self._trades),
            (get, "/data/order/{order_id}", self._order),
            (get, "/balance-allowance/update", self._balance_update),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, path, self._wrap(handler))
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        return self._runner.addresses[0][1]

    def _wrap(self, handler):
        async def run(request: web.Request) -> web.StreamResponse:
            body = await request.text()
            with self._lock:
                self.requests.append((request.method, request.path))
                # a fault path ending in "/" covers every path under it ("/data/order/")
                faults = self._faults.get(request.path) or self._faults.get(request.path.rsplit("/", 1)[0] + "/")
                try:
                    if faults:
                        raise _Reject(*faults.popleft())
                    result = handler(request, body)
                except _Reject as exc:
                    return web.json_response({"error": exc.error}, status=exc.status)
                drop = self._drop_answers.get(request.path, 0)
                if drop:
                    self._drop_answers[request.path] = drop - 1
                    request.transport.close()
            if isinstance(result, str):
                return web.Response(text=result)
            return web.json_response(result)

        return run

    # ---- helpers (called with the lock held) ------------------------------------------------
    def _wallet(self, funder: str) -> Wallet:
        return self.wallets.setdefault(funder.lower(), Wallet())

    def _issue(self, address: str, nonce: int) -> IssuedKey:
        owner = (address.lower(), nonce)
        key = self._keys_by_owner.get(owner)
        if key is None:
            key = IssuedKey(str(uuid.uuid4()), base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
                            secrets.token_hex(32), address)
            self._keys_by_owner[owner] = key
            self._keys[key.api_key] = key
        return key

    def _sorted(self, token: str, side: str) -> list[Resting]:
        levels = self._books.get(token, {}).get(side, [])
        sign = -1.0 if side == "bids" else 1.0  # bids best = highest price; ties by arrival (price-time)
        return sorted(levels, key=lambda r: (sign * r.price, r.seq))

    def _l1(self, request: web.Request) -> tuple[str, int]:
        h = request.headers
        try:
            address, nonce = h["POLY_ADDRESS"], int(h["POLY_NONCE"])
            message = {"address": address, "timestamp": h["POLY_TIMESTAMP"], "nonce": nonce,
                       "message": CLOB_AUTH_MESSAGE}
            fields = [{"name": "address", "type": "address"}, {"name": "timestamp", "type": "string"},
                      {"name": "nonce", "type": "uint256"}, {"name": "message", "type": "string"}]
            domain = {"name": "ClobAuthDomain", "version": "1", "chainId": CHAIN_ID}
            signable = encode_typed_data(full_message=_typed_data("ClobAuth", fields, domain, message))
            signer = Account.recover_message(signable, signature=h["POLY_SIGNATURE"])
        except (KeyError, ValueError, TypeError):
            raise _Reject(401, ERR_L1) from None
        if signer.lower() != address.lower():
            raise _Reject(401, ERR_L1)
        return address, nonce

    def _l2(self, request: web.Request, body: str) -> IssuedKey:
        h = request.headers
        key = self._keys.get(h.get("POLY_API_KEY", ""))
        if key is None or not hmac.compare_digest(h.get("POLY_PASSPHRASE", ""), key.passphrase):
            raise _Reject(401, ERR_UNAUTHORIZED)
        if h.get("POLY_ADDRESS", "").lower() != key.address.lower():
            raise _Reject(401, ERR_UNAUTHORIZED)
        message = h.get("POLY_TIMESTAMP", "") + request.method + request.path + body
        digest = hmac.new(base64.urlsafe_b64decode(key.secret), message.encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(base64.urlsafe_b64encode(digest).decode(), h.get("POLY_SIGNATURE", "")):
            raise _Reject(401, ERR_UNAUTHORIZED)
        return key

    def _market_of(self, token: str) -> FakeMarket:
        market = self._token_market.get(token)
        if market is None:
            raise _Reject(404, "No orderbook exists for the requested token id")
        return market

    # ---- public endpoints -------------------------------------------------------------------
    def _ok(self, request: web.Request, body: str) -> str:
        return "OK"

    def _time(self, request: web.Request, body: str) -> str:
        return str(int(time.time()))

    def _version(self, request: web.Request, body: str) -> dict:
        return {"version": 2}

    def _clob_market(self, request: web.Request, body: str) -> dict:
        m = self.markets.get(request.match_info["cid"])
        if m is None:
            raise _Reject(404, "market not found")
        return {
            "c": m.condition_id,
            "t": [{"t": m.token_up, "o": "Up"}, {"t": m.token_down, "o": "Down"}],
            "mts": float(m.tick),
            "mos": m.min_size,
            "nr": m.neg_risk,
            "fd": {"r": m.fee_rate, "e": m.fee_exponent, "to": True},
        }

    def _by_token(self, request: web.Request, body: str) -> dict:
        m = self._market_of(request.match_info["token"])
        return {"condition_id": m.condition_id, "primary_token_id": m.token_up, "secondary_token_id": m.token_down}

    def _tick_size(self, request: web.Request, body: str) -> dict:
        return {"minimum_tick_size": float(self._market_of(request.query.get("token_id", "")).tick)}

    def _neg_risk(self, request: web.Request, body: str) -> dict:
        return {"neg_risk": self._market_of(request.query.get("token_id", "")).neg_risk}

    def _fee_rate(self, request: web.Request, body: str) -> dict:
        return {"base_fee": 1000 if self._market_of(request.query.get("token_id", "")).fee_rate else 0}

    def _book(self, request: web.Request, body: str) -> dict:
        token = request.query.get("token_id", "")
        m = self._market_of(token)

        def side(name: str) -> list[dict]:
            # the REST book lists levels worst first (the client's market-price walk reads it reversed)
            levels = self._sorted(token, name)[::-1]
            return [{"price": str(r.price), "size": _fmt(r.size)} for r in levels]

        return {"market": m.condition_id, "asset_id": token, "timestamp": "0", "hash": "",
                "bids": side("bids"), "asks": side("asks"), "min_order_size": str(m.min_size),
                "tick_size": m.tick, "neg_risk": m.neg_risk, "last_trade_price": ""}

    # ---- auth -------------------------------------------------------------------------------
    def _create_key(self, request: web.Request, body: str) -> dict:
        address, nonce = self._l1(request)
        if (address.lower(), nonce) in self._keys_by_owner:
            raise _Reject(400, "Could not create api key")
        key = self._issue(address, nonce)
        return {"apiKey": key.api_key, "secret": key.secret, "passphrase": key.passphrase}

    def _derive_key(self, request: web.Request, body: str) -> dict:
        address, nonce = self._l1(request)
        key = self._keys_by_owner.get((address.lower(), nonce))
        if key is None:
            raise _Reject(400, "Could not derive api key!")
        return {"apiKey": key.api_key, "secret": key.secret, "passphrase": key.passphrase}

    def _api_keys(self, request: web.Request, body: str) -> dict:
        key = self._l2(request, body)
        return {"apiKeys": [k.api_key for k in self._keys.values() if k.address.lower() == key.address.lower()]}

    # ---- orders -----------------------------------------------------------------------------
    def _post_order(self, request: web.Request, body: str) -> dict:
        try:
            payload = json.loads(body)
        except ValueError:
            raise _Reject(400, "Invalid order payload") from None
        self.posted.append(payload)
        key = self._l2(request, body)
        return self._place(key, payload)

    def _place(self, key: IssuedKey, payload: dict) -> dict:
        order = payload.get("order") or {}
        if payload.get("owner") != key.api_key:
            raise _Reject(400, ERR_OWNER)
        if "timestamp" not in order or any(f in order for f in _V1_ONLY_FIELDS):
            raise _Reject(400, ERR_VERSION)
        m = self._market_of(str(order.get("tokenId")))
        sig_type = int(order.get("signatureType", -1))
        if sig_type == 0:
            raise _Reject(400, ERR_EOA)
        exchange = NEG_RISK_EXCHANGE_V2 if m.neg_risk else EXCHANGE_V2
        try:
            typed = _order_typed_data(order, exchange)
            signable = encode_typed_data(full_message=typed)
            # POLY_1271 (deposit wallet) signatures need the wallet contract; the fake knows no wallets
            recovered = Account.recover_message(signable, signature=order["signature"]) if sig_type in (1, 2) else ""
        except (KeyError, ValueError, TypeError):
            raise _Reject(400, ERR_SIGNATURE) from None
        if recovered.lower() != str(order["signer"]).lower():
            raise _Reject(400, ERR_SIGNATURE)
        if recovered.lower() != key.address.lower():
            raise _Reject(400, ERR_SIGNER)
        order_id = "0x" + keccak(b"\x19" + signable.version + signable.header + signable.body).hex()
        order_type = payload.get("orderType")
        side, maker, taker = order["side"], int(order["makerAmount"]), int(order["takerAmount"])
        if maker <= 0 or taker <= 0 or side not in ("BUY", "SELL"):
            raise _Reject(400, f"order {order_id} is invalid. invalid amounts")
        market_order = order_type in ("FOK", "FAK")
        if market_order and (maker % 10_000 or taker % 100):
            raise _Reject(400, f"invalid amounts, the market {side.lower()} orders maker amount supports a max "
                               "accuracy of 2 decimals, taker amount a max of 4 decimals")
        price = maker / taker if side == "BUY" else taker / maker
        tick = float(m.tick)
        off_grid = abs(price / tick - round(price / tick)) > 1e-6
        if price < tick - 1e-9 or price > 1 - tick + 1e-9 or (not market_order and off_grid):
            raise _Reject(400, f"order {order_id} is invalid. Price ({price:g}) breaks minimum tick size rule: {m.tick}")
        size = (taker if side == "BUY" else maker) / MICRO
        if size < m.min_size - 1e-9:
            raise _Reject(400, f"order {order_id} is invalid. Size ({size:g}) lower than the minimum: {m.min_size:g}")
        token = str(order["tokenId"])
        opposite = self._sorted(token, "asks" if side == "BUY" else "bids")
        crosses = [r for r in opposite if (r.price <= price + 1e-9 if side == "BUY" else r.price >= price - 1e-9)]
        if payload.get("postOnly") and crosses:
            raise _Reject(400, ERR_POST_ONLY)
        wallet = self._wallet(order["maker"])
        if (wallet.usdc if side == "BUY" else wallet.shares.get(token, 0)) < maker:
            raise _Reject(400, ERR_BALANCE)
        fills, full = self._match(crosses, side, maker, taker, market_order)
        if order_type == "FOK" and not full:
            raise _Reject(400, ERR_FOK)
        if order_type == "FAK" and not fills:
            raise _Reject(400, ERR_FAK)
        return self._apply(m, key, order_id, token, side, price, fills, wallet, order_type, maker, taker)

    def _match(self, crosses: list[Resting], side: str, maker: int, taker: int,
               market_order: bool) -> tuple[list[tuple[Resting, int, int]], bool]:
        """Fills as (resting, micro shares, micro USDC); whether the order is complete."""
        fills: list[tuple[Resting, int, int]] = []
        spend_dollars = side == "BUY" and market_order  # a market buy spends its maker USDC amount
        left = maker if side == "SELL" else (maker if spend_dollars else taker)
        for r in crosses:
            if spend_dollars:
                qty = min(r.size, int(left / r.price))
            else:
                qty = min(r.size, left)
            if qty <= 0:
                break
            cash = round(qty * r.price)
            fills.append((r, qty, cash))
            left -= cash if spend_dollars else qty
        full = left <= 1 if spend_dollars else left == 0
        return fills, full

    def _apply(self, m: FakeMarket, key: IssuedKey, order_id: str, token: str, side: str, price: float,
               fills: list[tuple[Resting, int, int]], wallet: Wallet, order_type: str, maker: int,
               taker: int) -> dict:
        shares = cash = 0
        trade_ids = []
        for r, qty, level_cash in fills:
            r.size -= qty
            fee = round(qty / MICRO * m.fee_rate * (r.price * (1.0 - r.price)) ** m.fee_exponent, 5)
            if side == "BUY":
                wallet.usdc -= level_cash
                net = qty - round(fee / r.price * MICRO)  # the fee is taken in shares on buys
                bucket = wallet.pending if self.hold_new_shares else wallet.shares
                bucket[token] = bucket.get(token, 0) + net
            else:
                wallet.shares[token] -= qty
                wallet.usdc += level_cash - round(fee * MICRO)
            trade = FakeTrade(str(uuid.uuid4()), order_id, token, side, r.price, qty / MICRO, fee)
            self.trades[trade.id] = trade
            trade_ids.append(trade.id)
            shares += qty
            cash += level_cash
        for levels in self._books[token].values():
            levels[:] = [r for r in levels if r.size > 0]
        status = "matched" if fills else "live"
        if order_type in ("GTC", "GTD"):
            left = (taker if side == "BUY" else maker) - shares
            if left > 0:
                own_side = "bids" if side == "BUY" else "asks"
                self._books[token][own_side].append(Resting(order_id, price, left, next(self._seq), key.api_key))
                status = "live"
        making, taking = (cash, shares) if side == "BUY" else (shares, cash)
        self.orders[order_id] = {
            "id": order_id, "status": status.upper(), "owner": key.api_key, "asset_id": token, "side": side,
            "price": str(round(price, 6)), "original_size": _fmt(taker if side == "BUY" else maker),
            "size_matched": _fmt(shares), "order_type": order_type, "associate_trades": trade_ids,
        }
        return {
            "success": True,
            "errorMsg": "",
            "orderID": order_id,
            "status": status,
            "makingAmount": _fmt(making),
            "takingAmount": _fmt(taking),
            "transactionsHashes": ["0x" + secrets.token_hex(32) for _ in trade_ids],
            "tradeIDs": trade_ids,
        }

    def _cancel_ids(self, key: IssuedKey, ids: list[str] | None) -> dict:
        canceled = []
        for book in self._books.values():
            for levels in book.values():
                for r in list(levels):
                    if r.owner == key.api_key and (ids is None or r.order_id in ids):
                        levels.remove(r)
                        canceled.append(r.order_id)
        missing = {i: "order not found" for i in (ids or []) if i not in canceled}
        return {"canceled": canceled, "not_canceled": missing}

    def _cancel(self, request: web.Request, body: str) -> dict:
        key = self._l2(request, body)
        return self._cancel_ids(key, [json.loads(body)["orderID"]])

    def _cancel_many(self, request: web.Request, body: str) -> dict:
        key = self._l2(request, body)
        return self._cancel_ids(key, list(json.loads(body)))

    def _cancel_all(self, request: web.Request, body: str) -> dict:
        return self._cancel_ids(self._l2(request, body), None)

    def _open_orders(self, request: web.Request, body: str) -> dict:
        key = self._l2(request, body)
        data = [
            {"id": r.order_id, "status": "LIVE", "asset_id": token, "price": str(r.price),
             "original_size": _fmt(r.size), "size_matched": "0", "side": "BUY" if side == "bids" else "SELL"}
            for token, book in self._books.items() for side, levels in book.items() for r in levels
            if r.owner == key.api_key
        ]
        return {"data": data, "next_cursor": "LTE=", "limit": 100, "count": len(data)}

    def _order(self, request: web.Request, body: str) -> dict:
        key = self._l2(request, body)
        order = self.orders.get(request.match_info["order_id"])
        if order is None or order["owner"] != key.api_key:
            raise _Reject(404, "order not found")
        return order

    def _trades(self, request: web.Request, body: str) -> dict:
        self._l2(request, body)
        wanted = request.query.get("id")
        data = [
            {"id": t.id, "taker_order_id": t.taker_order_id, "asset_id": t.asset_id, "side": t.side,
             "price": str(t.price), "size": f"{t.size:.6f}", "status": "CONFIRMED", "transaction_hash": "0x" + "ab" * 32,
             "trader_side": "TAKER"}
            for t in self.trades.values() if wanted in (None, t.id)
        ]
        return {"data": data, "next_cursor": "LTE=", "limit": 100, "count": len(data)}

    def _balance_update(self, request: web.Request, body: str) -> str:
        self._l2(request, body)
        self.balance_updates += 1
        return ""
