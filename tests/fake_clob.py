"""A local fake of Polymarket's CLOB V2 REST API for the live broker's tests, as strict as the venue.

An aiohttp server on 127.0.0.1 (random port, own event loop in a background thread) that speaks the
paths, headers and JSON py_clob_client_v2 1.2.1 uses, and checks what it receives the way the venue
does:
- L1 EIP-712 `ClobAuth` signatures for API-key creation (keys are bound to the signing EOA), L2 HMAC
  headers against the credentials it issued.
- Each order's signature under its market's exchange domain: EIP-712 recovery for signature types 1
  and 2, and for type 3 (deposit wallet, POLY_1271) the ERC-7739 `TypedDataSign` envelope, checked
  against the wallet's owner. The order's signer must be the API key's address, so a type-3 order
  (signer = the wallet) is refused under an EOA-bound key, as the venue does.
- A market takes orders of one exchange version: a V2-signed order on a V3 market is answered
  `order_version_mismatch`.
- Taker fees `shares x rate x (p(1-p))^exponent` per fill, paid in pUSD on top of a buy (every share
  is delivered) and out of a sale's proceeds; the balance check counts the fee ("order amount (inc.
  fees)") and the pUSD allowance / CTF approval of the market's exchange (none until `approve`).
- Taker orders can be answered `delayed` (zero amounts, matched later, their funds reserved); trades
  start MATCHED and settle CONFIRMED, or FAILED (reverted) when told to; `GET /data/order/{id}` answers
  nothing (JSON null) for market orders and unknown ids; the tick can change under the client.
Amounts are kept in 6-decimal integer units, like the contracts.
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
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak

MICRO = 1_000_000
MAX_UINT256 = 2**256 - 1
CHAIN_ID = 137
# Polygon contracts (docs.polymarket.com/v2-migration, resources/contracts)
EXCHANGE_V2 = "0xE111180000d2663C0091e4f400237545B87B996B"
NEG_RISK_EXCHANGE_V2 = "0xe2222d279d744050d28e00520010520000310F59"
NEG_RISK_ADAPTER = "0xd91E80cF2E7be2e162c6513ceD06f1dD0dA35296"
EXCHANGE_V3 = "0xe3333700cA9d93003F00f0F71f8515005F6c00Aa"
SPENDERS = (EXCHANGE_V2, NEG_RISK_EXCHANGE_V2, NEG_RISK_ADAPTER)  # what /balance-allowance lists
CLOB_AUTH_MESSAGE = "This message attests that I control the given wallet"

ERR_BALANCE = "not enough balance / allowance"
ERR_FOK = "order couldn't be fully filled. FOK orders are fully filled or killed."
ERR_FAK = "no orders found to match with FAK order. FAK orders are partially filled or killed if no match is found."
ERR_POST_ONLY = "invalid post-only order: order crosses book"
ERR_SIGNATURE = "invalid signature"
ERR_VERSION = "invalid order version"
ERR_VERSION_MISMATCH = "order_version_mismatch"
ERR_EOA = "maker address not allowed, please use the deposit wallet flow"
ERR_UNAUTHORIZED = "Unauthorized/Invalid api key"
ERR_L1 = "Invalid L1 Request headers"
ERR_OWNER = "the order owner has to be the owner of the API KEY"
ERR_SIGNER = "the order signer address has to be the address of the API KEY"
TOO_MANY_REQUESTS = (429, "Too Many Requests")
TRADING_DISABLED = (503, "Trading is currently disabled. Check polymarket.com for updates")
ENGINE_RESTART = (425, "the matching engine is restarting, please retry")

ORDER_TYPE_STRING = (
    "Order(uint256 salt,address maker,address signer,uint256 tokenId,uint256 makerAmount,uint256 takerAmount,"
    "uint8 side,uint8 signatureType,uint256 timestamp,bytes32 metadata,bytes32 builder)"
)
_TYPED_DATA_SIGN = (
    "TypedDataSign(Order contents,string name,string version,uint256 chainId,address verifyingContract,"
    "bytes32 salt)" + ORDER_TYPE_STRING
)
_DOMAIN_TYPE = "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
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
_EXCHANGES = {2: (EXCHANGE_V2, NEG_RISK_EXCHANGE_V2), 3: (EXCHANGE_V3, EXCHANGE_V3)}  # version -> (plain, neg risk)


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
    version: int = 2  # the exchange domain version its orders must be signed for (3 = Exchange V3)


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
    allowances: dict[str, int] = field(default_factory=dict)  # pUSD allowance per spender (lower case)
    operators: set[str] = field(default_factory=set)  # CTF setApprovalForAll operators (lower case)

    def held(self, token: str) -> int:
        return self.shares.get(token, 0)


@dataclass(frozen=True, slots=True)
class IssuedKey:
    api_key: str
    secret: str
    passphrase: str
    address: str


@dataclass(slots=True)
class FakeTrade:
    """One match of a taker order, as the venue records it: the maker orders it took, level by level."""

    id: str
    taker_order_id: str
    market: str
    asset_id: str
    side: str
    price: float  # the taker order's own price, not what it paid: read `levels`
    levels: list[tuple[str, float, int, int]]  # (maker order id, price, micro shares, micro fee)
    maker: str  # the taker order's funder
    owner: str  # API key
    match_time: float
    status: str = "MATCHED"
    fails: bool = False  # settles FAILED (the chain transaction reverts)
    bucket: str = "shares"  # where a buy's shares went (reverted on failure)

    @property
    def size(self) -> int:
        return sum(q for _, _, q, _ in self.levels)

    @property
    def cash(self) -> int:
        return sum(round(q * p) for _, p, q, _ in self.levels)

    @property
    def fee(self) -> int:
        return sum(f for *_, f in self.levels)


@dataclass(slots=True)
class _Delayed:
    key: IssuedKey
    order_id: str
    market: FakeMarket
    token: str
    side: str
    price: float
    maker: int
    taker: int
    order_type: str
    funder: str
    due: float | None  # monotonic release time; None until release_delayed()


def _fmt(micro: int) -> str:
    return f"{micro / MICRO:.6f}".rstrip("0").rstrip(".") or "0"


def _typed_data(primary: str, fields: list[dict], domain: dict, message: dict) -> dict:
    domain_fields = [{"name": k, "type": "address" if k == "verifyingContract" else
                      "uint256" if k == "chainId" else "string"} for k in domain]
    return {"primaryType": primary, "types": {"EIP712Domain": domain_fields, primary: fields},
            "domain": domain, "message": message}


def _order_message(order: dict) -> dict:
    return {
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


def _domain(exchange: str, version: int) -> dict:
    return {"name": "Polymarket CTF Exchange", "version": str(version), "chainId": CHAIN_ID,
            "verifyingContract": exchange}


def _order_hash(order: dict, exchange: str, version: int) -> str:
    signable = encode_typed_data(full_message=_typed_data("Order", _ORDER_FIELDS, _domain(exchange, version),
                                                          _order_message(order)))
    return "0x" + keccak(b"\x19" + signable.version + signable.header + signable.body).hex()


def _eoa_signer(order: dict, exchange: str, version: int) -> str:
    """The address that signed a type 1/2 order under this exchange domain (EIP-712)."""
    signable = encode_typed_data(full_message=_typed_data("Order", _ORDER_FIELDS, _domain(exchange, version),
                                                          _order_message(order)))
    return Account.recover_message(signable, signature=order["signature"])


def _wallet_signer(order: dict, exchange: str, version: int) -> str:
    """The EOA behind a type-3 order's ERC-7739 envelope: inner signature (65 bytes) | app domain separator |
    contents hash | contents type | its length (uint16). Each part is recomputed here, never trusted."""
    sig = bytes.fromhex(str(order["signature"]).removeprefix("0x"))
    n = int.from_bytes(sig[-2:], "big")
    if len(sig) != 65 + 32 + 32 + n + 2:
        raise ValueError("not an ERC-7739 envelope")
    inner, app_sep, contents, ctype = sig[:65], sig[65:97], sig[97:129], sig[129:129 + n]
    m = _order_message(order)
    expected_sep = keccak(abi_encode(
        ["bytes32", "bytes32", "bytes32", "uint256", "address"],
        [keccak(text=_DOMAIN_TYPE), keccak(text="Polymarket CTF Exchange"), keccak(text=str(version)), CHAIN_ID,
         exchange],
    ))
    expected_contents = keccak(abi_encode(
        ["bytes32", "uint256", "address", "address", "uint256", "uint256", "uint256", "uint8", "uint8", "uint256",
         "bytes32", "bytes32"],
        [keccak(text=ORDER_TYPE_STRING), m["salt"], m["maker"], m["signer"], m["tokenId"], m["makerAmount"],
         m["takerAmount"], m["side"], m["signatureType"], m["timestamp"], m["metadata"], m["builder"]],
    ))
    if app_sep != expected_sep or contents != expected_contents or ctype != ORDER_TYPE_STRING.encode():
        raise ValueError("envelope does not describe this order")
    struct = keccak(abi_encode(
        ["bytes32", "bytes32", "bytes32", "bytes32", "uint256", "address", "bytes32"],
        [keccak(text=_TYPED_DATA_SIGN), contents, keccak(text="DepositWallet"), keccak(text="1"), CHAIN_ID,
         m["signer"], b"\x00" * 32],
    ))
    return Account._recover_hash(keccak(b"\x19\x01" + app_sep + struct), signature=inner)


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
        self.deposit_wallets: dict[str, str] = {}  # deposit wallet -> owner EOA, lower case
        self.proxies: dict[str, str] = {}  # signer EOA -> its proxy/Safe wallet (the venue derives it), lower case
        self.hold_new_shares = False  # True: bought shares stay unsellable until settle() (venue balance lag)
        self.delay_seconds: float | None = 0.25  # how long a delayed order is held; None: until release_delayed()
        self.trade_settle_seconds: float | None = 0.0  # trades settle this long after the match; None: settle_trades()
        self.liquidity: Callable[[str], tuple[list, list]] | None = None  # token -> (bids, asks) before each match
        self.market_source: Callable[[str], FakeMarket | None] | None = None  # markets not added beforehand
        self.posted: list[dict] = []  # every POST /order body received, in order
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request
        self.balance_updates: list[dict] = []  # query of each /balance-allowance/update call
        self.trades: dict[str, FakeTrade] = {}
        self.orders: dict[str, dict] = {}  # resting (GTC/GTD) orders by id, as GET /data/order/{id} shows them
        self._books: dict[str, dict[str, list[Resting]]] = {}
        self._token_market: dict[str, FakeMarket] = {}
        self._keys: dict[str, IssuedKey] = {}
        self._keys_by_owner: dict[tuple[str, int], IssuedKey] = {}
        self._faults: dict[str, deque[tuple[int, str]]] = {}
        self._drop_answers: dict[str, int] = {}
        self._error_answers: dict[str, deque[tuple[int, str]]] = {}
        self._delay_next = 0
        self._fail_next = 0
        self._delayed: list[_Delayed] = []
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""

    # ---- test controls ----------------------------------------------------------------------
    def add_market(self, market: FakeMarket) -> None:
        with self._lock:
            self._add_market(market)

    def set_book(self, token: str, bids: list[tuple[float, float]] = (), asks: list[tuple[float, float]] = ()) -> None:
        """Replace the test-set liquidity of `token` (levels as (price, shares)); user orders stay."""
        with self._lock:
            self._set_book(token, bids, asks)

    def set_tick(self, condition_id: str, tick: str) -> None:
        """The venue changes the market's tick (it does near 0.04 / 0.96), without telling the client."""
        with self._lock:
            self.markets[condition_id].tick = tick

    def fund(self, funder: str, usdc: float) -> None:
        with self._lock:
            self._wallet(funder).usdc = round(usdc * MICRO)

    def link(self, owner: str, wallet: str) -> None:
        """`wallet` is the proxy/Safe of the EOA `owner`: orders of `owner` must name it as maker, and
        balance requests under `owner`'s API key are about it."""
        with self._lock:
            self.proxies[owner.lower()] = wallet.lower()

    def approve(self, funder: str, spenders: tuple[str, ...] = SPENDERS, shares: bool = True) -> None:
        """The one-time setup: pUSD `approve(spender, MAX)` and, with `shares`, CTF `setApprovalForAll`."""
        with self._lock:
            w = self._wallet(funder)
            for s in spenders:
                w.allowances[s.lower()] = MAX_UINT256
                if shares:
                    w.operators.add(s.lower())

    def deposit_wallet(self, owner: str) -> str:
        """A deposit wallet (POLY_1271) owned by the EOA `owner`."""
        wallet = Account.create().address
        with self._lock:
            self.deposit_wallets[wallet.lower()] = owner.lower()
        return wallet

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

    def delay_next(self, times: int = 1) -> None:
        """Answer the next `times` taker orders `delayed`: matched `delay_seconds` later (on the next request)."""
        with self._lock:
            self._delay_next += times

    def release_delayed(self) -> None:
        """Match every delayed order now (with `delay_seconds = None` they wait for this)."""
        with self._lock:
            for d in self._delayed:
                d.due = 0.0
            self._release_due()

    def fail_settlement_next(self, times: int = 1) -> None:
        """The trades of the next `times` matched orders end FAILED at settlement and are reverted."""
        with self._lock:
            self._fail_next += times

    def settle_trades(self) -> None:
        """Settle every MATCHED trade now (CONFIRMED, or FAILED and reverted)."""
        with self._lock:
            self._settle_trades(force=True)

    def fail_next(self, path: str, status: int, error: str, times: int = 1) -> None:
        """Answer the next `times` requests to `path` (or under it, when it ends in "/") with `status` and
        `{"error": error}`."""
        with self._lock:
            self._faults.setdefault(path, deque()).extend([(status, error)] * times)

    def drop_answer_next(self, path: str, times: int = 1) -> None:
        """Process the next `times` requests to `path` (or under it, when it ends in "/"), then close the
        connection without answering (an answer lost in transit)."""
        with self._lock:
            self._drop_answers[path] = self._drop_answers.get(path, 0) + times

    def error_after_next(self, path: str, status: int, error: str, times: int = 1) -> None:
        """Process the next `times` requests to `path`, then answer `status` (a 5xx after the match: the
        client cannot tell whether the order traded)."""
        with self._lock:
            self._error_answers.setdefault(path, deque()).extend([(status, error)] * times)

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

    def trade_statuses(self) -> list[str]:
        with self._lock:
            return [t.status for t in self.trades.values()]

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
            (get, "/balance-allowance", self._balance_allowance),
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
                self._release_due()
                self._settle_trades(force=False)
                # a path ending in "/" covers every path under it ("/data/order/")
                prefix = request.path.rsplit("/", 1)[0] + "/"
                faults = self._faults.get(request.path) or self._faults.get(prefix)
                try:
                    if faults:
                        raise _Reject(*faults.popleft())
                    result = handler(request, body)
                    after = self._error_answers.get(request.path)
                    if after:
                        raise _Reject(*after.popleft())
                    response = web.Response(text=result) if isinstance(result, str) else web.json_response(result)
                except _Reject as exc:
                    response = web.json_response({"error": exc.error}, status=exc.status)
                for path in (request.path, prefix):
                    if self._drop_answers.get(path):
                        self._drop_answers[path] -= 1
                        request.transport.close()
                        break
            return response

        return run

    # ---- helpers (called with the lock held) ------------------------------------------------
    def _add_market(self, market: FakeMarket) -> None:
        self.markets[market.condition_id] = market
        for token in (market.token_up, market.token_down):
            self._token_market[token] = market
            self._books.setdefault(token, {"bids": [], "asks": []})

    def _set_book(self, token: str, bids, asks) -> None:
        book = self._books.setdefault(token, {"bids": [], "asks": []})
        for side, levels in (("bids", bids), ("asks", asks)):
            kept = [r for r in book[side] if r.owner is not None]
            kept += [Resting(f"0xbook{next(self._seq)}", p, round(s * MICRO), next(self._seq)) for p, s in levels]
            book[side] = kept

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

    def _market_by_id(self, condition_id: str) -> FakeMarket | None:
        market = self.markets.get(condition_id)
        if market is None and self.market_source is not None:
            market = self.market_source(condition_id)
            if market is not None:
                self._add_market(market)
        return market

    def _market_of(self, token: str) -> FakeMarket:
        market = self._token_market.get(token)
        if market is None:
            raise _Reject(404, "No orderbook exists for the requested token id")
        return market

    def _fee(self, market: FakeMarket, shares: int, price: float) -> int:
        """Micro pUSD taker fee for `shares` micro shares at `price`, rounded to 5 decimals like the venue."""
        fee = round(shares / MICRO * market.fee_rate * (price * (1.0 - price)) ** market.fee_exponent, 5)
        return round(fee * MICRO)

    def _exchange(self, market: FakeMarket, version: int) -> str:
        plain, neg = _EXCHANGES[version]
        return neg if market.neg_risk else plain

    def _spenders(self, market: FakeMarket) -> tuple[str, ...]:
        if market.version == 3:
            return (EXCHANGE_V3,)
        return (NEG_RISK_EXCHANGE_V2, NEG_RISK_ADAPTER) if market.neg_risk else (EXCHANGE_V2,)

    def _reserved(self, funder: str, token: str | None) -> int:
        """Funds delayed orders hold: pUSD (token None) or shares of `token`."""
        total = 0
        for d in self._delayed:
            if d.funder.lower() != funder.lower():
                continue
            if token is None and d.side == "BUY":
                total += d.maker + self._fee(d.market, d.taker, d.price)
            elif token is not None and d.side == "SELL" and d.token == token:
                total += d.maker
        return total

    def _check_funds(self, market: FakeMarket, wallet: Wallet, funder: str, token: str, side: str, maker: int,
                     need: int) -> None:
        """The venue's balance/allowance check, fees included; `need` is the order amount inc. fees."""
        if side == "BUY":
            available = wallet.usdc - self._reserved(funder, None)
            if available < need:
                raise _Reject(400, f"{ERR_BALANCE}: the balance is not enough -> balance: {available}, "
                                   f"order amount (inc. fees): {need}")
            for spender in self._spenders(market):
                allowance = wallet.allowances.get(spender.lower(), 0)
                if allowance < need:
                    raise _Reject(400, f"{ERR_BALANCE}: the allowance is not enough -> spender: {spender}, "
                                       f"allowance: {allowance}, order amount (inc. fees): {need}")
            return
        available = wallet.held(token) - self._reserved(funder, token)
        if available < maker:
            raise _Reject(400, f"{ERR_BALANCE}: the balance is not enough -> balance: {available}, "
                               f"order amount: {maker}")
        for spender in self._spenders(market):
            if spender.lower() not in wallet.operators:
                raise _Reject(400, f"{ERR_BALANCE}: the allowance is not enough -> spender: {spender}, "
                                   f"allowance: 0, order amount: {maker}")

    # ---- public endpoints -------------------------------------------------------------------
    def _ok(self, request: web.Request, body: str) -> str:
        return "OK"

    def _time(self, request: web.Request, body: str) -> str:
        return str(int(time.time()))

    def _version(self, request: web.Request, body: str) -> dict:
        return {"version": 2}

    def _clob_market(self, request: web.Request, body: str) -> dict:
        m = self._market_by_id(request.match_info["cid"])
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
        if self.liquidity is not None:
            self._set_book(token, *self.liquidity(token))

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

    def _verify_signer(self, order: dict, m: FakeMarket) -> tuple[str, int]:
        """The order's verified signer and the exchange version it was signed for; raises _Reject."""
        sig_type = int(order.get("signatureType", -1))
        if sig_type == 0:
            raise _Reject(400, ERR_EOA)
        if sig_type not in (1, 2, 3):
            raise _Reject(400, ERR_SIGNATURE)
        # the market's own version first; a valid signature for the other one is a version mismatch
        for version in (m.version, 5 - m.version):
            exchange = self._exchange(m, version)
            try:
                if sig_type == 3:
                    owner = _wallet_signer(order, exchange, version)
                    wallet = str(order["signer"]).lower()
                    valid = wallet == str(order["maker"]).lower() and self.deposit_wallets.get(wallet) == owner.lower()
                else:
                    signer = _eoa_signer(order, exchange, version).lower()
                    proxy = self.proxies.get(signer)
                    valid = signer == str(order["signer"]).lower() and proxy in (None, str(order["maker"]).lower())
            except (KeyError, ValueError, TypeError):
                valid = False
            if valid:
                if version != m.version:
                    raise _Reject(400, ERR_VERSION_MISMATCH)
                return str(order["signer"]), version
        raise _Reject(400, ERR_SIGNATURE)

    def _place(self, key: IssuedKey, payload: dict) -> dict:
        order = payload.get("order") or {}
        if payload.get("owner") != key.api_key:
            raise _Reject(400, ERR_OWNER)
        if "timestamp" not in order or any(f in order for f in _V1_ONLY_FIELDS):
            raise _Reject(400, ERR_VERSION)
        m = self._market_of(str(order.get("tokenId")))
        signer, version = self._verify_signer(order, m)
        if signer.lower() != key.address.lower():
            raise _Reject(400, ERR_SIGNER)
        order_id = _order_hash(order, self._exchange(m, version), version)
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
        funder = str(order["maker"])
        wallet = self._wallet(funder)
        need = maker + self._fee(m, taker, price) if side == "BUY" else maker
        self._check_funds(m, wallet, funder, token, side, maker, need)
        if payload.get("postOnly") and self._crossing(token, side, price):
            raise _Reject(400, ERR_POST_ONLY)
        if market_order and self._delay_next:
            self._delay_next -= 1
            due = None if self.delay_seconds is None else time.monotonic() + self.delay_seconds
            self._delayed.append(_Delayed(key, order_id, m, token, side, price, maker, taker, order_type, funder, due))
            return {"success": True, "errorMsg": "", "orderID": order_id, "status": "delayed",
                    "makingAmount": "", "takingAmount": "", "transactionsHashes": [], "tradeIDs": []}
        fills, full = self._match(token, side, price, maker, taker, market_order)
        if order_type == "FOK" and not full:
            raise _Reject(400, ERR_FOK)
        if order_type == "FAK" and not fills:
            raise _Reject(400, ERR_FAK)
        self._check_fills(m, wallet, funder, side, fills)
        return self._apply(m, key, order_id, token, side, price, fills, wallet, funder, order_type, maker, taker)

    def _crossing(self, token: str, side: str, price: float) -> list[Resting]:
        if self.liquidity is not None:
            self._set_book(token, *self.liquidity(token))
        opposite = self._sorted(token, "asks" if side == "BUY" else "bids")
        return [r for r in opposite if (r.price <= price + 1e-9 if side == "BUY" else r.price >= price - 1e-9)]

    def _match(self, token: str, side: str, price: float, maker: int, taker: int,
               market_order: bool) -> tuple[list[tuple[Resting, int, int]], bool]:
        """Fills as (resting, micro shares, micro USDC); whether the order is complete."""
        fills: list[tuple[Resting, int, int]] = []
        spend_dollars = side == "BUY" and market_order  # a market buy spends its maker USDC amount
        left = maker if side == "SELL" else (maker if spend_dollars else taker)
        for r in self._crossing(token, side, price):
            qty = min(r.size, int(left / r.price)) if spend_dollars else min(r.size, left)
            if qty <= 0:
                break
            cash = round(qty * r.price)
            fills.append((r, qty, cash))
            left -= cash if spend_dollars else qty
        full = left <= 1 if spend_dollars else left == 0
        return fills, full

    def _check_fills(self, m: FakeMarket, wallet: Wallet, funder: str, side: str,
                     fills: list[tuple[Resting, int, int]]) -> None:
        """Fees at the prices actually matched can exceed the fee at the order's price: settlement would fail."""
        if side != "BUY":
            return
        total = sum(cash + self._fee(m, qty, r.price) for r, qty, cash in fills)
        available = wallet.usdc - self._reserved(funder, None)
        if total > available:
            raise _Reject(400, f"{ERR_BALANCE}: the balance is not enough -> balance: {available}, "
                               f"order amount (inc. fees): {total}")

    def _apply(self, m: FakeMarket, key: IssuedKey, order_id: str, token: str, side: str, price: float,
               fills: list[tuple[Resting, int, int]], wallet: Wallet, funder: str, order_type: str, maker: int,
               taker: int) -> dict:
        shares = cash = 0
        fails = bool(fills) and self._fail_next > 0
        self._fail_next -= fails
        bucket = "pending" if self.hold_new_shares else "shares"
        levels = []
        for r, qty, level_cash in fills:
            r.size -= qty
            fee = self._fee(m, qty, r.price)
            if side == "BUY":
                wallet.usdc -= level_cash + fee  # fees on top: every share is delivered
                held = getattr(wallet, bucket)
                held[token] = held.get(token, 0) + qty
            else:
                wallet.shares[token] -= qty
                wallet.usdc += level_cash - fee
            levels.append((r.order_id, r.price, qty, fee))
            shares += qty
            cash += level_cash
        trade_ids = []
        if fills:
            trade = FakeTrade(str(uuid.uuid4()), order_id, m.condition_id, token, side, price, levels, funder,
                              key.api_key, time.time(), fails=fails, bucket=bucket)
            self.trades[trade.id] = trade
            trade_ids.append(trade.id)
        for levels in self._books[token].values():
            levels[:] = [r for r in levels if r.size > 0]
        status = "matched" if fills else "live"
        if order_type in ("GTC", "GTD"):
            left = (taker if side == "BUY" else maker) - shares
            if left > 0:
                own_side = "bids" if side == "BUY" else "asks"
                self._books[token][own_side].append(Resting(order_id, price, left, next(self._seq), key.api_key))
                status = "live"
                self.orders[order_id] = {
                    "id": order_id, "status": "LIVE", "owner": key.api_key, "asset_id": token, "side": side,
                    "price": str(round(price, 6)), "original_size": _fmt(taker if side == "BUY" else maker),
                    "size_matched": _fmt(shares), "order_type": order_type, "associate_trades": trade_ids,
                }
        making, taking = (cash, shares) if side == "BUY" else (shares, cash)
        return {
            "success": True,
            "errorMsg": "",
            "orderID": order_id,
            "status": status,
            "makingAmount": _fmt(making),
            "takingAmount": _fmt(taking),
            "transactionsHashes": [],  # V2 settles asynchronously: follow tradeIDs
            "tradeIDs": trade_ids,
        }

    def _release_due(self) -> None:
        now = time.monotonic()
        for d in [d for d in self._delayed if d.due is not None and d.due <= now]:
            self._delayed.remove(d)
            wallet = self._wallet(d.funder)
            fills, full = self._match(d.token, d.side, d.price, d.maker, d.taker, True)
            if not fills or (d.order_type == "FOK" and not full):
                continue  # killed: no trade
            try:
                self._check_fills(d.market, wallet, d.funder, d.side, fills)
            except _Reject:
                continue
            self._apply(d.market, d.key, d.order_id, d.token, d.side, d.price, fills, wallet, d.funder,
                        d.order_type, d.maker, d.taker)

    def _settle_trades(self, force: bool) -> None:
        if self.trade_settle_seconds is None and not force:
            return
        cutoff = time.time() - (0.0 if force else self.trade_settle_seconds)
        for t in self.trades.values():
            if t.status != "MATCHED" or t.match_time > cutoff:
                continue
            if not t.fails:
                t.status = "CONFIRMED"
                continue
            t.status = "FAILED"  # the settlement transaction reverted: nothing moved
            w = self._wallet(t.maker)
            cash = t.cash
            if t.side == "BUY":
                w.usdc += cash + t.fee
                held = getattr(w, t.bucket)
                held[t.asset_id] = held.get(t.asset_id, 0) - t.size
            else:
                w.shares[t.asset_id] = w.shares.get(t.asset_id, 0) + t.size
                w.usdc -= cash - t.fee

    def _cancel_ids(self, key: IssuedKey, ids: list[str] | None) -> dict:
        canceled = []
        for book in self._books.values():
            for levels in book.values():
                for r in list(levels):
                    if r.owner == key.api_key and (ids is None or r.order_id in ids):
                        levels.remove(r)
                        canceled.append(r.order_id)
                        self.orders.pop(r.order_id, None)
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

    def _order(self, request: web.Request, body: str) -> dict | None:
        key = self._l2(request, body)
        order = self.orders.get(request.match_info["order_id"])
        # the venue answers nothing for an order no longer on the book (a filled FAK) or never seen
        return order if order is not None and order["owner"] == key.api_key else None

    def _trades(self, request: web.Request, body: str) -> dict:
        key = self._l2(request, body)
        q = request.query
        after = float(q["after"]) if q.get("after") else None
        before = float(q["before"]) if q.get("before") else None
        data = [
            {"id": t.id, "taker_order_id": t.taker_order_id, "market": t.market, "asset_id": t.asset_id,
             "side": t.side, "price": str(round(t.price, 6)), "size": _fmt(t.size),
             "maker_orders": [{"order_id": o, "price": str(p), "matched_amount": _fmt(q), "asset_id": t.asset_id,
                               "side": "SELL" if t.side == "BUY" else "BUY"} for o, p, q, _ in t.levels],
             "fee_rate_bps": str(round(self._token_market[t.asset_id].fee_rate * 10_000)),
             "status": t.status, "match_time": str(int(t.match_time)), "owner": t.owner, "maker_address": t.maker,
             "transaction_hash": "0x" + keccak(text=t.id).hex() if t.status == "CONFIRMED" else "",
             "trader_side": "TAKER"}
            for t in self.trades.values()
            if t.owner == key.api_key
            and q.get("id") in (None, t.id) and q.get("asset_id") in (None, t.asset_id)
            and q.get("market") in (None, t.market)
            and (after is None or t.match_time >= after) and (before is None or t.match_time <= before)
        ]
        return {"data": data, "next_cursor": "LTE=", "limit": 100, "count": len(data)}

    def _balance_allowance(self, request: web.Request, body: str) -> dict:
        self._l2(request, body)
        w = self._wallet(self._funder_of(request))
        if request.query.get("asset_type") == "CONDITIONAL":
            token = request.query.get("token_id", "")
            if token not in self._token_market:
                raise _Reject(400, "Invalid token id")
            balance = w.held(token)
            allowances = {s: str(MAX_UINT256 if s.lower() in w.operators else 0) for s in SPENDERS}
        else:
            balance = w.usdc
            allowances = {s: str(w.allowances.get(s.lower(), 0)) for s in SPENDERS}
        return {"balance": str(balance), "allowances": allowances}

    def _balance_update(self, request: web.Request, body: str) -> str:
        self._l2(request, body)
        self.balance_updates.append(dict(request.query))
        return ""

    def _funder_of(self, request: web.Request) -> str:
        """The wallet a balance request is about: the proxy/Safe the venue derives from the key's owner."""
        owner = self._keys[request.headers["POLY_API_KEY"]].address.lower()
        return self.proxies.get(owner, owner)
