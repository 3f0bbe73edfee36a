"""Credentials for live trading, read from the environment only (never flags, never logged).

Variables:
- `POLYMARKET_PRIVATE_KEY` (required): the signer's 32-byte hex key (the EOA that owns the wallet).
- `POLYMARKET_SIGNATURE_TYPE` (required): 1 = email/Magic proxy wallet, 2 = browser-wallet Safe.
  0 (plain EOA) is refused: CLOB V2 rejects EOA makers with `maker address not allowed, please use the
  deposit wallet flow`. 3 (deposit wallet, POLY_1271) is refused too: py-clob-client-v2 1.2.1 signs its
  orders with the wallet as signer but can only obtain API keys bound to the signing EOA, and the venue
  refuses every such order with `the order signer address has to be the address of the API KEY`
  (py-clob-client-v2 issues #58, #70, #91, open).
- `POLYMARKET_FUNDER` (required): the wallet that holds the pUSD and shares (the profile address on
  polymarket.com); a wrong funder or signature type is the usual cause of `invalid signature`.
- `POLYMARKET_API_KEY`, `POLYMARKET_API_SECRET`, `POLYMARKET_API_PASSPHRASE` (optional, all or none):
  L2 API credentials; when absent they are created or derived from the key at start-up.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from eth_account import Account

ENV_PRIVATE_KEY = "POLYMARKET_PRIVATE_KEY"
ENV_FUNDER = "POLYMARKET_FUNDER"
ENV_SIGNATURE_TYPE = "POLYMARKET_SIGNATURE_TYPE"
ENV_API_KEY = "POLYMARKET_API_KEY"
ENV_API_SECRET = "POLYMARKET_API_SECRET"
ENV_API_PASSPHRASE = "POLYMARKET_API_PASSPHRASE"

SIGNATURE_TYPES = {1: "POLY_PROXY", 2: "POLY_GNOSIS_SAFE"}
_KEY_RE = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")
_ADDRESS_RE = re.compile(r"^0x[0-9a-fA-F]{40}$")


class LiveBrokerError(Exception):
    """A one-sentence problem the CLI can print as is (configuration, credentials, venue refusal)."""

    one_sentence = True  # run.py prints it without the exception's type: it is written for the user


class LiveBrokerFatal(LiveBrokerError):
    """The venue refused the run's identity (401, invalid signature): retrying cannot fix it."""


@dataclass(frozen=True, slots=True)
class ApiCredentials:
    api_key: str
    api_secret: str = field(repr=False)
    api_passphrase: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class LiveCredentials:
    private_key: str = field(repr=False)
    address: str  # the signer's address, derived from the key
    funder: str
    signature_type: int
    api: ApiCredentials | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LiveCredentials:
        """Read and validate the POLYMARKET_* variables; raise LiveBrokerError naming what is wrong."""
        env = os.environ if environ is None else environ
        key = env.get(ENV_PRIVATE_KEY, "").strip()
        if not key:
            raise LiveBrokerError(f"{ENV_PRIVATE_KEY} is not set; live trading needs the signer's private key.")
        if not _KEY_RE.match(key):
            raise LiveBrokerError(f"{ENV_PRIVATE_KEY} is not a 32-byte hex private key.")
        try:
            address = Account.from_key(key).address
        except (ValueError, TypeError):
            # `from None`: the library's message could quote the key
            raise LiveBrokerError(f"{ENV_PRIVATE_KEY} is not a valid secp256k1 private key.") from None
        sig_type = _signature_type(env.get(ENV_SIGNATURE_TYPE, "").strip())
        funder = env.get(ENV_FUNDER, "").strip()
        if not _ADDRESS_RE.match(funder):
            raise LiveBrokerError(
                f"{ENV_FUNDER} must be the 0x-prefixed 40-hex address of the wallet holding the funds "
                "(the profile address on polymarket.com)."
            )
        return cls(key if key.startswith("0x") else "0x" + key, address, funder, sig_type, _api_credentials(env))

    def __repr__(self) -> str:
        return (
            f"LiveCredentials(address={self.address}, funder={self.funder}, "
            f"signature_type={self.signature_type}, api_key={'set' if self.api else 'derive'})"
        )


def _signature_type(raw: str) -> int:
    if raw == "0":
        raise LiveBrokerError(
            f"{ENV_SIGNATURE_TYPE}=0 (plain EOA) is rejected by CLOB V2 with 'maker address not allowed, "
            f"please use the deposit wallet flow'; use 1 (email/Magic proxy) or 2 (browser-wallet Safe) with "
            f"{ENV_FUNDER} set to that wallet."
        )
    if raw == "3":
        raise LiveBrokerError(
            f"{ENV_SIGNATURE_TYPE}=3 (deposit wallet) cannot trade through py-clob-client-v2, which obtains API keys "
            "only for the signing key while the venue wants the deposit wallet's (README, 'Live orders'); use a proxy "
            "(1) or Safe (2) wallet."
        )
    if raw not in {str(k) for k in SIGNATURE_TYPES}:
        raise LiveBrokerError(f"{ENV_SIGNATURE_TYPE} must be 1 (email/Magic proxy) or 2 (browser-wallet Safe).")
    return int(raw)


def _api_credentials(env: Mapping[str, str]) -> ApiCredentials | None:
    values = [env.get(name, "").strip() for name in (ENV_API_KEY, ENV_API_SECRET, ENV_API_PASSPHRASE)]
    if not any(values):
        return None
    if not all(values):
        raise LiveBrokerError(
            f"set all of {ENV_API_KEY}, {ENV_API_SECRET}, {ENV_API_PASSPHRASE} or none of them "
            "(then they are derived from the private key)."
        )
    try:
        base64.urlsafe_b64decode(values[1])
    except (binascii.Error, ValueError):
        raise LiveBrokerError(f"{ENV_API_SECRET} is not URL-safe base64 as the CLOB issues it.") from None
    return ApiCredentials(*values)
