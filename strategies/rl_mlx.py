"""PPO agent in MLX: actor and critic over the 18 features plus a TemporalEncoder of the last 5 states.

Read top to bottom: hyperparameters (`PPOConfig`), networks, the numpy decision network, the numpy PPO
step, the per-market rollout buffer with GAE, then the agent (decisions, reward normalisation, the PPO
update, save/load).

The MLX model holds the weights (save, load, `evaluate`). Decisions run through a numpy copy of both
networks (`_DecisionNetwork`, equal to MLX within 1e-6), and by default the PPO update runs in numpy
too (`_NumpyPPO`: the same loss, clipping and Adam with analytic gradients, tested against MLX autograd),
because on Linux the mlx[cpu] wheel's reference BLAS made each update ~10x slower; `update_backend="mlx"`
keeps the compiled MLX step.

Reward normalisation: running mean/std of the realized (non-zero) rewards only; rewards are scaled by
`reward / (reward_std + 1e-8)` without subtracting the mean, so a HOLD step keeps reward exactly 0.
"""

from __future__ import annotations

import ctypes
import gc
import math
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import lru_cache, partial
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

import persistence
from strategies import ppo_kernels
from strategies.base import (
    FEATURE_SET_IDS,
    FEATURE_SETS,
    NUM_FEATURES,
    Action,
    MarketState,
    Strategy,
    features_matrix,
)

FEATURE_SET = FEATURE_SET_IDS["standard"]  # the published 18 features and scales (Phase 5); bump when they change
NUM_ACTIONS = len(Action)
_ACTIONS = tuple(Action)  # index -> Action without constructing one per decision
MAX_TRACKED_MARKETS = 64  # markets never ended (engine dropped them) are forgotten past this many
_ARCH_FIELDS = ("input_dim", "hidden_size", "critic_hidden_size", "history_len", "temporal_dim", "temporal_hidden")


@dataclass(frozen=True)
class PPOConfig:
    """PPO hyperparameters and network sizes; defaults are the published Phase 5 values."""

    actor_lr: float = 1e-4
    """Adam learning rate of the actor (policy) network."""
    critic_lr: float = 3e-4
    """Adam learning rate of the critic (value) network."""
    gamma: float = 0.95
    """Discount factor per decision step."""
    gae_lambda: float = 0.95
    """GAE lambda: 0 = one-step TD advantages, 1 = Monte Carlo."""
    clip_eps: float = 0.2
    """PPO clipping range of the probability ratio."""
    entropy_coef: float = 0.03
    """Weight of the entropy bonus in the loss."""
    value_coef: float = 0.5
    """Weight of the value (MSE) loss in the loss."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clip, applied to actor and critic gradients separately."""
    buffer_size: int = 256
    """Ready transitions that trigger one PPO update."""
    batch_size: int = 64
    """Minibatch size within an update."""
    n_epochs: int = 10
    """Passes over the buffer per update."""
    target_kl: float = 0.02
    """KL target: epochs stop early once an epoch's mean approx-KL exceeds kl_stop_factor x this."""
    kl_stop_factor: float = 1.5
    """Multiple of target_kl that stops the remaining epochs of an update."""
    history_len: int = 5
    """States the TemporalEncoder sees (the current one included), oldest first."""
    temporal_dim: int = 32
    """Output width of the TemporalEncoder."""
    temporal_hidden: int = 64
    """Hidden width of the TemporalEncoder."""
    input_dim: int = NUM_FEATURES
    """Features per state: 18 for the standard set, 25 for the extended one (see `config_for_features`)."""
    feature_set: str = "standard"
    """Which features the agent sees: "standard" (the published 18) or "extended" (+ quotes vs the index)."""
    hidden_size: int = 64
    """Hidden width of the actor."""
    critic_hidden_size: int = 96
    """Hidden width of the critic."""
    update_backend: str = "numpy"
    """Who runs the PPO update: "numpy" (analytic gradients, ~15x faster on a Linux CPU) or "mlx" (compiled
    autograd step, the reference the numpy one is tested against). Same loss, clipping and Adam."""


def config_for_features(feature_set: str, base: PPOConfig | None = None) -> PPOConfig:
    """`base` (default PPOConfig()) with the feature set and the input width it implies."""
    if feature_set not in FEATURE_SETS:
        raise ValueError(f"unknown feature set {feature_set!r}; choose one of {', '.join(FEATURE_SETS)}")
    return replace(base or PPOConfig(), feature_set=feature_set, input_dim=len(FEATURE_SETS[feature_set]))


# ---------------------------------------------------------------------------------------------------
# Networks


class TemporalEncoder(nn.Module):
    """Flattened history (history_len x input_dim) -> hidden -> LN -> tanh -> temporal_dim -> LN -> tanh."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden)
        self.ln1 = nn.LayerNorm(hidden)
        self.fc2 = nn.Linear(hidden, out_dim)
        self.ln2 = nn.LayerNorm(out_dim)

    def __call__(self, history_flat: mx.array) -> mx.array:
        x = mx.tanh(self.ln1(self.fc1(history_flat)))
        return mx.tanh(self.ln2(self.fc2(x)))


class TemporalMLP(nn.Module):
    """[features, TemporalEncoder(history)] -> hidden -> LN -> tanh -> hidden -> LN -> tanh -> out.

    The actor (out = 3 logits) and the critic (out = 1 value) are each one of these, with their own encoder.
    """

    def __init__(self, config: PPOConfig, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.temporal_encoder = TemporalEncoder(
            config.history_len * config.input_dim, config.temporal_hidden, config.temporal_dim
        )
        self.fc1 = nn.Linear(config.input_dim + config.temporal_dim, hidden)
        self.ln1 = nn.LayerNorm(hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.ln2 = nn.LayerNorm(hidden)
        self.fc3 = nn.Linear(hidden, out_dim)

    def __call__(self, features: mx.array, history_flat: mx.array) -> mx.array:
        x = mx.concatenate([features, self.temporal_encoder(history_flat)], axis=-1)
        x = mx.tanh(self.ln1(self.fc1(x)))
        x = mx.tanh(self.ln2(self.fc2(x)))
        return self.fc3(x)


class ActorCritic(nn.Module):
    """Holds both networks so their parameters flatten to the published names (`actor.fc1.weight`, ...)."""

    def __init__(self, config: PPOConfig) -> None:
        super().__init__()
        self.actor = TemporalMLP(config, config.hidden_size, NUM_ACTIONS)
        self.critic = TemporalMLP(config, config.critic_hidden_size, 1)


_LN_EPS = np.float32(1e-5)  # mlx.nn.LayerNorm's default


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


class _DecisionNetwork:
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


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# ---------------------------------------------------------------------------------------------------
# The PPO minibatch step in numpy: the same loss, clipping and Adam as the MLX step, analytic gradients.
# Why: on Linux the mlx[cpu] wheel multiplies with the reference (unblocked) BLAS and evaluates tanh
# element by element; a 64-row update step spent ~60 % of its time in that sgemm alone, so MLX could
# not get under ~150 ms per update here, while numpy's OpenBLAS does the same step in well under 1 ms.

_ADAM_BETA1, _ADAM_BETA2, _ADAM_EPS = 0.9, 0.999, 1e-8  # mlx.optimizers.Adam's defaults (no bias correction)
_NORMS = ("temporal_encoder.ln1", "temporal_encoder.ln2", "ln1", "ln2")
_TOWERS = ("actor.", "critic.")


def _pair_product(x: np.ndarray, split: int, wa: np.ndarray, wc: np.ndarray) -> np.ndarray:
    """[x[:, :split] @ wa, x[:, split:] @ wc] side by side, each written in place (no concatenation pass)."""
    out = np.empty((len(x), wa.shape[1] + wc.shape[1]), dtype=np.float32)
    np.matmul(x[:, :split], wa, out=out[:, : wa.shape[1]])
    np.matmul(x[:, split:], wc, out=out[:, wa.shape[1] :])
    return out


class _SideBySide:
    """Actor and critic trained side by side: each layer's activations are one (N, actor + critic) array,
    so every elementwise operation of the forward and backward pass runs once for both networks (a
    64-row step spends its time on numpy's per-call cost, not on arithmetic). Matmuls whose weights
    differ in shape run per network; shared-input ones (the temporal fc1, fc1's feature part) run once.

    Weights and gradients are views into flat vectors laid out tensor by tensor, each actor tensor
    followed by its critic twin, so twins with equal widths read as one stacked array.
    """

    def __init__(self, shapes: dict[str, tuple[int, ...]], config: PPOConfig, fused: bool = True) -> None:
        self.fused = fused and ppo_kernels.AVAILABLE  # compiled LayerNorm loops, else plain numpy
        sizes = {name: math.prod(shape) for name, shape in shapes.items()}
        suffixes = [name.removeprefix("actor.") for name in shapes if name.startswith("actor.")]
        order = [tower + suffix for suffix in suffixes for tower in _TOWERS]
        if sorted(order) != sorted(shapes):
            raise ValueError("actor and critic must have the same tensors")
        self.params = np.zeros(sum(sizes.values()), dtype=np.float32)
        self.grads = np.zeros_like(self.params)
        self.actor_mask = np.zeros_like(self.params)  # 1 on actor entries (per-network clipping and rates)
        self.places: dict[str, slice] = {}
        offset = 0
        for name in order:
            self.places[name] = slice(offset, offset + sizes[name])
            if name.startswith("actor."):
                self.actor_mask[self.places[name]] = 1.0
            offset += sizes[name]
        self.shapes = shapes

        def twins(flat: np.ndarray, suffix: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
            """(actor view, critic view, the two stacked on the first axis when their widths match)."""
            a, c = (flat[self.places[t + suffix]].reshape(shapes[t + suffix]) for t in _TOWERS)
            both = None
            if a.shape[1:] == c.shape[1:]:
                both = flat[self.places["actor." + suffix].start : self.places["critic." + suffix].stop]
                both = both.reshape(a.shape[0] + c.shape[0], *a.shape[1:])
            return a, c, both

        self.p = {suffix: twins(self.params, suffix) for suffix in suffixes}
        self.g = {suffix: twins(self.grads, suffix) for suffix in suffixes}
        self.d = config.input_dim
        # per LayerNorm: S (width, 2) averages each network's units, E (2, width) spreads the result back
        self.segments = []
        for norm in _NORMS:
            wa, wc = (shapes[t + norm + ".weight"][0] for t in _TOWERS)
            s = np.zeros((wa + wc, 2), dtype=np.float32)
            s[:wa, 0], s[wa:, 1] = 1.0 / wa, 1.0 / wc
            e = np.zeros((2, wa + wc), dtype=np.float32)
            e[0, :wa], e[1, wa:] = 1.0, 1.0
            self.segments.append((s, e, wa))
        # per LayerNorm, the stacked (actor + critic) scale, shift and their gradients, looked up once
        self.norms = [
            tuple(views[n + kind][2] for views in (self.p, self.g) for kind in (".weight", ".bias"))
            for n in _NORMS
        ]
        self._cache: list[tuple[np.ndarray, ...]] = []  # per LayerNorm: (xhat, 1/std, tanh output)
        self._inputs: tuple[np.ndarray, ...] = ()
        # The forward pass multiplies by W^T. A transposed view as the second operand costs numpy's BLAS
        # path 30-60 % more than a contiguous matrix on these sizes, so the forward reads contiguous W^T
        # copies, rewritten after every change of `params` (a few microseconds, less than it saves).
        p = self.p
        d = self.d
        sources = {
            "temporal_fc1": p["temporal_encoder.fc1.weight"][2],
            "temporal_fc2_a": p["temporal_encoder.fc2.weight"][0],
            "temporal_fc2_c": p["temporal_encoder.fc2.weight"][1],
            "fc1_features": p["fc1.weight"][2][:, :d],
            "fc1_a": p["fc1.weight"][0][:, d:],
            "fc1_c": p["fc1.weight"][1][:, d:],
            "fc2_a": p["fc2.weight"][0],
            "fc2_c": p["fc2.weight"][1],
            "fc3_a": p["fc3.weight"][0],
            "fc3_c": p["fc3.weight"][1],
        }
        self.t = {key: np.empty(w.T.shape, dtype=np.float32) for key, w in sources.items()}
        self._transposes = [(self.t[key], w.T) for key, w in sources.items()]
        self.refresh()

    def refresh(self) -> None:
        """Rewrite the forward pass's W^T copies from `params` (after a load or an optimizer step)."""
        for target, source in self._transposes:
            np.copyto(target, source)

    def _norm_tanh(self, a: np.ndarray, i: int, bias_in: np.ndarray) -> np.ndarray:
        """tanh(LayerNorm_i(a + bias_in)) for both networks; `a` is a fresh array this may overwrite."""
        if self.fused:
            weight, bias, _, _ = self.norms[i]
            xhat, h = np.empty_like(a), np.empty_like(a)
            inv_std = np.empty((len(a), 2), dtype=np.float32)
            ppo_kernels.layer_norm_forward(a, bias_in, self.segments[i][2], weight, bias, xhat, inv_std, h)
            np.tanh(h, out=h)
            self._cache.append((xhat, inv_std, h))
            return h
        a += bias_in
        s, e, _ = self.segments[i]
        weight, bias, _, _ = self.norms[i]
        dot = np.dot  # less call overhead than @ for these small 2-D products
        centered = a - dot(dot(a, s), e)
        inv_std = dot((dot(centered * centered, s) + _LN_EPS) ** -0.5, e)
        xhat = centered * inv_std
        h = np.tanh(xhat * weight + bias)
        self._cache.append((xhat, inv_std, h))
        return h

    def _norm_tanh_backward(self, dh: np.ndarray, i: int) -> np.ndarray:
        s, e, split = self.segments[i]
        weight, _, grad_weight, grad_bias = self.norms[i]
        xhat, inv_std, h = self._cache[i]
        if self.fused:
            dx = np.empty_like(dh)
            ppo_kernels.layer_norm_tanh_backward(dh, h, xhat, inv_std, split, weight, grad_weight, grad_bias, dx)
            return dx
        dy = dh * (1.0 - h * h)
        dy_xhat = dy * xhat
        ones = np.ones(len(dy), dtype=np.float32)
        np.matmul(ones, dy_xhat, out=grad_weight)  # column sums as a matvec: cheaper than .sum(axis=0)
        np.matmul(ones, dy, out=grad_bias)
        # d xhat = dy * weight; its segment means through (weight x S), so dxhat * xhat is never formed
        ws = weight[:, None] * s
        dot = np.dot
        return inv_std * (dy * weight - dot(dot(dy, ws), e) - xhat * dot(dot(dy_xhat, ws), e))

    def forward(self, features: np.ndarray, history_flat: np.ndarray) -> np.ndarray:
        """(N, 4): the actor's 3 logits, then the critic's value."""
        p, t = self.p, self.t
        self._cache = []
        h1 = self._norm_tanh(np.dot(history_flat, t["temporal_fc1"]), 0, p["temporal_encoder.fc1.bias"][2])
        ha = self.segments[0][2]
        a = _pair_product(h1, ha, t["temporal_fc2_a"], t["temporal_fc2_c"])
        z = self._norm_tanh(a, 1, p["temporal_encoder.fc2.bias"][2])
        ta = self.segments[1][2]
        a = _pair_product(z, ta, t["fc1_a"], t["fc1_c"])
        a += np.dot(features, t["fc1_features"])
        h3 = self._norm_tanh(a, 2, p["fc1.bias"][2])
        fa = self.segments[2][2]
        h4 = self._norm_tanh(_pair_product(h3, fa, t["fc2_a"], t["fc2_c"]), 3, p["fc2.bias"][2])
        self._inputs = (history_flat, h1, features, z, h3, h4)
        out = _pair_product(h4, fa, t["fc3_a"], t["fc3_c"])
        out += p["fc3.bias"][2]
        return out

    def backward(self, d_out: np.ndarray) -> None:
        """Write d loss / d parameter into `grads`, given d loss / d output of the last forward."""
        p, g, d = self.p, self.g, self.d
        history_flat, h1, features, z, h3, h4 = self._inputs
        ha, ta, fa = (self.segments[i][2] for i in range(3))
        ones = np.ones(len(d_out), dtype=np.float32)
        oa = p["fc3.weight"][0].shape[0]
        # fc3
        np.matmul(d_out[:, :oa].T, h4[:, :fa], out=g["fc3.weight"][0])
        np.matmul(d_out[:, oa:].T, h4[:, fa:], out=g["fc3.weight"][1])
        np.matmul(ones, d_out, out=g["fc3.bias"][2])
        wa, wc, _ = p["fc3.weight"]
        da = self._norm_tanh_backward(_pair_product(d_out, oa, wa, wc), 3)
        # fc2
        np.matmul(da[:, :fa].T, h3[:, :fa], out=g["fc2.weight"][0])
        np.matmul(da[:, fa:].T, h3[:, fa:], out=g["fc2.weight"][1])
        np.matmul(ones, da, out=g["fc2.bias"][2])
        wa, wc, _ = p["fc2.weight"]
        da = self._norm_tanh_backward(_pair_product(da, fa, wa, wc), 2)
        # fc1: features feed both networks, each temporal part only its own
        np.matmul(da.T, features, out=g["fc1.weight"][2][:, :d])
        np.matmul(da[:, :fa].T, z[:, :ta], out=g["fc1.weight"][0][:, d:])
        np.matmul(da[:, fa:].T, z[:, ta:], out=g["fc1.weight"][1][:, d:])
        np.matmul(ones, da, out=g["fc1.bias"][2])
        wa, wc, _ = p["fc1.weight"]
        da = self._norm_tanh_backward(_pair_product(da, fa, wa[:, d:], wc[:, d:]), 1)
        # temporal fc2
        np.matmul(da[:, :ta].T, h1[:, :ha], out=g["temporal_encoder.fc2.weight"][0])
        np.matmul(da[:, ta:].T, h1[:, ha:], out=g["temporal_encoder.fc2.weight"][1])
        np.matmul(ones, da, out=g["temporal_encoder.fc2.bias"][2])
        wa, wc, _ = p["temporal_encoder.fc2.weight"]
        da = self._norm_tanh_backward(_pair_product(da, ta, wa, wc), 0)
        # temporal fc1: one input for both
        np.matmul(da.T, history_flat, out=g["temporal_encoder.fc1.weight"][2])
        np.matmul(ones, da, out=g["temporal_encoder.fc1.bias"][2])


# numpy wheels bundle OpenBLAS under suffixed names; per-thread setting first (OpenBLAS >= 0.3.27)
_OPENBLAS_LOCAL = "openblas_set_num_threads_local"
_OPENBLAS_GLOBAL = [
    ("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
    ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
    ("openblas_set_num_threads", "openblas_get_num_threads"),
]


def _swap_threads(setter: Callable[[int], None], getter: Callable[[], int], threads: int) -> int:
    previous = getter()
    setter(threads)
    return previous


def _find_openblas_threads_setter() -> Callable[[int], int] | None:
    """A function that sets numpy's OpenBLAS thread count and returns the previous one, if numpy has one.

    Prefers the per-thread setting; older OpenBLAS builds only have the process-wide one.
    """
    package = Path(np.__file__).parent
    for path in sorted([*package.parent.glob("numpy.libs/*openblas*"), *package.glob(".dylibs/*openblas*")]):
        try:
            lib = ctypes.CDLL(str(path))
        except OSError:
            continue
        local = getattr(lib, _OPENBLAS_LOCAL, None)
        if local is not None:
            local.argtypes, local.restype = [ctypes.c_int], ctypes.c_int
            return local
        for set_name, get_name in _OPENBLAS_GLOBAL:
            setter, getter = getattr(lib, set_name, None), getattr(lib, get_name, None)
            if setter is not None and getter is not None:
                setter.argtypes, setter.restype, getter.restype = [ctypes.c_int], None, ctypes.c_int

                return partial(_swap_threads, setter, getter)
    return None


_openblas_threads = _find_openblas_threads_setter()


@contextmanager
def _one_blas_thread() -> Iterator[None]:
    """Run the update's matmuls on one OpenBLAS thread: on a shared 2-core machine 64-row products spent
    most of their time waking and syncing a second thread (the update ran up to 10x slower)."""
    if _openblas_threads is None:
        yield
        return
    previous = _openblas_threads(1)
    try:
        yield
    finally:
        _openblas_threads(previous)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside an update: its passes cost a few % of the steps and the
    update creates no reference cycles (the collector runs again right after)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _NumpyPPO:
    """The PPO minibatch step (loss_fn, global-norm clipping per network, MLX's Adam) on flat float32 vectors.

    `load` copies the MLX weights in, `weights` gives them back by name, `grad` shows one tensor's gradient.
    """

    def __init__(self, shapes: dict[str, tuple[int, ...]], config: PPOConfig, fused: bool = True) -> None:
        self.config = config
        self.net = _SideBySide(shapes, config, fused)
        self.m = np.zeros_like(self.net.params)
        self.v = np.zeros_like(self.net.params)
        lr = np.where(self.net.actor_mask == 1.0, config.actor_lr, config.critic_lr)
        self._lr_m = ((1 - _ADAM_BETA1) * lr).astype(np.float32)  # m holds lr x the first moment
        self._scratch = (np.empty_like(self.net.params), np.empty_like(self.net.params))

    @property
    def fused(self) -> bool:
        return self.net.fused

    def load(self, weights: dict[str, np.ndarray]) -> None:
        for name, place in self.net.places.items():
            self.net.params[place] = np.asarray(weights[name], dtype=np.float32).reshape(-1)
        self.net.refresh()

    def weights(self) -> dict[str, np.ndarray]:
        params, shapes = self.net.params, self.net.shapes
        return {name: params[place].reshape(shapes[name]) for name, place in self.net.places.items()}

    def grad(self, name: str) -> np.ndarray:
        return self.net.grads[self.net.places[name]].reshape(self.net.shapes[name])

    def step(
        self,
        features: np.ndarray,
        history: np.ndarray,
        actions: np.ndarray,
        old_log_probs: np.ndarray,
        advantages: np.ndarray,
        returns: np.ndarray,
    ) -> np.ndarray:
        """One clipped, Adam-applied gradient step.

        Returns [policy_loss, value_loss, entropy, approx_kl, clip_fraction] before the step.
        """
        metrics = self.gradients(features, history, actions, old_log_probs, advantages, returns)
        self._clip_and_apply()
        return metrics

    def gradients(
        self,
        features: np.ndarray,
        history: np.ndarray,
        actions: np.ndarray,
        old_log_probs: np.ndarray,
        advantages: np.ndarray,
        returns: np.ndarray,
    ) -> np.ndarray:
        """The loss's gradients into the flat `grads` (unclipped); returns the loss parts as `step` does."""
        out = self.net.forward(features, history)
        d_out = np.empty_like(out)
        if self.fused:
            cfg = self.config
            metrics = np.empty(5)
            ppo_kernels.ppo_loss(
                out, actions, old_log_probs, advantages, returns,
                cfg.clip_eps, cfg.entropy_coef, cfg.value_coef, d_out, metrics,
            )  # fmt: skip
        else:
            metrics = self._loss_numpy(out, actions, old_log_probs, advantages, returns, d_out)
        self.net.backward(d_out)
        return metrics

    def _loss_numpy(
        self,
        out: np.ndarray,
        actions: np.ndarray,
        old_log_probs: np.ndarray,
        advantages: np.ndarray,
        returns: np.ndarray,
        d_out: np.ndarray,
    ) -> np.ndarray:
        """ppo_kernels.ppo_loss in numpy: d loss / d out into `d_out`, the loss parts returned."""
        cfg = self.config
        n = len(actions)
        rows = np.arange(n)
        logits, values = out[:, :NUM_ACTIONS], out[:, NUM_ACTIONS]
        shifted = logits - logits.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        total = exp.sum(axis=1, keepdims=True)
        log_probs_all = shifted - np.log(total)
        probs = exp / total
        log_ratio = log_probs_all[rows, actions] - old_log_probs
        ratio = np.exp(log_ratio)
        excess = ratio - 1
        unclipped = ratio * advantages
        clipped = np.clip(excess, -cfg.clip_eps, cfg.clip_eps, out=excess.copy())
        clipped += 1
        clipped *= advantages
        chosen = unclipped <= clipped  # where the unclipped term is the minimum (and carries the gradient)
        neg_entropy_rows = (probs * log_probs_all).sum(axis=1)
        value_error = values - returns
        # sums here, means once per update: np.mean costs more than the arithmetic on 64 rows
        metrics = np.array(
            [
                -np.where(chosen, unclipped, clipped).sum(),
                np.dot(value_error, value_error),
                -neg_entropy_rows.sum(),
                (excess - log_ratio).sum(),
                np.count_nonzero(np.abs(excess) > cfg.clip_eps),
            ]
        ) / n
        # d loss / d log-prob of the taken action: -advantage x ratio / n where the unclipped term counts
        d_log_prob = unclipped * (chosen * (-1.0 / n))
        # softmax chain rule for the action's log-prob, plus the entropy bonus: dH/dz = -p (log p + H)
        d_logits = (cfg.entropy_coef / n) * (log_probs_all - neg_entropy_rows[:, None])
        d_logits -= d_log_prob[:, None]
        np.multiply(probs, d_logits, out=d_out[:, :NUM_ACTIONS])
        d_out[rows, actions] += d_log_prob
        np.multiply(value_error, 2.0 * cfg.value_coef / n, out=d_out[:, NUM_ACTIONS])
        return metrics

    def _clip_and_apply(self) -> None:
        if self.fused:
            ppo_kernels.clip_and_adam(
                self.net.params, self.net.grads, self.m, self.v, self.net.actor_mask, self._lr_m,
                self.config.max_grad_norm, _ADAM_BETA1, _ADAM_BETA2, _ADAM_EPS,
            )  # fmt: skip
        else:
            self._clip_and_apply_numpy()
        self.net.refresh()

    def _clip_and_apply_numpy(self) -> None:
        """ppo_kernels.clip_and_adam in numpy passes."""
        # every 40k-float temporary is a fresh allocation (and page faults): all passes write into buffers
        g, m, v, actor = self.net.grads, self.m, self.v, self.net.actor_mask
        tmp, tmp2 = self._scratch
        np.multiply(g, g, out=tmp)
        actor_sq = float(np.dot(tmp, actor))
        critic_sq = float(tmp.sum()) - actor_sq
        limit = self.config.max_grad_norm
        actor_scale, critic_scale = (
            min(limit / (math.sqrt(max(sq, 0.0)) + 1e-6), 1.0) for sq in (actor_sq, critic_sq)
        )
        if (actor_scale, critic_scale) != (1.0, 1.0):  # each network by its own global norm
            np.multiply(actor, np.float32(actor_scale - critic_scale), out=tmp2)
            tmp2 += np.float32(critic_scale)
            g *= tmp2
            np.multiply(g, g, out=tmp)
        # Adam as mlx.optimizers.Adam; m is kept multiplied by the learning rate (saves a pass per step)
        m *= _ADAM_BETA1
        np.multiply(self._lr_m, g, out=tmp2)
        m += tmp2
        v *= _ADAM_BETA2
        tmp *= 1 - _ADAM_BETA2
        v += tmp
        np.sqrt(v, out=tmp)
        tmp += _ADAM_EPS
        np.divide(m, tmp, out=tmp)
        self.net.params -= tmp


# ---------------------------------------------------------------------------------------------------
# Rollout buffer and GAE


def gae(
    rewards: np.ndarray, values: np.ndarray, done_last: bool, next_value: float, gamma: float, lam: float
) -> tuple[np.ndarray, np.ndarray]:
    """Advantages and returns of one market's consecutive steps.

    Only the last step can be terminal (`done_last`: bootstrap 0); otherwise it bootstraps from
    `next_value`, the critic's value of that market's next step, whose own advantage is not known yet (0).
    """
    n = len(rewards)
    advantages = np.zeros(n, dtype=np.float64)
    following_value = 0.0 if done_last else next_value
    following_adv = 0.0
    for i in range(n - 1, -1, -1):
        delta = rewards[i] + gamma * following_value - values[i]
        following_adv = delta + gamma * lam * following_adv
        advantages[i] = following_adv
        following_value = values[i]
    return advantages, advantages + np.asarray(values, dtype=np.float64)


@dataclass(slots=True)
class Step:
    """One decision of one market: inputs, sampled action, its log-prob and value, then its reward."""

    features: np.ndarray  # (input_dim,)
    history: np.ndarray  # (history_len, input_dim), oldest first, last row = features
    action: int
    log_prob: float
    value: float
    reward: float = 0.0
    done: bool = False


@dataclass(slots=True)
class RolloutBatch:
    """Ready transitions of all markets, flattened for the update (rewards raw, advantages from scaled)."""

    features: np.ndarray
    history: np.ndarray
    actions: np.ndarray
    log_probs: np.ndarray
    values: np.ndarray
    rewards: np.ndarray
    advantages: np.ndarray
    returns: np.ndarray


@dataclass
class RolloutBuffer:
    """Trajectories kept per market, so GAE never bootstraps one market from another.

    A step is *ready* once its successor in the same market is known (its value bootstraps the
    step), or once it is terminal. A market's newest completed step waits for the next update.
    """

    pending: dict[str, Step] = field(default_factory=dict)  # acted this tick, reward not recorded yet
    open: dict[str, list[Step]] = field(default_factory=dict)  # completed steps of running markets
    closed: list[list[Step]] = field(default_factory=list)  # trajectories of resolved markets
    truncated: list[list[Step]] = field(default_factory=list)  # forgotten markets: last step only bootstraps
    ready: int = 0

    def start(self, market_id: str, step: Step) -> None:
        """A new decision; a previous one that never got its reward is completed with reward 0."""
        if market_id in self.pending:
            self.complete(market_id, 0.0)
        self.pending[market_id] = step

    def complete(self, market_id: str, reward: float) -> bool:
        """Give the pending step its reward; False if the market has no pending step."""
        step = self.pending.pop(market_id, None)
        if step is None:
            return False
        step.reward = reward
        trajectory = self.open.setdefault(market_id, [])
        if trajectory:
            self.ready += 1  # the previous step now has a successor to bootstrap from
        trajectory.append(step)
        return True

    def end(self, market_id: str, reward: float) -> bool:
        """Add the settlement reward to the market's last step and make it terminal; False if it has none."""
        if market_id in self.pending:
            self.complete(market_id, 0.0)
        trajectory = self.open.pop(market_id, None)
        if not trajectory:
            return False
        trajectory[-1].reward += reward
        trajectory[-1].done = True
        self.closed.append(trajectory)
        self.ready += 1
        return True

    def forget(self, market_id: str) -> None:
        """Stop tracking a market that will never end: its ready steps stay, its last step only bootstraps."""
        self.pending.pop(market_id, None)
        trajectory = self.open.pop(market_id, None)
        if trajectory and len(trajectory) >= 2:
            self.truncated.append(trajectory)

    def clear(self) -> None:
        self.pending.clear()
        self.open.clear()
        self.closed.clear()
        self.truncated.clear()
        self.ready = 0

    def take(self, gamma: float, lam: float, reward_scale: float) -> RolloutBatch:
        """Remove and return every ready transition with its GAE advantage (rewards x reward_scale)."""
        segments: list[tuple[list[Step], np.ndarray, np.ndarray]] = []

        def add(steps: list[Step], done_last: bool, next_value: float) -> None:
            rewards = np.array([s.reward for s in steps], dtype=np.float64) * reward_scale
            values = np.array([s.value for s in steps], dtype=np.float64)
            segments.append((steps, *gae(rewards, values, done_last, next_value, gamma, lam)))

        for trajectory in self.closed:
            add(trajectory, True, 0.0)
        for trajectory in self.truncated:
            add(trajectory[:-1], False, trajectory[-1].value)
        for market_id, trajectory in self.open.items():
            if len(trajectory) >= 2:
                add(trajectory[:-1], False, trajectory[-1].value)
                self.open[market_id] = trajectory[-1:]
        self.closed, self.truncated = [], []
        self.ready = 0
        steps = [s for seg in segments for s in seg[0]]
        return RolloutBatch(
            features=np.stack([s.features for s in steps]).astype(np.float32),
            history=np.stack([s.history for s in steps]).astype(np.float32),
            actions=np.array([s.action for s in steps], dtype=np.int32),
            log_probs=np.array([s.log_prob for s in steps], dtype=np.float32),
            values=np.array([s.value for s in steps], dtype=np.float32),
            rewards=np.array([s.reward for s in steps], dtype=np.float64),
            advantages=np.concatenate([seg[1] for seg in segments]).astype(np.float32),
            returns=np.concatenate([seg[2] for seg in segments]).astype(np.float32),
        )


def explained_variance(predicted: np.ndarray, target: np.ndarray) -> float:
    """1 - Var(target - predicted) / Var(target); NaN when the target is constant."""
    var = float(np.var(target))
    return float("nan") if var == 0.0 else 1.0 - float(np.var(target - predicted)) / var


# ---------------------------------------------------------------------------------------------------
# The agent


class RLStrategy(Strategy):
    """PPO agent: batched decisions from a numpy copy of the weights, learning in MLX."""

    name = "rl"

    def __init__(self, config: PPOConfig | None = None, seed: int | None = None) -> None:
        super().__init__()
        self.config = config or PPOConfig()
        if self.config.input_dim != len(FEATURE_SETS.get(self.config.feature_set, ())):
            raise ValueError(
                f"input_dim {self.config.input_dim} does not fit feature set {self.config.feature_set!r}; "
                "build the config with config_for_features"
            )
        if self.config.update_backend not in ("numpy", "mlx"):
            raise ValueError(f"unknown update_backend {self.config.update_backend!r}; choose numpy or mlx")
        if seed is not None:
            mx.random.seed(seed)
        self._rng = np.random.default_rng(seed)
        self.model = ActorCritic(self.config)
        self.actor: TemporalMLP = self.model.actor
        self.critic: TemporalMLP = self.model.critic
        # a near-zero last policy layer starts from an almost uniform policy (exploration)
        self.actor.fc3.weight = self.actor.fc3.weight * 0.01
        mx.eval(self.model.parameters())
        self.reward_mean = 0.0
        self.reward_count = 0
        self._reward_m2 = 0.0  # Welford sum of squared deviations
        self.updates_done = 0
        self.buffer = RolloutBuffer()
        self._history: dict[str, np.ndarray] = {}  # market_id -> (history_len, input_dim) ring, oldest first
        self._metrics: list[dict] = []
        self.load_notes: list[str] = []  # what the last load fell back on, for the console
        self._reset_optimizers()
        self._refresh_numpy()

    # --- reward statistics -------------------------------------------------------------------------

    @property
    def reward_std(self) -> float:
        """Population std of the realized rewards seen; 1.0 until two have been seen."""
        return math.sqrt(self._reward_m2 / self.reward_count) if self.reward_count >= 2 else 1.0

    def _observe_reward(self, reward: float) -> None:
        if reward == 0.0:
            return  # HOLD steps and flat settlements say nothing about the scale of realized PnL
        self.reward_count += 1
        delta = reward - self.reward_mean
        self.reward_mean += delta / self.reward_count
        self._reward_m2 += delta * (reward - self.reward_mean)

    # --- forward passes ----------------------------------------------------------------------------

    def _refresh_numpy(self) -> None:
        params = {k: np.array(v) for k, v in tree_flatten(self.model.parameters())}
        self._decide = _DecisionNetwork(params, self.config.input_dim)

    def evaluate(self, features: np.ndarray, history: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Policy probabilities (N, 3) and values (N,) from the MLX networks.

        features: float32 (N, input_dim); history: float32 (N, history_len, input_dim), oldest first,
        zero rows padding a short history, last row = the current state.
        """
        f = mx.array(np.asarray(features, dtype=np.float32))
        h = mx.array(np.asarray(history, dtype=np.float32).reshape(len(features), -1))
        probs = mx.softmax(self.actor(f, h), axis=-1)
        values = self.critic(f, h).squeeze(-1)
        mx.eval(probs, values)
        return np.array(probs), np.array(values)

    def evaluate_numpy(self, features: np.ndarray, history: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Same as `evaluate` through the numpy copy of the weights (what `act_batch` uses)."""
        h = np.asarray(history, dtype=np.float32).reshape(len(features), -1)
        out = self._decide(features, h)
        return _softmax(out[:, :NUM_ACTIONS]), out[:, NUM_ACTIONS]

    # --- Strategy contract --------------------------------------------------------------------------

    @property
    def tracked_markets(self) -> tuple[str, ...]:
        """Markets whose recent states are held for the TemporalEncoder, longest-tracked first."""
        return tuple(self._history)

    def _push_history(self, market_id: str, row: np.ndarray) -> np.ndarray:
        ring = self._history.get(market_id)
        if ring is None:
            if len(self._history) >= MAX_TRACKED_MARKETS:
                forgotten = next(iter(self._history))  # the longest-tracked market
                del self._history[forgotten]
                self.buffer.forget(forgotten)
            ring = np.zeros((self.config.history_len, self.config.input_dim), dtype=np.float32)
            self._history[market_id] = ring
        ring[:-1] = ring[1:]
        ring[-1] = row
        return ring

    def act_batch(self, states: Sequence[MarketState]) -> list[Action]:
        if not states:
            return []
        n = len(states)
        features = features_matrix(states, self.config.feature_set)
        history = np.stack([self._push_history(s.market_id, features[i]) for i, s in enumerate(states)])
        out = self._decide(features, history.reshape(n, -1))
        if not self.training:
            # the softmax keeps the order of the logits
            return [_ACTIONS[a] for a in out[:, :NUM_ACTIONS].argmax(axis=1).tolist()]
        logits = out[:, :NUM_ACTIONS]
        weights = np.exp(logits - logits.max(axis=1, keepdims=True))
        cumulative = np.cumsum(weights, axis=1)
        # inverse-CDF sampling, one uniform per market, on the unnormalised cumulative weights
        picks = (self._rng.random((n, 1)) * cumulative[:, -1:] > cumulative).sum(axis=1)
        actions = np.minimum(picks, NUM_ACTIONS - 1)
        log_probs = np.log(np.maximum(weights[np.arange(n), actions] / cumulative[:, -1], 1e-12))
        values = out[:, NUM_ACTIONS].tolist()
        for state, f, h, a, log_prob, value in zip(
            states, features, history, actions.tolist(), log_probs.tolist(), values, strict=True
        ):
            self.buffer.start(state.market_id, Step(f, h, a, log_prob, value))
        return [_ACTIONS[a] for a in actions.tolist()]

    def record(self, market_id: str, reward: float) -> None:
        if self.buffer.complete(market_id, reward):
            self._observe_reward(reward)
            self._maybe_update()

    def end_market(self, market_id: str, reward: float) -> None:
        self._history.pop(market_id, None)
        if self.buffer.end(market_id, reward):
            self._observe_reward(reward)
            self._maybe_update()

    def pop_updates(self) -> list[dict]:
        out, self._metrics = self._metrics, []
        return out

    # --- PPO update --------------------------------------------------------------------------------

    def _reset_optimizers(self) -> None:
        """Fresh Adam optimizers (their moments are not checkpointed) and the compiled update step."""
        cfg = self.config
        self.actor_optimizer = optim.Adam(learning_rate=cfg.actor_lr)
        self.critic_optimizer = optim.Adam(learning_rate=cfg.critic_lr)
        self.actor_optimizer.init(self.actor.trainable_parameters())
        self.critic_optimizer.init(self.critic.trainable_parameters())

        def loss_fn(
            model: ActorCritic,
            features: mx.array,
            history: mx.array,
            actions: mx.array,
            old_log_probs: mx.array,
            advantages: mx.array,
            returns: mx.array,
        ) -> tuple[mx.array, mx.array]:
            logits = model.actor(features, history)
            log_probs_all = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
            log_probs = mx.take_along_axis(log_probs_all, actions[:, None], axis=-1).squeeze(-1)
            log_ratio = log_probs - old_log_probs
            ratio = mx.exp(log_ratio)
            # clipped surrogate (PPO paper eq. 7), as a loss to minimise
            surrogate = mx.minimum(ratio * advantages, mx.clip(ratio, 1 - cfg.clip_eps, 1 + cfg.clip_eps) * advantages)
            policy_loss = -surrogate.mean()
            entropy = -(mx.exp(log_probs_all) * log_probs_all).sum(axis=-1).mean()
            value_loss = mx.square(model.critic(features, history).squeeze(-1) - returns).mean()
            loss = policy_loss - cfg.entropy_coef * entropy + cfg.value_coef * value_loss
            approx_kl = ((ratio - 1) - log_ratio).mean()  # the low-variance "k3" estimator of KL(old || new)
            clip_fraction = (mx.abs(ratio - 1) > cfg.clip_eps).astype(mx.float32).mean()
            return loss, mx.stack([policy_loss, value_loss, entropy, approx_kl, clip_fraction])

        self._loss_fn = loss_fn
        loss_and_grad = nn.value_and_grad(self.model, loss_fn)
        state = [self.model.state, self.actor_optimizer.state, self.critic_optimizer.state]

        def train_step(*batch: mx.array) -> mx.array:
            (_, metrics), grads = loss_and_grad(self.model, *batch)
            actor_grads, _ = optim.clip_grad_norm(grads["actor"], cfg.max_grad_norm)
            critic_grads, _ = optim.clip_grad_norm(grads["critic"], cfg.max_grad_norm)
            self.actor_optimizer.update(self.actor, actor_grads)
            self.critic_optimizer.update(self.critic, critic_grads)
            return metrics

        self._train_step = mx.compile(train_step, inputs=state, outputs=state)
        self._numpy_ppo = _NumpyPPO(self.expected_shapes(), cfg)

    def _maybe_update(self) -> None:
        if self.buffer.ready >= self.config.buffer_size:
            self.update()

    def update(self) -> dict:
        """One PPO update on every ready transition; returns (and queues for pop_updates) its metrics."""
        if self.buffer.ready == 0:
            raise ValueError("no ready transitions to update on")
        cfg = self.config
        return self.train_on_batch(self.buffer.take(cfg.gamma, cfg.gae_lambda, 1.0 / (self.reward_std + 1e-8)))

    def _arrays(self, batch: RolloutBatch) -> list[np.ndarray]:
        """Loss inputs; advantages normalised over the whole batch (once, not per minibatch)."""
        n = len(batch.actions)
        advantages = (batch.advantages - batch.advantages.mean()) / (batch.advantages.std() + 1e-8)
        history = batch.history.reshape(n, -1)
        return [batch.features, history, batch.actions, batch.log_probs, advantages, batch.returns]

    def _tensors(self, batch: RolloutBatch) -> list[mx.array]:
        return [mx.array(a) for a in self._arrays(batch)]

    def batch_loss(self, batch: RolloutBatch) -> dict[str, float]:
        """The PPO loss and its parts on `batch` with the current weights (no update)."""
        loss, parts = self._loss_fn(self.model, *self._tensors(batch))
        mx.eval(loss, parts)
        names = ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction")
        return {"loss": float(loss), **{k: float(v) for k, v in zip(names, np.array(parts), strict=True)}}

    def train_on_batch(self, batch: RolloutBatch) -> dict:
        """n_epochs of shuffled minibatch steps on `batch`, stopping early on KL; returns the metrics."""
        cfg = self.config
        sums, steps = self._epochs_mlx(batch) if cfg.update_backend == "mlx" else self._epochs_numpy(batch)
        mean = sums / steps
        self._refresh_numpy()
        self.updates_done += 1
        realized = batch.rewards[batch.rewards != 0]
        metrics = {
            "update_num": self.updates_done,
            "policy_loss": float(mean[0]),
            "value_loss": float(mean[1]),
            "entropy": float(mean[2]),
            "approx_kl": float(mean[3]),
            "clip_fraction": float(mean[4]),
            "explained_variance": explained_variance(batch.values, batch.returns),
            "buffer_avg_reward": float(batch.rewards.mean()),
            # share of the realized (non-zero) rewards in the batch that were gains
            "buffer_win_rate": float((realized > 0).mean()) if len(realized) else 0.0,
        }
        self._metrics.append(metrics)
        return metrics

    def _epochs_mlx(self, batch: RolloutBatch) -> tuple[np.ndarray, int]:
        """The epochs through the compiled MLX step; returns the summed minibatch metrics and the steps."""
        cfg = self.config
        tensors = self._tensors(batch)
        n = len(batch.actions)
        sums = np.zeros(5)
        steps = 0
        for _ in range(cfg.n_epochs):
            order = self._rng.permutation(n)
            epoch = mx.zeros(5)
            epoch_steps = 0
            for start in range(0, n, cfg.batch_size):
                idx = mx.array(order[start : start + cfg.batch_size])
                epoch = epoch + self._train_step(*(t[idx] for t in tensors))
                epoch_steps += 1
            mx.eval(epoch, self.model.parameters())  # one host sync per epoch
            sums, steps = sums + np.array(epoch), steps + epoch_steps
            if float(epoch[3]) / epoch_steps > cfg.kl_stop_factor * cfg.target_kl:
                break  # the policy moved too far from the one that collected the data
        return sums, steps

    def _epochs_numpy(self, batch: RolloutBatch) -> tuple[np.ndarray, int]:
        """The same epochs through the numpy step (same permutations), then the weights back into MLX."""
        cfg = self.config
        trainer = self._numpy_ppo
        trainer.load({k: np.array(v) for k, v in tree_flatten(self.model.parameters())})
        arrays = self._arrays(batch)
        n = len(batch.actions)
        sums = np.zeros(5)
        steps = 0
        with _one_blas_thread(), _gc_paused():
            for _ in range(cfg.n_epochs):
                order = self._rng.permutation(n)
                shuffled = [a[order] for a in arrays]
                epoch = np.zeros(5)
                epoch_steps = 0
                for start in range(0, n, cfg.batch_size):
                    epoch += trainer.step(*(a[start : start + cfg.batch_size] for a in shuffled))
                    epoch_steps += 1
                sums, steps = sums + epoch, steps + epoch_steps
                if epoch[3] / epoch_steps > cfg.kl_stop_factor * cfg.target_kl:
                    break  # the policy moved too far from the one that collected the data
        self.model.update(tree_unflatten([(k, mx.array(v)) for k, v in trainer.weights().items()]))
        mx.eval(self.model.parameters())
        return sums, steps

    # --- persistence ---------------------------------------------------------------------------------

    def weights(self) -> dict[str, np.ndarray]:
        """The 36 tensors under their published names, as float32 numpy arrays."""
        return {k: np.array(v, dtype=np.float32) for k, v in tree_flatten(self.model.parameters())}

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape) for k, v in tree_flatten(self.model.parameters())}

    def checkpoint_stats(self) -> persistence.CheckpointStats:
        cfg = self.config
        return persistence.CheckpointStats(
            reward_mean=float(self.reward_mean),
            reward_std=float(self.reward_std),
            reward_count=int(self.reward_count),
            input_dim=cfg.input_dim,
            hidden_size=cfg.hidden_size,
            critic_hidden_size=cfg.critic_hidden_size,
            history_len=cfg.history_len,
            temporal_dim=cfg.temporal_dim,
            temporal_hidden=cfg.temporal_hidden,
            gamma=float(cfg.gamma),
            buffer_size=cfg.buffer_size,
            updates=self.updates_done,
            feature_set=FEATURE_SET_IDS[cfg.feature_set],
        )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write `path.safetensors` + `path_stats.npz` atomically; CheckpointError if it cannot."""
        persistence.save_checkpoint(path, self.weights(), self.checkpoint_stats())

    def load(self, path: str | os.PathLike[str], allow_fresh_stats: bool = False) -> list[str]:
        """Restore weights and reward statistics; validates everything first, so a failure changes nothing.

        Returns notes on what the loader fell back on (print them); raises CheckpointError.
        """
        checkpoint = persistence.load_checkpoint(path, allow_fresh_stats=allow_fresh_stats)
        self._apply(checkpoint, os.fspath(path))
        self.load_notes = checkpoint.notes
        return checkpoint.notes

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike[str],
        config: PPOConfig | None = None,
        seed: int | None = None,
        allow_fresh_stats: bool = False,
    ) -> RLStrategy:
        """An agent built with the architecture, feature set and gamma the checkpoint's stats record, then
        loaded from it. `config` supplies everything else (learning rates, buffer size, ...); notes are in
        `load_notes`.
        """
        checkpoint = persistence.load_checkpoint(path, allow_fresh_stats=allow_fresh_stats)
        base = config or PPOConfig()
        recorded = {}
        if checkpoint.stats is not None:
            recorded = {k: getattr(checkpoint.stats, k) for k in _ARCH_FIELDS if getattr(checkpoint.stats, k) is not None}
            names = {v: k for k, v in FEATURE_SET_IDS.items()}
            if checkpoint.stats.feature_set in names:  # older stats lack it: the standard set
                recorded["feature_set"] = names[checkpoint.stats.feature_set]
            if checkpoint.stats.gamma is not None:  # resuming keeps the discount the values were learned with
                recorded["gamma"] = float(checkpoint.stats.gamma)
        agent = cls(replace(base, **recorded), seed=seed)
        agent._apply(checkpoint, os.fspath(path))
        agent.load_notes = checkpoint.notes
        return agent

    def _apply(self, checkpoint: persistence.Checkpoint, source: str) -> None:
        persistence.validate_weights(checkpoint.weights, self.expected_shapes(), source)
        stats = checkpoint.stats
        expected = FEATURE_SET_IDS[self.config.feature_set]
        if stats is not None and stats.feature_set not in (None, expected):
            raise persistence.CheckpointError(
                f"{source} was trained on feature set {stats.feature_set}, this agent computes feature set "
                f"{expected} ({self.config.feature_set}); its decisions would be meaningless, so train a new model"
            )
        # everything validated: from here on nothing can fail half-way
        self.model.update(tree_unflatten([(k, mx.array(v)) for k, v in checkpoint.weights.items()]))
        mx.eval(self.model.parameters())
        if stats is None:
            self.reward_mean, self.reward_count, self._reward_m2, self.updates_done = 0.0, 0, 0.0, 0
        else:
            self.reward_mean, self.reward_count = stats.reward_mean, stats.reward_count
            self._reward_m2 = stats.reward_std**2 * stats.reward_count if stats.reward_count >= 2 else 0.0
            self.updates_done = stats.updates
        self.buffer.clear()  # collected with the previous weights
        self._history.clear()
        self._reset_optimizers()
        self._refresh_numpy()


__all__ = [
    "FEATURE_SET",
    "ActorCritic",
    "PPOConfig",
    "RLStrategy",
    "RolloutBatch",
    "RolloutBuffer",
    "Step",
    "TemporalEncoder",
    "TemporalMLP",
    "config_for_features",
    "explained_variance",
    "gae",
]
