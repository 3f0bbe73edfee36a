"""The account a live run trades for: the L2 API session, the funder's pUSD balance and approvals as the
venue reads them from the chain, and the dollars the run has committed (the cap and the balance)."""

from __future__ import annotations

import logging
from typing import Any

from py_clob_client_v2 import ApiCreds, AssetType, BalanceAllowanceParams
from py_clob_client_v2.config import get_contract_config
from py_clob_client_v2.exceptions import PolyApiException, PolyException

from venues.polymarket.credentials import LiveBrokerError, LiveBrokerFatal, LiveCredentials
from venues.polymarket.venue import MIN_MARKET_BUY_DOLLARS, Client, Venue, error_text

log = logging.getLogger(__name__)

_START_HEADROOM = 1.10  # one minimum order plus a fee of up to 10 %


def open_session(client: Client, credentials: LiveCredentials, host: str) -> None:
    """Obtain the L2 credentials (given, else created or derived from the key) and prove them with one
    request; LiveBrokerError (LiveBrokerFatal when the venue refuses them) with a one-sentence reason."""
    try:
        if credentials.api is not None:
            api = credentials.api
            creds = ApiCreds(api.api_key, api.api_secret, api.api_passphrase)
        else:
            creds = client.create_or_derive_api_key()
        client.set_api_creds(creds)
        client.get_api_keys()  # proves the L2 credentials before any order is built
    except PolyApiException as exc:
        if exc.status_code == 401:
            raise LiveBrokerFatal(
                "the CLOB refused the API credentials (401); check POLYMARKET_API_KEY/SECRET/PASSPHRASE "
                "or unset them to derive them from the private key."
            ) from None
        if exc.status_code is None:
            raise LiveBrokerError(f"the CLOB at {host} is unreachable (set UPDOWN_CLOB_URL to change it).") from None
        raise LiveBrokerError(
            f"could not set up the CLOB session at {host}: {error_text(exc)} (status {exc.status_code})."
        ) from None
    except PolyException as exc:
        raise LiveBrokerError(f"could not set up the CLOB session at {host}: {error_text(exc)}.") from None


class Account:
    """The funder's pUSD and approvals, and what the run committed: `spent` (entries, fees included,
    against the run's cap) and `balance` (the pUSD as last read, minus what the run paid since)."""

    def __init__(self, venue: Venue, funder: str, chain_id: int) -> None:
        self.venue = venue
        self.funder = funder
        self.spent = 0.0
        self.balance: float | None = None
        contracts = get_contract_config(chain_id)
        self._spender_names = {
            contracts.exchange_v2.lower(): "the CTF Exchange V2",
            contracts.neg_risk_exchange_v2.lower(): "the neg-risk CTF Exchange V2",
            contracts.neg_risk_adapter.lower(): "the neg-risk adapter",
        }
        self._exchange = contracts.exchange_v2.lower()
        self._shares_approved = False

    def commit(self, cost: float) -> None:
        """A buy's dollars (fees included) leave the wallet and count against the cap; negative undoes one."""
        self.spent += cost
        if self.balance is not None:
            self.balance -= cost

    def credit(self, proceeds: float) -> None:
        """A sale's proceeds after its fee reach the wallet; negative undoes one."""
        if self.balance is not None:
            self.balance += proceeds

    def check(self) -> float:
        """Before the first decision: have the venue re-read the funder's pUSD balance and allowances
        from the chain, then check them; the balance in dollars, or LiveBrokerError naming what is
        missing and how to set it."""
        params = BalanceAllowanceParams(asset_type=AssetType.COLLATERAL)
        try:
            balance, allowances = self._read(params)
        except (PolyException, ValueError) as exc:
            detail = error_text(exc) if isinstance(exc, PolyException) else str(exc)
            raise LiveBrokerError(f"could not read the funder's pUSD balance and allowances from the CLOB: "
                                  f"{detail}.") from None
        missing = self._missing(allowances)
        if missing:
            raise LiveBrokerError(
                f"the funder {self.funder} has not approved {missing} to spend its pUSD; set the approvals once "
                "(README, 'Live orders': polymarket.com sets them when the wallet first trades there) and start again."
            )
        if balance < MIN_MARKET_BUY_DOLLARS * _START_HEADROOM:
            raise LiveBrokerError(
                f"the funder {self.funder} holds ${balance:,.2f} pUSD, less than one ${MIN_MARKET_BUY_DOLLARS:.2f} "
                "order and its fee; deposit to that wallet on polymarket.com (deposits arrive as pUSD) and start again."
            )
        self.balance = balance
        return balance

    def check_share_approval(self, token: str) -> None:
        """Once, before the first buy: the CTF approvals a sale needs (shares bought must be sellable)."""
        if self._shares_approved:
            return
        params = BalanceAllowanceParams(asset_type=AssetType.CONDITIONAL, token_id=token)
        _, allowances = self.venue.call(lambda: self._read(params), "share approvals")
        missing = self._missing(allowances)
        if missing:
            raise LiveBrokerFatal(
                f"the funder {self.funder} has not approved {missing} to move its outcome shares (CTF "
                "setApprovalForAll), so nothing bought could be sold; set the approvals once (README, 'Live "
                "orders') and start again."
            )
        self._shares_approved = True

    def update_balance(self, params: BalanceAllowanceParams) -> None:
        """Ask the venue to re-read a balance from the chain (it answers from a cache otherwise)."""
        try:
            self.venue.client.update_balance_allowance(params)
        except PolyException as exc:
            log.warning("balance refresh failed: %s", error_text(exc))

    def reread_balance(self) -> None:
        """A buy refused for balance: have the venue re-read the pUSD and take its figure."""
        params = BalanceAllowanceParams(asset_type=AssetType.COLLATERAL)
        self.update_balance(params)
        try:
            self.balance, _ = self._balance_allowances(self.venue.client.get_balance_allowance(params))
        except (PolyException, ValueError, TypeError) as exc:
            log.warning("balance read failed: %s", exc)

    def _read(self, params: BalanceAllowanceParams) -> tuple[float, dict[str, float]]:
        """Have the venue re-read a balance and its allowances from the chain, then read them."""
        self.venue.client.update_balance_allowance(params)
        return self._balance_allowances(self.venue.client.get_balance_allowance(params))

    def _balance_allowances(self, answer: Any) -> tuple[float, dict[str, float]]:
        if not isinstance(answer, dict) or "balance" not in answer:
            raise ValueError(f"unexpected balance/allowance answer {answer!r}")
        allowances = {str(k).lower(): float(v) for k, v in (answer.get("allowances") or {}).items()}
        return float(answer["balance"]) / 1e6, allowances

    def _missing(self, allowances: dict[str, float]) -> str:
        """The spenders (every one the venue lists, and the V2 exchange) without an allowance, in words."""
        required = sorted(set(allowances) | {self._exchange})
        return ", ".join(f"{self._spender_names.get(s, 'the contract')} ({s})" for s in required
                         if allowances.get(s, 0) <= 0)
