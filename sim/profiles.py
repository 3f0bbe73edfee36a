"""Simulator profiles: every number of the market model in one place, by name or from a JSON file.

    realistic  the default: the maker quotes the undelayed resolution index with its full variance,
               at or ahead of what the bot's public feeds show; calibrated to real recordings
               (the calibration table of TRAINING_JOURNAL.md H1, lead-lag included)
    lagged     the first calibration: the maker trails the index by 1-8 s. A what-if scenario that
               real data does not support, kept to compare with and to reproduce old figures
    FILE.json  a profile written by `python -m sim.fit` or by hand; fields it leaves out keep the
               realistic values

JSON layout: {"name": ..., "description": ..., "model": {<ModelParams field>: value, ...},
"return_std_15m": {"BTC": 0.0022, ...}}; tuples are written as lists.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from sim.model import ASSET_PARAMS, AssetParams, ModelParams

DEFAULT_PROFILE = "realistic"


class ProfileError(ValueError):
    """A profile that cannot be used; the message is one sentence for the user."""


@dataclass(slots=True, frozen=True)
class SimProfile:
    name: str
    model: ModelParams
    return_std_15m: dict[str, float] = field(default_factory=dict)  # per asset; missing ones keep ASSET_PARAMS
    description: str = ""

    def asset_params(self, asset: str) -> AssetParams:
        base = ASSET_PARAMS[asset]
        std = self.return_std_15m.get(asset)
        return base if std is None else replace(base, return_std_15m=std)

    def to_dict(self) -> dict:
        model = {}
        for f in fields(ModelParams):
            value = getattr(self.model, f.name)
            model[f.name] = list(value) if isinstance(value, tuple) else value
        stds = {a: self.asset_params(a).return_std_15m for a in ASSET_PARAMS}
        return {"name": self.name, "description": self.description, "model": model, "return_std_15m": stds}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: object, where: str = "the profile") -> SimProfile:
        """Fields the data leaves out keep the realistic values; unknown or ill-typed ones are refused."""
        if not isinstance(data, dict):
            raise ProfileError(f"{where} is not a JSON object")
        unknown = sorted(set(data) - {"name", "description", "model", "return_std_15m"})
        if unknown:
            raise ProfileError(f"{where} has unknown key(s) {', '.join(unknown)}")
        base = PROFILES[DEFAULT_PROFILE]
        model_data = data.get("model", {})
        if not isinstance(model_data, dict):
            raise ProfileError(f"{where}: 'model' must be an object of model parameters")
        known = {f.name: f for f in fields(ModelParams)}
        bad = sorted(set(model_data) - set(known))
        if bad:
            raise ProfileError(f"{where}: unknown model parameter(s) {', '.join(bad)}")
        changes = {k: _coerce(k, getattr(base.model, k), v, where) for k, v in model_data.items()}
        stds_data = data.get("return_std_15m", {})
        if not isinstance(stds_data, dict):
            raise ProfileError(f"{where}: 'return_std_15m' must map assets to numbers")
        stds = dict(base.return_std_15m)
        for asset, value in stds_data.items():
            if asset not in ASSET_PARAMS:
                raise ProfileError(f"{where}: unknown asset {asset!r} in return_std_15m")
            stds[asset] = _positive(f"return_std_15m.{asset}", value, where)
        profile = cls(
            name=str(data.get("name", "custom")),
            model=replace(base.model, **changes),
            return_std_15m=stds,
            description=str(data.get("description", "")),
        )
        _check(profile.model, where)
        return profile


def _positive(name: str, value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ProfileError(f"{where}: {name} must be a number above 0, got {value!r}")
    return float(value)


def _coerce(name: str, current: object, value: object, where: str) -> object:
    """`value` in the type of the realistic value of `name` (tuples from lists, ints stay ints)."""
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise ProfileError(f"{where}: {name} must be true or false, got {value!r}")
        return value
    if isinstance(current, tuple):
        ok = isinstance(value, list | tuple) and all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value
        )
        if not ok or (name != "spread_ticks_probs" and len(value) != len(current)):
            raise ProfileError(f"{where}: {name} must be a list of {len(current)} numbers, got {value!r}")
        return tuple(type(current[0])(v) if isinstance(current[0], int) else float(v) for v in value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ProfileError(f"{where}: {name} must be a number, got {value!r}")
    if isinstance(current, int):
        if value != int(value):
            raise ProfileError(f"{where}: {name} must be a whole number, got {value!r}")
        return int(value)
    return float(value)


def _check(m: ModelParams, where: str) -> None:
    """Ranges a model can run with; one sentence naming the first parameter out of range."""
    for name in ("rtds_delay_s", "futures_delay_s", "maker_reaction_s", "lag_range_s"):
        lo, hi = getattr(m, name)
        if not 0 <= lo <= hi:
            raise ProfileError(f"{where}: {name} must be [lo, hi] with 0 <= lo <= hi, got {[lo, hi]}")
    if m.rtds_delay_s[1] >= 1.0 or m.maker_reaction_s[1] >= 1.0:
        raise ProfileError(f"{where}: rtds_delay_s and maker_reaction_s must stay below 1 second")
    probs = m.spread_ticks_probs
    if any(p < 0 for p in probs) or abs(sum(probs) - 1.0) > 1e-6 or len(probs) < 2:
        raise ProfileError(f"{where}: spread_ticks_probs must be probabilities of 0, 1, 2, ... cents summing to 1")
    for name in ("jump_share", "spread_resample_prob", "size_update_prob", "last_trade_prob", "liquidation_prob",
                 "spot_second_trade_prob", "requote_fraction", "block_trade_prob", "liquidation_sell_prob",
                 "liquidation_slippage", "last_trade_up_prob", "last_trade_buy_prob"):
        if not 0.0 <= getattr(m, name) <= 1.0:
            raise ProfileError(f"{where}: {name} must lie between 0 and 1, got {getattr(m, name)}")
    if not all(0.0 <= p <= 1.0 for p in m.futures_extra_trade_probs):
        raise ProfileError(f"{where}: futures_extra_trade_probs must be probabilities")
    for name in ("vol_half_life_s", "jump_rate_per_s", "season_decay_s", "basis_half_life_s",
                 "basis_fast_half_life_s", "quote_noise_half_life_s", "maker_vol_scale", "size_median", "size_sigma",
                 "depth_size_median", "liquidation_size_median", "last_trade_size_median"):
        if not getattr(m, name) > 0:
            raise ProfileError(f"{where}: {name} must be above 0, got {getattr(m, name)}")
    for name in ("vol_of_vol", "season_boost", "basis_std", "basis_fast_std", "futures_noise", "spot_noise",
                 "quote_noise_std", "requote_threshold", "catch_up_gap", "flow_tilt", "final_lag_per_s",
                 "trade_size_sigma", "block_trade_scale", "depth_size_sigma", "funding_basis_share", "funding_rate_cap",
                 "last_trade_size_sigma"):
        if getattr(m, name) < 0:
            raise ProfileError(f"{where}: {name} must not be negative, got {getattr(m, name)}")
    if m.second_return_df != 0.0 and m.second_return_df <= 2.0:
        raise ProfileError(f"{where}: second_return_df must be 0 (normal moves) or above 2, got {m.second_return_df}")
    if m.flow_horizon_s < 1 or m.book_levels < 1 or m.kline_every_s < 1 or m.flow_offset_s < -600:
        raise ProfileError(
            f"{where}: flow_horizon_s, book_levels and kline_every_s must be at least 1, flow_offset_s above -600"
        )


LAGGED = SimProfile(
    name="lagged",
    model=ModelParams(),
    description="what-if, not real: the maker trails the index by 1-8 s (the first calibration's market)",
)

REALISTIC = SimProfile(
    name="realistic",
    model=replace(
        ModelParams(),
        # the index: variance front-loaded in the window, fat-tailed seconds, jumps; 15-min kurtosis ~11
        vol_of_vol=0.5,
        vol_half_life_s=1800.0,
        jump_share=0.6,
        jump_rate_per_s=1.0e-4,
        season_boost=1.5,
        season_decay_s=250.0,
        second_return_df=4.0,
        # the bot's feeds: Binance trails the index by 0.2-0.8 s with a fast-wandering basis
        futures_delay_s=(0.2, 0.8),
        basis_fast_std=6.0e-5,
        basis_fast_half_life_s=30.0,
        flow_offset_s=-5,  # taker flow follows the last seconds' move, it does not foretell the next
        # the maker: the undelayed index, jumps priced, within 0.05-0.4 s, small noise
        lag_range_s=(0, 0),
        maker_reaction_s=(0.05, 0.4),
        maker_prices_jumps=True,
        requote_threshold=0.005,
        requote_fraction=1.0,
        quote_noise_std=0.03,
        quote_noise_half_life_s=20.0,
    ),
    description="the default: quotes at or ahead of the public feeds, calibrated to real recordings",
)

PROFILES: dict[str, SimProfile] = {"realistic": REALISTIC, "lagged": LAGGED}


def load_profile(spec: str | None) -> SimProfile:
    """A named profile, or a JSON profile file; ProfileError (one sentence) when it cannot be used."""
    if spec is None or spec == "":
        return PROFILES[DEFAULT_PROFILE]
    if spec in PROFILES:
        return PROFILES[spec]
    path = Path(spec)
    if not path.exists():
        raise ProfileError(
            f"--sim-profile {spec}: no such profile or file; use {', '.join(PROFILES)} or a JSON file from sim.fit"
        )
    if path.is_dir():
        raise ProfileError(f"--sim-profile {spec} is a folder; give a JSON profile file")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"--sim-profile {spec} cannot be read: {getattr(exc, 'strerror', None) or exc}") from None
    except json.JSONDecodeError as exc:
        raise ProfileError(f"--sim-profile {spec} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    return SimProfile.from_dict(data, where=f"--sim-profile {spec}")
