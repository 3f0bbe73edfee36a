"""The PPO minibatch step in numpy: the loss of `ppo.ppo_loss`, its clipping and MLX's Adam, with analytic
gradients (tested against MLX autograd of `ppo_loss` in tests/test_rl_numpy_update.py).

Why: on Linux the mlx[cpu] wheel multiplies with the reference (unblocked) BLAS and evaluates tanh
element by element; a 64-row update step spent ~60 % of its time in that sgemm alone, so MLX could
not get under ~150 ms per update here, while numpy's OpenBLAS does the same step in well under 1 ms.
The elementwise work between the matmuls runs as compiled loops (`kernels.py`, numba) when numba is
installed, else as the plain numpy passes below, which the tests hold the loops to.
"""

from __future__ import annotations

import math

import numpy as np

from strategies.rl import kernels
from strategies.rl.config import LAYER_NORM_EPS, NUM_ACTIONS, PPOConfig

_LN_EPS = np.float32(LAYER_NORM_EPS)
_ADAM_BETA1, _ADAM_BETA2, _ADAM_EPS = 0.9, 0.999, 1e-8  # mlx.optimizers.Adam's defaults (no bias correction)
_NORMS = ("temporal_encoder.ln1", "temporal_encoder.ln2", "ln1", "ln2")
_TOWERS = ("actor.", "critic.")


def _pair_product(x: np.ndarray, split: int, wa: np.ndarray, wc: np.ndarray) -> np.ndarray:
    """[x[:, :split] @ wa, x[:, split:] @ wc] side by side, each written in place (no concatenation pass)."""
    out = np.empty((len(x), wa.shape[1] + wc.shape[1]), dtype=np.float32)
    np.matmul(x[:, :split], wa, out=out[:, : wa.shape[1]])
    np.matmul(x[:, split:], wc, out=out[:, wa.shape[1] :])
    return out


class SideBySide:
    """Actor and critic trained side by side: each layer's activations are one (N, actor + critic) array,
    so every elementwise operation of the forward and backward pass runs once for both networks (a
    64-row step spends its time on numpy's per-call cost, not on arithmetic). Matmuls whose weights
    differ in shape run per network; shared-input ones (the temporal fc1, fc1's feature part) run once.

    Weights and gradients are views into flat vectors laid out tensor by tensor, each actor tensor
    followed by its critic twin, so twins with equal widths read as one stacked array.
    """

    def __init__(self, shapes: dict[str, tuple[int, ...]], config: PPOConfig, fused: bool = True) -> None:
        self.fused = fused and kernels.AVAILABLE  # compiled LayerNorm loops, else plain numpy
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
            kernels.layer_norm_forward(a, bias_in, self.segments[i][2], weight, bias, xhat, inv_std, h)
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
            kernels.layer_norm_tanh_backward(dh, h, xhat, inv_std, split, weight, grad_weight, grad_bias, dx)
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



class NumpyPPO:
    """The PPO minibatch step (`ppo_loss`, global-norm clipping per network, MLX's Adam) on flat float32
    vectors.

    `load` copies the MLX weights in, `weights` gives them back by name, `grad` shows one tensor's gradient.
    """

    def __init__(self, shapes: dict[str, tuple[int, ...]], config: PPOConfig, fused: bool = True) -> None:
        self.config = config
        self.net = SideBySide(shapes, config, fused)
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
            kernels.ppo_loss(
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
        """kernels.ppo_loss in numpy: d loss / d out into `d_out`, the loss parts returned."""
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
            kernels.clip_and_adam(
                self.net.params, self.net.grads, self.m, self.v, self.net.actor_mask, self._lr_m,
                self.config.max_grad_norm, _ADAM_BETA1, _ADAM_BETA2, _ADAM_EPS,
            )  # fmt: skip
        else:
            self._clip_and_apply_numpy()
        self.net.refresh()

    def _clip_and_apply_numpy(self) -> None:
        """kernels.clip_and_adam in numpy passes."""
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

