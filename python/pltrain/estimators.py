"""The PL estimators (docs/method.md): output directions that scalarize a classifier, per-unit tangent
kernels K_e = J_e J_eᵀ by autograd, their float64 eigen-solve, damped κ, and the Hellmann–Feynman
surrogate the regularizer differentiates. Mirrors src/trainer/pl/tangentKernel.ts and regularizer.ts."""
import math

import numpy as np
import torch


MIN_SERVED = 4  # fewest probe examples a unit must serve for its own κ to be measured


def serve_share(units):
    """The routing share at which a unit serves a probe row: 1/(2E) of E routed units (contract 8)."""
    return 1 / (2 * units)


def damped_kappa(lf, mu, damping):
    """Smoothly damped κ = L_f / (μ + δ·L_f) (docs/method.md, contract 5): below 1/δ, exactly 1/δ for a
    singular kernel (μ = 0) and for a zero one (L_f = 0), never NaN."""
    if not lf > 0:
        return 1 / damping
    m = max(mu, 0.0)
    return 1 / damping if m == 0 else lf / (m + damping * lf)


def _pull_row(log_probs, one_hot):
    """Example's pull q and log s with g = s·q (tangentKernel.ts pullRow), or (zeros, -inf)."""
    c = log_probs.shape[0]
    out = np.zeros(c)
    nonzero = np.count_nonzero(one_hot)
    labels = np.nonzero(one_hot == 1)[0]
    if nonzero == 1 and len(labels) == 1:
        t = labels[0]
        others = np.delete(np.arange(c), t)
        top = log_probs[others].max()
        if not math.isfinite(top):
            return out, -math.inf
        out[others] = np.exp(log_probs[others] - top)
        out[t] = -out[others].sum()
        return out, top
    out = np.exp(log_probs) - one_hot
    if (out * out).sum() > 1e-24:
        return out, 0.0
    return np.zeros(c), -math.inf


def output_directions(log_probs, one_hot):
    """u_i = g_i/‖g_i‖, g_i = softmax(z_i) − y_i, free of underflow (tangentKernel.ts outputDirections)."""
    lp = np.asarray(log_probs, dtype=np.float64)
    y = np.asarray(one_hot, dtype=np.float64)
    u = np.zeros_like(lp)
    for i in range(lp.shape[0]):
        q, log_scale = _pull_row(lp[i], y[i])
        if log_scale == -math.inf:
            continue
        u[i] = q / np.sqrt((q * q).sum())
    return u


def conditioning(kernel, damping):
    """μ = λ_min, L_f = λ_max (clamped at 0), damped κ and the two unit eigenvectors, in float64.
    Reads (K + Kᵀ)/2, so float32 round-off asymmetry is accepted; a non-finite entry is an error."""
    k = np.asarray(kernel, dtype=np.float64)
    n = k.shape[0]
    if k.shape != (n, n) or n < 1:
        raise ValueError(f"kernel of shape {k.shape} is not square")
    if not (0 < damping <= 1):
        raise ValueError(f"damping must be in (0, 1], got {damping}")
    if not np.isfinite(k).all():
        raise ValueError("kernel has a non-finite entry")
    values, vectors = np.linalg.eigh((k + k.T) / 2)
    return _conditioned(values, vectors, damping)


def _conditioned_values(values, damping):
    """μ and L_f from ascending eigenvalues (a float negative one clamped to 0), and their damped κ."""
    mu = max(float(values[0]), 0.0)
    lf = max(float(values[-1]), 0.0)
    return {"mu": mu, "lf": lf, "kappa": damped_kappa(lf, mu, damping)}


def _conditioned(values, vectors, damping):
    return {**_conditioned_values(values, damping), "vMin": vectors[:, 0].copy(), "vMax": vectors[:, -1].copy()}


def conditioning_stack(stack, damping):
    """μ, L_f and damped κ of each kernel of a float64 stack k×n×n (eigenvalues only: the units' figures
    need no eigenvectors, and LAPACK skips computing them), one batched eigvalsh for the whole stack."""
    if not np.isfinite(stack).all():
        raise ValueError("kernel has a non-finite entry")
    values = np.linalg.eigvalsh((stack + stack.transpose(0, 2, 1)) / 2)
    # The extremes read out in two calls, not two per kernel (a measurement solves E + 1 of them).
    out = []
    for lowest, highest in zip(values[:, 0].tolist(), values[:, -1].tolist()):
        mu, lf = max(lowest, 0.0), max(highest, 0.0)
        out.append({"mu": mu, "lf": lf, "kappa": damped_kappa(lf, mu, damping)})
    return out


def conditioning_served(stack, rows, damping):
    """conditioning_stack() of each kernel's principal submatrix on its rows: `stack` k×n×n float64, `rows`
    one index list per kernel (at least one index each). All in one batched eigvalsh, without cutting the
    submatrices out: kernel i is solved as K_SS in place, M = K on S×S, zero across, c·I on the rest, with
    c = tr(K_SS)/|S|. M's eigenvalues are K_SS's and c (n − |S| times), and c, the mean of K_SS's
    eigenvalues, lies between its extremes, so M's extremes are K_SS's: the same μ and L_f, rounded as any
    solve of an n×n matrix of that norm (‖M‖ = ‖K_SS‖), and one LAPACK call for every kernel instead of
    one per size (the served sets of a measurement have as many sizes as units)."""
    if not (0 < damping <= 1):
        raise ValueError(f"damping must be in (0, 1], got {damping}")
    stack = np.asarray(stack, dtype=np.float64)
    if stack.ndim != 3 or stack.shape[1] != stack.shape[2] or stack.shape[1] < 1:
        raise ValueError(f"kernels of shape {stack.shape[1:]} are not square")
    k, n = stack.shape[0], stack.shape[1]
    served = np.zeros((k, n), dtype=bool)
    for i, r in enumerate(rows):
        served[i, r] = True
    count = served.sum(axis=1)
    if (count < 1).any():
        raise ValueError("a kernel with no rows to solve on")
    # np.where, not a product: an entry outside the rows (which the cut never read) cannot leak a NaN in.
    masked = np.where(served[:, :, None] & served[:, None, :], stack, 0.0)
    diagonal = np.arange(n)
    mean = np.where(served, stack[:, diagonal, diagonal], 0.0).sum(axis=1) / count
    masked[:, diagonal, diagonal] += np.where(served, 0.0, mean[:, None])
    return conditioning_stack(masked, damping)


def unit_kernels(scalar_outputs, unit_params, create_graph):
    """K_e = J_e J_eᵀ for every unit e, J_e the Jacobian of the n scalar outputs w.r.t. the unit's
    parameters. One batched backward (is_grads_batched) gives all n rows for every parameter at once.
    `unit_params`: a list (one per unit) of parameter lists. With create_graph the kernels stay
    differentiable w.r.t. the weights (for the regularizer)."""
    n = scalar_outputs.shape[0]
    flat = [p for ps in unit_params for p in ps]
    eye = torch.eye(n, dtype=scalar_outputs.dtype, device=scalar_outputs.device)
    grads = torch.autograd.grad(scalar_outputs, flat, grad_outputs=eye, is_grads_batched=True, create_graph=create_graph, allow_unused=True)
    kernels = []
    at = 0
    for ps in unit_params:
        rows = [grads[at + j].reshape(n, -1) if grads[at + j] is not None else torch.zeros(n, 0, dtype=scalar_outputs.dtype, device=scalar_outputs.device) for j in range(len(ps))]
        at += len(ps)
        j = torch.cat(rows, dim=1)
        kernels.append(j @ j.T)
    return torch.stack(kernels)


def kappa_surrogates(kernels, v_min, v_max, damping):
    """κ̃_e = (v_maxᵀ K v_max) / max(v_minᵀ K v_min, δ·v_maxᵀ K v_max) with the eigenvectors held
    constant: equal to κ at exact eigenvectors, with the same gradient (Hellmann–Feynman). A zero
    kernel gives 0 instead of 0/0 (regularizer.ts kappaSurrogatesTf)."""
    vmin = torch.as_tensor(np.stack(v_min), dtype=kernels.dtype, device=kernels.device).unsqueeze(2)
    vmax = torch.as_tensor(np.stack(v_max), dtype=kernels.dtype, device=kernels.device).unsqueeze(2)
    l_max = (vmax * (kernels @ vmax)).sum(dim=(1, 2))
    l_min = (vmin * (kernels @ vmin)).sum(dim=(1, 2))
    # Smooth damping: differentiable in λ_min at 0, so a singular but live kernel still gets a gradient;
    # float32 round-off below 0 clipped.
    return l_max / torch.clamp(torch.relu(l_min) + l_max * damping, min=1e-30)


def label_masks(one_hot):
    """(where the label is, 1 − one_hot): what output_directions_torch reads of the labels, made once for a
    fixed probe."""
    return one_hot > 0, 1 - one_hot


def output_directions_torch(logits, one_hot, masks=None):
    """output_directions as a differentiable function of the logits (regularizer.ts outputDirectionsTf):
    u_i = g_i/‖g_i‖ from the log-probabilities scaled by a per-row constant e^(−top_i), top_i the largest
    non-label log-probability (u is invariant to it, and nothing underflows). One-hot labels only; a row
    with no pull left gets u_i = 0. `masks`: label_masks(one_hot), if the caller keeps them."""
    label, not_label = masks if masks is not None else label_masks(one_hot)
    log_probs = torch.log_softmax(logits, dim=1)
    top = torch.amax(log_probs.detach().masked_fill(label, -math.inf), dim=1, keepdim=True)  # no indices
    finite = torch.isfinite(top)
    alive = finite.to(logits.dtype)
    # top where finite, else 0 (top is ≤ 0 or −inf, NaN for a NaN row): one call, not isfinite + where.
    shift = torch.nan_to_num(top, nan=0.0, neginf=0.0, posinf=0.0)
    q = torch.exp(torch.clamp(log_probs - shift, max=0)) * not_label
    g = q - one_hot * q.sum(dim=1, keepdim=True)
    norm = torch.sqrt(torch.clamp((g * g).sum(dim=1, keepdim=True), min=1e-30))
    return g / norm * alive


def scaled_logit_gradients(log_probs, one_hot, group_size):
    """The per-row cross-entropy gradients g_i = softmax(z_i) − y_i w.r.t. the logits, divided by one
    positive factor per group of `group_size` consecutive rows (the group's largest ‖g_i‖: a language
    model's sequence), free of underflow; a row pulling less than e^−20 of its group's strongest is
    raised to that (tangentKernel.ts scaledLogitGradients). float64 n×c."""
    lp = np.asarray(log_probs, dtype=np.float64)
    y = np.asarray(one_hot, dtype=np.float64)
    n = lp.shape[0]
    if group_size < 1 or n % group_size:
        raise ValueError(f"group_size {group_size} does not divide {n} rows")
    g = np.zeros_like(lp)
    log_size = np.full(n, -math.inf)
    for i in range(n):
        q, log_scale = _pull_row(lp[i], y[i])
        if log_scale == -math.inf:
            continue
        norm = np.sqrt((q * q).sum())
        g[i] = q / norm
        log_size[i] = log_scale + math.log(norm)
    for start in range(0, n, group_size):
        top = log_size[start:start + group_size].max()
        for i in range(start, start + group_size):
            g[i] *= 0.0 if log_size[i] == -math.inf else math.exp(max(log_size[i] - top, -20))
    return g



def scaled_logit_gradients_torch(log_probs, one_hot, group_size):
    """`scaled_logit_gradients` as a differentiable function of `log_probs` (torch n×c, one-hot labels):
    its value is the float64 function's on the same numbers, rounded once to log_probs' dtype; its
    derivative is that of the same formula with the piecewise choices held where the value was taken
    (regularizer.ts scaledLogitGradientsTf): each row's strongest other class, its group's strongest row,
    which rows sit at the e^−20 floor and which have no pull. An unclamped row is q_i·e^(top_i − T_g)
    (q_i the row's pull over its strongest other class e^top_i, T_g the group's largest log ‖g‖); a row
    at the floor is q_i/‖q_i‖·e^−20."""
    lp = log_probs.detach().double().cpu().numpy()
    y = np.asarray(one_hot, dtype=np.float64)
    n, c = lp.shape
    if group_size < 1 or n % group_size:
        raise ValueError(f"group_size {group_size} does not divide {n} rows")
    if not ((y.sum(axis=1) == 1) & ((y == 0) | (y == 1)).all(axis=1)).all():
        raise ValueError("scaled_logit_gradients_torch takes one-hot labels")
    strongest = np.zeros((n, c))
    log_size = np.full(n, -math.inf)
    for i in range(n):
        q, top = _pull_row(lp[i], y[i])
        if top == -math.inf:
            continue
        others = np.nonzero(y[i] == 0)[0]
        strongest[i, others[np.argmax(lp[i, others])]] = 1
        log_size[i] = top + math.log(np.sqrt((q * q).sum()))
    groups = n // group_size
    group_top_row, unclamped, clamped = np.zeros(n), np.zeros(n), np.zeros(n)
    for g in range(groups):
        rows = slice(g * group_size, (g + 1) * group_size)
        live = np.isfinite(log_size[rows])
        if not live.any():
            continue
        best = g * group_size + int(np.argmax(log_size[rows]))
        group_top_row[best] = 1
        near = log_size[rows] - log_size[best] >= -20
        unclamped[rows] = live & near
        clamped[rows] = live & ~near
    exact = torch.as_tensor(scaled_logit_gradients(lp, y, group_size), dtype=log_probs.dtype, device=log_probs.device)
    as_t = lambda a: torch.as_tensor(a, dtype=log_probs.dtype, device=log_probs.device)  # noqa: E731
    label = as_t(y)
    top = (log_probs * as_t(strongest)).sum(dim=1, keepdim=True)
    other = torch.exp(torch.clamp(log_probs - top, max=0)) * (1 - label)
    q = other - label * other.sum(dim=1, keepdim=True)
    norm = torch.sqrt(torch.clamp((q * q).sum(dim=1, keepdim=True), min=1e-30))
    row_log_size = top + torch.log(norm)
    group_top = (row_log_size.reshape(groups, group_size) * as_t(group_top_row).reshape(groups, group_size)).sum(dim=1, keepdim=True)
    group_top = group_top.expand(groups, group_size).reshape(n, 1)
    scale = as_t(unclamped).unsqueeze(1) * torch.exp(top - group_top) + as_t(clamped).unsqueeze(1) * math.exp(-20) / norm
    followed = q * scale
    return exact + (followed - followed.detach())
