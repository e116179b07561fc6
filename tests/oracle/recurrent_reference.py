"""A float64 numpy reference of LRP for recurrent networks (Arras et al. 2017), written independently of
the compiler: plain loops over time in PyTorch's parameter layout (LSTM gates i f g o, GRU gates r z n),
the linear rule in the form of the authors' ``lrp_linear`` (github ArrasL/LRP_for_LSTM, with
``bias_factor = 0``): ``R_in = hin * sum_j w_ji R_j / (z_j + eps sign(z_j))``, ``z`` the whole
pre-activation, sign(0) = +1 (with eps = 0, R_j / 0 taken as 0).

Rules (see lrp_graph/ops/recurrent.py): all relevance of ``gate * signal`` to the signal;
``c = f c_prev + i g`` and ``h = z h_prev + (1 - z) n`` split in proportion to the two products;
``h = o tanh(c)`` gives all to ``c``; tanh passes relevance; GRU candidate (``linear_before_reset``):
epsilon over ``W_n x``, ``b_in``, ``r u``; the share of ``r u`` to ``u = U_n h + b_hn``; then epsilon
through ``u``. Steps at or past a sample's length leave the state and its relevance unchanged.
"""
from __future__ import annotations

import numpy as np


def stab(z, eps):
    return z + eps * np.where(z >= 0, 1.0, -1.0)


def ratio(num, den, eps):
    """num / stab(den); with eps = 0, x / 0 = 0."""
    d = stab(den, eps)
    if eps > 0:
        return num / d
    return np.where(d == 0, 0.0, num / np.where(d == 0, 1.0, d))


def lrp_linear(hin, w, z, r_out, eps):
    """Epsilon-LRP through ``z = hin @ w.T + b`` (b absorbed): hin (B, I), w (O, I), z and r_out (B, O)."""
    return hin * (ratio(r_out, z, eps) @ w)


def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def _order(T, reverse):
    return list(range(T - 1, -1, -1)) if reverse else list(range(T))


def lstm_forward(p, x, h0, c0, reverse, lens):
    """One direction; p: w_ih (4H, I), w_hh (4H, H), b_ih, b_hh (PyTorch order i f g o).
    Returns the outputs (B, T, H) (0 past the length), final (h, c) and the per-step values."""
    B, T, _ = x.shape
    H = p["w_hh"].shape[1]
    h, c, steps = h0.copy(), c0.copy(), {}
    y = np.zeros((B, T, H))
    for t in _order(T, reverse):
        pre = x[:, t] @ p["w_ih"].T + p["b_ih"] + h @ p["w_hh"].T + p["b_hh"]
        i, f, g, o = sigmoid(pre[:, :H]), sigmoid(pre[:, H:2 * H]), np.tanh(pre[:, 2 * H:3 * H]), sigmoid(pre[:, 3 * H:])
        c_new = f * c + i * g
        h_new = o * np.tanh(c_new)
        valid = (t < lens)[:, None]
        steps[t] = dict(h_prev=h, c_prev=c, i=i, f=f, g=g, z_g=pre[:, 2 * H:3 * H], c=c_new, valid=valid)
        h, c = np.where(valid, h_new, h), np.where(valid, c_new, c)
        y[:, t] = np.where(valid, h_new, 0.0)
    return y, h, c, steps


def lstm_lrp(p, x, steps, r_y, r_hn, r_cn, eps, reverse):
    """Relevance of the input (B, T, I), h0 and c0 for one direction."""
    H = p["w_hh"].shape[1]
    w_g = np.concatenate([p["w_ih"][2 * H:3 * H], p["w_hh"][2 * H:3 * H]], axis=1)
    r_x = np.zeros_like(x)
    rh, rc = r_hn.copy(), r_cn.copy()
    for t in reversed(_order(x.shape[1], reverse)):
        s = steps[t]
        valid = s["valid"]
        rh_t = rh + r_y[:, t]
        rc_t = rc + rh_t  # h = o * tanh(c): all to c, none to o
        r_cprev = ratio(s["f"] * s["c_prev"], s["c"], eps) * rc_t  # f * c_prev: all to c_prev
        r_g = ratio(s["i"] * s["g"], s["c"], eps) * rc_t  # i * g: all to g; tanh passes it to z_g
        r_in = lrp_linear(np.concatenate([x[:, t], s["h_prev"]], axis=1), w_g, s["z_g"], r_g, eps)
        r_x[:, t] = np.where(valid, r_in[:, :x.shape[2]], 0.0)
        rh = np.where(valid, r_in[:, x.shape[2]:], rh)
        rc = np.where(valid, r_cprev, rc)
    return r_x, rh, rc


def gru_forward(p, x, h0, reverse, lens, linear_before_reset=True):
    """One direction; PyTorch order r z n. Returns outputs (B, T, H), final h and the per-step values."""
    B, T, _ = x.shape
    H = p["w_hh"].shape[1]
    h, steps = h0.copy(), {}
    y = np.zeros((B, T, H))
    for t in _order(T, reverse):
        gx = x[:, t] @ p["w_ih"].T + p["b_ih"]
        r = sigmoid(gx[:, :H] + h @ p["w_hh"][:H].T + p["b_hh"][:H])
        z = sigmoid(gx[:, H:2 * H] + h @ p["w_hh"][H:2 * H].T + p["b_hh"][H:2 * H])
        if linear_before_reset:
            u = h @ p["w_hh"][2 * H:].T + p["b_hh"][2 * H:]
            a = gx[:, 2 * H:] + r * u
        else:
            u = None
            a = gx[:, 2 * H:] + (r * h) @ p["w_hh"][2 * H:].T + p["b_hh"][2 * H:]
        n = np.tanh(a)
        h_new = (1 - z) * n + z * h
        valid = (t < lens)[:, None]
        steps[t] = dict(h_prev=h, r=r, z=z, u=u, a=a, n=n, h=h_new, valid=valid)
        h = np.where(valid, h_new, h)
        y[:, t] = np.where(valid, h_new, 0.0)
    return y, h, steps


def gru_lrp(p, x, steps, r_y, r_hn, eps, reverse, linear_before_reset=True):
    """Relevance of the input (B, T, I) and of h0 for one direction."""
    H = p["w_hh"].shape[1]
    I = x.shape[2]
    w_n, u_n = p["w_ih"][2 * H:], p["w_hh"][2 * H:]
    r_x = np.zeros_like(x)
    rh = r_hn.copy()
    for t in reversed(_order(x.shape[1], reverse)):
        s = steps[t]
        valid = s["valid"]
        rh_t = rh + r_y[:, t]
        r_keep = ratio(s["z"] * s["h_prev"], s["h"], eps) * rh_t  # z * h_prev: all to h_prev
        r_n = ratio((1 - s["z"]) * s["n"], s["h"], eps) * rh_t  # (1 - z) * n: all to n (tanh: to a)
        if linear_before_reset:
            r_xt = lrp_linear(x[:, t], w_n, s["a"], r_n, eps)
            r_u = s["r"] * s["u"] * ratio(r_n, s["a"], eps)  # r * u: all to u
            r_back = lrp_linear(s["h_prev"], u_n, s["u"], r_u, eps)
        else:
            both = lrp_linear(np.concatenate([x[:, t], s["r"] * s["h_prev"]], axis=1),
                              np.concatenate([w_n, u_n], axis=1), s["a"], r_n, eps)
            r_xt, r_back = both[:, :I], both[:, I:]  # r * h_prev: all to h_prev
        r_x[:, t] = np.where(valid, r_xt, 0.0)
        rh = np.where(valid, r_keep + r_back, rh)
    return r_x, rh


def recurrent_stack(kind, layers, x, eps, h0=None, c0=None, lens=None, linear_before_reset=True):
    """A (multi-layer, maybe bidirectional) torch-style nn.LSTM/nn.GRU, batch first.

    ``layers[l][d]`` holds the parameters of layer l, direction d (float64). Returns ``(y, h_n, c_n, lrp)``
    with ``lrp(r_y, r_hn, r_cn) -> (r_x, r_h0, r_c0)`` (``r_hn``/``r_cn``: (L * D, B, H), as ``h_n``)."""
    B, T, _ = x.shape
    D, H = len(layers[0]), layers[0][0]["w_hh"].shape[1]
    lens = np.full(B, T) if lens is None else np.asarray(lens)
    h0 = np.zeros((len(layers) * D, B, H)) if h0 is None else h0
    c0 = np.zeros_like(h0) if c0 is None else c0
    tape, inp, h_n, c_n = [], x, [], []
    for l, layer in enumerate(layers):
        outs = []
        for d, p in enumerate(layer):
            k = l * D + d
            if kind == "lstm":
                y, h, c, steps = lstm_forward(p, inp, h0[k], c0[k], d == 1, lens)
            else:
                (y, h, steps), c = gru_forward(p, inp, h0[k], d == 1, lens, linear_before_reset), h0[k] * 0
            outs.append(y)
            h_n.append(h)
            c_n.append(c)
            tape.append((l, d, p, inp, steps))
        inp = np.concatenate(outs, axis=2)

    def lrp(r_y, r_hn=None, r_cn=None):
        r_hn = np.zeros_like(h0) if r_hn is None else r_hn
        r_cn = np.zeros_like(h0) if r_cn is None else r_cn
        r_h0, r_c0 = np.zeros_like(h0), np.zeros_like(h0)
        r_out = r_y
        for l in reversed(range(len(layers))):
            r_in = 0.0
            for (ll, d, p, inp_l, steps) in [e for e in tape if e[0] == l]:
                k = l * D + d
                r_dir = r_out[:, :, d * H:(d + 1) * H]
                if kind == "lstm":
                    r_x, r_h0[k], r_c0[k] = lstm_lrp(p, inp_l, steps, r_dir, r_hn[k], r_cn[k], eps, d == 1)
                else:
                    r_x, r_h0[k] = gru_lrp(p, inp_l, steps, r_dir, r_hn[k], eps, d == 1, linear_before_reset)
                r_in = r_in + r_x
            r_out = r_in
        return r_out, r_h0, r_c0

    return inp, np.stack(h_n), np.stack(c_n), lrp


def torch_layers(module):
    """``layers[l][d]`` parameter dicts (float64) of a torch nn.LSTM / nn.GRU."""
    D = 2 if module.bidirectional else 1
    layers = []
    for l in range(module.num_layers):
        layer = []
        for d in range(D):
            sfx = f"_l{l}" + ("_reverse" if d else "")
            layer.append({k: getattr(module, f"{name}{sfx}").detach().double().numpy()
                          for k, name in (("w_ih", "weight_ih"), ("w_hh", "weight_hh"), ("b_ih", "bias_ih"),
                                          ("b_hh", "bias_hh"))})
        layers.append(layer)
    return layers


def linear_lrp(x, w, b, r_out, eps):
    """Epsilon-LRP through a linear layer ``x @ w.T + b``: x (B, ..., I)."""
    z = x @ w.T + b
    return x * (ratio(r_out, z, eps) @ w)


def conv2d(x, w, b, stride, padding):
    """Cross-correlation (N, C, H, W) with w (O, C, kh, kw); returns z and the padded input's patches."""
    xp = np.pad(x, ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2))
    O, C, kh, kw = w.shape
    Ho = (xp.shape[2] - kh) // stride[0] + 1
    Wo = (xp.shape[3] - kw) // stride[1] + 1
    z = np.zeros((x.shape[0], O, Ho, Wo)) + b[None, :, None, None]
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, :, i:i + stride[0] * Ho:stride[0], j:j + stride[1] * Wo:stride[1]]
            z += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
    return z


def conv2d_lrp(x, w, b, stride, padding, r_out, eps):
    """Epsilon-LRP through a Conv2d (the transposed convolution written out as loops over the kernel)."""
    z = conv2d(x, w, b, stride, padding)
    s = ratio(r_out, z, eps)
    xp = np.pad(x, ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2))
    back = np.zeros_like(xp)
    _, _, kh, kw = w.shape
    Ho, Wo = z.shape[2:]
    for i in range(kh):
        for j in range(kw):
            back[:, :, i:i + stride[0] * Ho:stride[0], j:j + stride[1] * Wo:stride[1]] += \
                np.einsum("nohw,oc->nchw", s, w[:, :, i, j])
    back = back[:, :, padding[0]:padding[0] + x.shape[2], padding[1]:padding[1] + x.shape[3]]
    return x * back
