"""The 18 features: order, published scales, clamping to [-1, 1]."""

from __future__ import annotations

import numpy as np

from strategies.base import FEATURE_NAMES, NUM_FEATURES, MarketState, features_matrix


def test_there_are_18_features_in_the_published_groups() -> None:
    assert NUM_FEATURES == 18
    assert FEATURE_NAMES[:3] == ("returns_1m", "returns_5m", "returns_10m")
    assert FEATURE_NAMES[12:16] == ("has_position", "position_side", "position_pnl", "time_remaining")
    assert FEATURE_NAMES[16:] == ("vol_regime", "trend_regime")


def test_features_use_the_published_scales() -> None:
    s = MarketState(
        returns_1m=0.004, returns_5m=-0.006, returns_10m=0.01,
        order_book_imbalance_l1=0.25, order_book_imbalance_l5=-0.5,
        trade_flow_imbalance=0.3, cvd_acceleration=0.02,
        prob=0.4, spread=0.01, trade_intensity=4.0, large_trade_flag=1.0,
        vol_5m=0.01, vol_expansion=0.5,
        has_position=1.0, position_side=-1.0, position_pnl=10.0, time_remaining=0.25,
        vol_regime=1.0, trend_regime=0.0,
    )
    f = s.to_features()
    assert f.dtype == np.float32 and f.shape == (18,)
    expected = [0.2, -0.3, 0.5, 0.25, -0.5, 0.3, 0.2, 0.5, 0.4, 1.0, 0.2, 0.5, 1.0, -1.0, 0.2, 0.25, 1.0, 0.0]
    np.testing.assert_allclose(f, expected, rtol=1e-6, atol=1e-7)


def test_features_are_clamped_and_finite() -> None:
    s = MarketState(returns_1m=1.0, returns_5m=-1.0, trade_intensity=1e6, position_pnl=float("nan"),
                    cvd_acceleration=float("inf"), prob=0.001, spread=0.5)
    f = s.to_features()
    assert np.all(np.isfinite(f))
    assert f.max() <= 1.0 and f.min() >= -1.0
    assert f[0] == 1.0 and f[1] == -1.0 and f[7] == 1.0 and f[14] == 0.0


def test_features_matrix_stacks_markets() -> None:
    m = features_matrix([MarketState(time_remaining=1.0), MarketState(time_remaining=0.5)])
    assert m.shape == (2, 18)
    assert m[1, 15] == np.float32(0.5)
    assert features_matrix([]).shape == (0, 18)
