"""Fused loops for the numpy PPO step (numba): the elementwise work between the matmuls.

Why: a 64-row minibatch step spent most of its time in numpy's per-call cost, not in arithmetic: each
LayerNorm took ~12 array calls forward and ~16 backward, the loss ~40 small ones, Adam ~14 passes over
the 39k parameters. Each kernel below does one of those in a single compiled pass; the matmuls stay in
numpy's OpenBLAS and tanh stays numpy's SIMD ufunc (numba's scalar tanh is slower).

Layout: activations are (N, actor width + critic width) side by side (see `SideBySide` in numpy_update.py);
`split` is the actor's width, so each row holds two LayerNorm segments, [0, split) and [split, width).
`AVAILABLE` is False when numba cannot be imported: the caller then runs its plain numpy path, which
the tests also use as the reference these kernels must match.
"""

from __future__ import annotations

import math

import numpy as np

from strategies.rl.config import LAYER_NORM_EPS

try:
    import numba
except ImportError:  # pragma: no cover - depends on the platform's wheels
    numba = None

AVAILABLE = numba is not None

_F32 = np.float32
_LN_EPS = _F32(LAYER_NORM_EPS)


def _jit(function=None, *, fastmath: bool = True):  # type: ignore[no-untyped-def]
    """Compiled on first call and cached on disk; fastmath's reassociation lets the row sums vectorise."""
    if function is None:
        return lambda f: _jit(f, fastmath=fastmath)
    if numba is None:
        return function
    return numba.njit(cache=True, fastmath=fastmath, nogil=True, error_model="numpy")(function)


@_jit
def _norm_segment_forward(
    a: np.ndarray,
    bias_in: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray,
    xhat: np.ndarray,
    out: np.ndarray,
    inv_std: np.ndarray,
    lo: int,
    hi: int,
    column: int,
) -> None:
    # loops run over 1-D row slices: numba then vectorises them (2-D indexing kept them scalar, ~5x slower)
    count = _F32(hi - lo)
    shift, scale_w, shift_b = bias_in[lo:hi], weight[lo:hi], bias[lo:hi]
    for r in range(a.shape[0]):
        row = a[r, lo:hi]
        # the sums only read (a store in the loop would make the vectorised order depend on addresses)
        total = _F32(0.0)
        for j in range(row.size):
            total += row[j] + shift[j]
        mean = total / count
        squares = _F32(0.0)
        for j in range(row.size):
            c = row[j] + shift[j] - mean
            squares += c * c
        scale = _F32(1.0) / np.sqrt(squares / count + _LN_EPS)
        inv_std[r, column] = scale
        xrow, orow = xhat[r, lo:hi], out[r, lo:hi]
        for j in range(row.size):
            x = (row[j] + shift[j] - mean) * scale
            xrow[j] = x
            orow[j] = x * scale_w[j] + shift_b[j]


@_jit
def layer_norm_forward(
    a: np.ndarray,
    bias_in: np.ndarray,
    split: int,
    weight: np.ndarray,
    bias: np.ndarray,
    xhat: np.ndarray,
    inv_std: np.ndarray,
    out: np.ndarray,
) -> None:
    """out = LayerNorm(a + bias_in) * weight + bias per segment (tanh is applied by the caller).

    Writes xhat (normalised input, N x W) and inv_std (1 / std per row and segment, N x 2) for backward.
    """
    _norm_segment_forward(a, bias_in, weight, bias, xhat, out, inv_std, 0, split, 0)
    _norm_segment_forward(a, bias_in, weight, bias, xhat, out, inv_std, split, a.shape[1], 1)


@_jit
def _norm_segment_backward(
    dh: np.ndarray,
    h: np.ndarray,
    xhat: np.ndarray,
    inv_std: np.ndarray,
    weight: np.ndarray,
    grad_weight: np.ndarray,
    grad_bias: np.ndarray,
    dx: np.ndarray,
    lo: int,
    hi: int,
    column: int,
) -> None:
    count = _F32(hi - lo)
    scale_w, g_w, g_b = weight[lo:hi], grad_weight[lo:hi], grad_bias[lo:hi]
    g_w[:] = 0.0
    g_b[:] = 0.0
    for r in range(dh.shape[0]):
        d_row, h_row, x_row, dx_row = dh[r, lo:hi], h[r, lo:hi], xhat[r, lo:hi], dx[r, lo:hi]
        sum_d = _F32(0.0)
        sum_dx = _F32(0.0)
        for j in range(d_row.size):
            y = h_row[j]
            dy = d_row[j] * (_F32(1.0) - y * y)
            g_b[j] += dy
            g_w[j] += dy * x_row[j]
            d = dy * scale_w[j]
            sum_d += d
            sum_dx += d * x_row[j]
        mean_d = sum_d / count
        mean_dx = sum_dx / count
        scale = inv_std[r, column]
        for j in range(d_row.size):
            y = h_row[j]
            d = d_row[j] * (_F32(1.0) - y * y) * scale_w[j]
            dx_row[j] = scale * (d - mean_d - x_row[j] * mean_dx)


@_jit
def layer_norm_tanh_backward(
    dh: np.ndarray,
    h: np.ndarray,
    xhat: np.ndarray,
    inv_std: np.ndarray,
    split: int,
    weight: np.ndarray,
    grad_weight: np.ndarray,
    grad_bias: np.ndarray,
    dx: np.ndarray,
) -> None:
    """Backward through h = tanh(LayerNorm(x) * weight + bias), per segment.

    Writes d loss / d x into dx and the LayerNorm scale and shift gradients (summed over rows).
    """
    _norm_segment_backward(dh, h, xhat, inv_std, weight, grad_weight, grad_bias, dx, 0, split, 0)
    _norm_segment_backward(dh, h, xhat, inv_std, weight, grad_weight, grad_bias, dx, split, dh.shape[1], 1)


@_jit(fastmath=False)  # 64 rows: nothing to vectorise, and the clip comparisons stay exact
def ppo_loss(
    out: np.ndarray,
    actions: np.ndarray,
    old_log_probs: np.ndarray,
    advantages: np.ndarray,
    returns: np.ndarray,
    clip_eps: float,
    entropy_coef: float,
    value_coef: float,
    d_out: np.ndarray,
    metrics: np.ndarray,
) -> None:
    """The PPO loss of rows of (3 logits, value) and its gradient d_out, in one pass.

    loss = -mean(min(r A, clip(r, 1 +- eps) A)) + value_coef mean((v - R)^2) - entropy_coef mean(H).
    metrics gets [policy_loss, value_loss, entropy, approx_kl, clip_fraction] (means over the rows).
    """
    n = out.shape[0]
    inv_n = 1.0 / n
    policy = value = entropy = kl = clipped_rows = 0.0
    for r in range(n):
        l0, l1, l2 = out[r, 0], out[r, 1], out[r, 2]
        top = max(l0, max(l1, l2))
        e0, e1, e2 = math.exp(l0 - top), math.exp(l1 - top), math.exp(l2 - top)
        total = e0 + e1 + e2
        log_total = math.log(total)
        lp0, lp1, lp2 = l0 - top - log_total, l1 - top - log_total, l2 - top - log_total
        p0, p1, p2 = e0 / total, e1 / total, e2 / total
        neg_entropy = p0 * lp0 + p1 * lp1 + p2 * lp2
        action = actions[r]
        chosen_lp = lp0 if action == 0 else (lp1 if action == 1 else lp2)
        log_ratio = chosen_lp - old_log_probs[r]
        ratio = math.exp(log_ratio)
        excess = ratio - 1.0
        advantage = advantages[r]
        unclipped = ratio * advantage
        clipped = (1.0 + min(max(excess, -clip_eps), clip_eps)) * advantage
        if (
            abs(excess) <= clip_eps or unclipped <= clipped
        ):  # the ratio's term is the minimum: it carries the gradient
            policy -= unclipped
            d_log_prob = -unclipped * inv_n
        else:
            policy -= clipped
            d_log_prob = 0.0
        error = out[r, 3] - returns[r]
        value += error * error
        entropy -= neg_entropy
        kl += excess - log_ratio
        if abs(excess) > clip_eps:
            clipped_rows += 1.0
        # softmax chain rule for the action's log-prob, plus the entropy bonus: dH/dz = -p (log p + H)
        c = entropy_coef * inv_n
        d_out[r, 0] = p0 * (c * (lp0 - neg_entropy) - d_log_prob)
        d_out[r, 1] = p1 * (c * (lp1 - neg_entropy) - d_log_prob)
        d_out[r, 2] = p2 * (c * (lp2 - neg_entropy) - d_log_prob)
        d_out[r, action] += d_log_prob
        d_out[r, 3] = 2.0 * value_coef * inv_n * error
    metrics[0] = policy * inv_n
    metrics[1] = value * inv_n
    metrics[2] = entropy * inv_n
    metrics[3] = kl * inv_n
    metrics[4] = clipped_rows * inv_n


@_jit
def clip_and_adam(
    params: np.ndarray,
    grads: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    actor_mask: np.ndarray,
    lr_m: np.ndarray,
    max_norm: float,
    beta1: float,
    beta2: float,
    eps: float,
) -> None:
    """Clip the actor's and the critic's gradients each by its own global norm, then one Adam step.

    Adam as mlx.optimizers.Adam (no bias correction); m is kept multiplied by the learning rate
    (lr_m = (1 - beta1) x lr per parameter), so the step is m / (sqrt(v) + eps).
    """
    actor_sq = _F32(0.0)
    total_sq = _F32(0.0)
    for i in range(grads.size):
        g2 = grads[i] * grads[i]
        total_sq += g2
        actor_sq += g2 * actor_mask[i]
    critic_sq = max(total_sq - actor_sq, _F32(0.0))
    actor_scale = _F32(min(max_norm / (math.sqrt(max(actor_sq, 0.0)) + 1e-6), 1.0))
    critic_scale = _F32(min(max_norm / (math.sqrt(critic_sq) + 1e-6), 1.0))
    difference = actor_scale - critic_scale
    b1, b2 = _F32(beta1), _F32(beta2)
    c2 = _F32(1.0) - b2
    epsilon = _F32(eps)
    for i in range(params.size):
        g = grads[i] * (critic_scale + actor_mask[i] * difference)
        grads[i] = g
        mi = b1 * m[i] + lr_m[i] * g
        vi = b2 * v[i] + c2 * g * g
        m[i] = mi
        v[i] = vi
        params[i] -= mi / (np.sqrt(vi) + epsilon)
