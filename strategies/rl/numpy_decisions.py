"""The numpy copy of both networks that `act_batch` decides with (sub-100 µs for a few markets).

Equal to the MLX networks within 1e-6; rebuilt from the MLX weights after every update and load.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from strategies.rl.config import LAYER_NORM_EPS

_LN_EPS = np.float32(LAYER_NORM_EPS)


def _block_diagonal(*blocks: np.ndarray) -> np.ndarray:
    out = np.zeros((sum(b.shape[0] for b in blocks), sum(b.shape[1] for b in blocks)), dtype=np.float32)
    row = col = 0
    for block in blocks:
        out[row : row + block.shape[0], col : col + block.shape[1]] = block
        row, col = row + block.shape[0], col + block.shape[1]
    return out


@lru_cache(maxsize=16)
def _segment_average(first: int, second: int) -> np.ndarray:
    """(first + second) square matrix: x @ it puts each unit's segment mean in place (read-only, shared)."""
    out = _block_diagonal(np.full((first, first), 1.0 / first), np.full((second, second), 1.0 / second))
    out.flags.writeable = False
    return out


class DecisionNetwork:
    """Actor and critic side by side as one numpy network, for sub-100 µs decisions of a few markets.

    Each layer is one matmul with block weights ([actor | critic] columns), so one call serves both
    towers; LayerNorm's mean subtraction is folded into those weights (x W C + b C, C = I - segment
    mean), which holds until the next update rebuilds this. Output columns: 3 logits, then the value.
    """

    def __init__(self, params: dict[str, np.ndarray], input_dim: int) -> None:
        def centered(tower: str, name: str) -> tuple[np.ndarray, np.ndarray]:
            """(W^T, b) of a layer followed by a LayerNorm, each output's share of the mean removed."""
            weight = params[f"{tower}.{name}.weight"].T.astype(np.float64)
            bias = params[f"{tower}.{name}.bias"].astype(np.float64)
            return weight - weight.mean(axis=1, keepdims=True), bias - bias.mean()

        def pair(name: str) -> np.ndarray:
            return np.concatenate([params[f"{tower}.{name}"] for tower in ("actor", "critic")])

        (t1a, t1ba), (t1c, t1bc) = (centered(tower, "temporal_encoder.fc1") for tower in ("actor", "critic"))
        (t2a, t2ba), (t2c, t2bc) = (centered(tower, "temporal_encoder.fc2") for tower in ("actor", "critic"))
        (f1a, f1ba), (f1c, f1bc) = (centered(tower, "fc1") for tower in ("actor", "critic"))
        (f2a, f2ba), (f2c, f2bc) = (centered(tower, "fc2") for tower in ("actor", "critic"))
        # fc1 sees [features, actor temporal, critic temporal]: features feed both, each temporal part its own
        features_part = np.hstack([f1a[:input_dim], f1c[:input_dim]])
        fc1 = np.vstack([features_part, _block_diagonal(f1a[input_dim:], f1c[input_dim:])])
        layers = [
            (np.hstack([t1a, t1c]), np.concatenate([t1ba, t1bc]), "temporal_encoder.ln1"),
            (_block_diagonal(t2a, t2c), np.concatenate([t2ba, t2bc]), "temporal_encoder.ln2"),
            (fc1, np.concatenate([f1ba, f1bc]), "ln1"),
            (_block_diagonal(f2a, f2c), np.concatenate([f2ba, f2bc]), "ln2"),
        ]
        self.layers: list[tuple[np.ndarray, ...]] = []
        for weight, bias, norm in layers:
            half = len(params[f"actor.{norm}.weight"])
            average = _segment_average(half, bias.size - half)
            layer = (weight, bias, average, pair(norm + ".weight"), pair(norm + ".bias"))
            self.layers.append(tuple(np.asarray(a, dtype=np.float32) for a in layer))
        self.out_weight = _block_diagonal(params["actor.fc3.weight"].T, params["critic.fc3.weight"].T)
        self.out_bias = pair("fc3.bias").astype(np.float32)
        self._rows: dict[int, list[np.ndarray]] = {}  # per batch size: the row vectors tiled to full shape

    def _tiled(self, n: int) -> list[np.ndarray]:
        """Bias and LayerNorm vectors repeated for n rows: a same-shape add costs half a broadcasting one."""
        tiled = self._rows.get(n)
        if tiled is None:
            if len(self._rows) >= 16:  # bounded: batch sizes seen are few (the number of live markets)
                self._rows.clear()
            vectors = [v for _, bias, _, w, b in self.layers for v in (bias, w, b)] + [self.out_bias]
            tiled = self._rows[n] = [np.tile(v, (n, 1)) for v in vectors]
        return tiled

    def __call__(self, features: np.ndarray, history_flat: np.ndarray) -> np.ndarray:
        """(N, 4): the actor's 3 logits and the critic's value."""
        tiled = self._tiled(len(features))
        x = history_flat
        for i, (weight, _, average, _, _) in enumerate(self.layers):
            if i == 2:
                x = np.concatenate([features, x], axis=1)
            bias, ln_weight, ln_bias = tiled[3 * i : 3 * i + 3]
            centered = np.dot(x, weight) + bias  # np.dot: less call overhead than @ on 2-D arrays
            std = np.sqrt(np.dot(centered * centered, average) + _LN_EPS)
            x = np.tanh(centered / std * ln_weight + ln_bias)
        return np.dot(x, self.out_weight) + tiled[-1]


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)

