"""Fault injection rates for the simulator: `drop=0.01,garbage=0.001,stall=0.001`."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields


@dataclass(slots=True, frozen=True)
class FaultSpec:
    """Per-message probabilities in [0, 1].

    garbage: a malformed copy of a message is injected after it (SimMarket does this, from the seed);
    drop: the server closes the socket; stall: the server pauses a feed for a few seconds.
    """

    drop: float = 0.0
    garbage: float = 0.0
    stall: float = 0.0

    @classmethod
    def parse(cls, text: str) -> FaultSpec:
        """Parse `key=rate` pairs separated by commas; an empty string means no faults."""
        known = [f.name for f in fields(cls)]
        rates: dict[str, float] = {}
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            key, sep, value = (s.strip() for s in part.partition("="))
            if key not in known:
                raise ValueError(f"unknown fault '{key}' in '{text}'; use {', '.join(k + '=RATE' for k in known)}")
            if not sep:
                raise ValueError(f"fault '{key}' has no rate; write it as {key}=RATE with RATE between 0 and 1")
            try:
                rate = float(value)
            except ValueError:
                raise ValueError(f"fault rate '{value}' for '{key}' is not a number; use a value between 0 and 1") from None
            if not (math.isfinite(rate) and 0.0 <= rate <= 1.0):
                raise ValueError(f"fault rate {key}={value} is out of range; use a value between 0 and 1")
            rates[key] = rate
        return cls(**rates)

    def __str__(self) -> str:
        return ",".join(f"{f.name}={getattr(self, f.name):g}" for f in fields(self))
