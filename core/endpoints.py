"""Venue base URLs, read from the UPDOWN_* environment variables and defaulting to the real venues.

Each value is a base URL; clients append the venue's own paths exactly as they would to the default,
so the same clients run against the real venues, a proxy, or the simulator's loopback servers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

# field name -> (environment variable, default base URL)
ENDPOINT_VARIABLES: dict[str, tuple[str, str]] = {
    "gamma": ("UPDOWN_GAMMA_URL", "https://gamma-api.polymarket.com"),
    "clob": ("UPDOWN_CLOB_URL", "https://clob.polymarket.com"),
    "clob_ws": ("UPDOWN_CLOB_WS_URL", "wss://ws-subscriptions-clob.polymarket.com"),
    "rtds_ws": ("UPDOWN_RTDS_WS_URL", "wss://ws-live-data.polymarket.com"),
    "binance_futures_ws": ("UPDOWN_BINANCE_FUTURES_WS_URL", "wss://fstream.binance.com"),
    "binance_futures_rest": ("UPDOWN_BINANCE_FUTURES_REST_URL", "https://fapi.binance.com"),
    "binance_spot_ws": ("UPDOWN_BINANCE_SPOT_WS_URL", "wss://stream.binance.com:9443"),
}


@dataclass(frozen=True, slots=True)
class Endpoints:
    """The seven base URLs the live clients use (no trailing slash)."""

    gamma: str = ENDPOINT_VARIABLES["gamma"][1]
    clob: str = ENDPOINT_VARIABLES["clob"][1]
    clob_ws: str = ENDPOINT_VARIABLES["clob_ws"][1]
    rtds_ws: str = ENDPOINT_VARIABLES["rtds_ws"][1]
    binance_futures_ws: str = ENDPOINT_VARIABLES["binance_futures_ws"][1]
    binance_futures_rest: str = ENDPOINT_VARIABLES["binance_futures_rest"][1]
    binance_spot_ws: str = ENDPOINT_VARIABLES["binance_spot_ws"][1]

    def __post_init__(self) -> None:
        # a trailing slash would double up when the client appends "/ws/market" and the like
        for f in fields(self):
            object.__setattr__(self, f.name, getattr(self, f.name).rstrip("/"))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Endpoints:
        """Read UPDOWN_* variables (from `environ`, default os.environ); unset or empty ones keep the default."""
        env = os.environ if environ is None else environ
        values = {name: env.get(var) or default for name, (var, default) in ENDPOINT_VARIABLES.items()}
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The UPDOWN_* mapping that reproduces these endpoints (for child processes and tests)."""
        return {var: getattr(self, name) for name, (var, _) in ENDPOINT_VARIABLES.items()}
