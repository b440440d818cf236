"""The cheaper κ measurement (docs/performance.md, "PyTorch engine: monitoring", second and third pass) gives the
same numbers as the code it replaced. The reference below is that code's arithmetic written out op for
op (commit 808975b: the probe pass stacked under autograd's ops, X·Xᵀ + 1 made per kernel, the ReLU mask
converted before the product, u by where/full_like, the model's κ by `conditioning`'s eigh), on the same
float32 weights: the kernels are compared bit for bit, the units' μ, L_f, κ exactly, the model's κ to
1e-12 relative (eigvalsh and eigh are different LAPACK paths)."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pltrain import estimators
from pltrain.models import MoeMlp, moe_monitor_kernels
from pltrain.train import Measurer


def reference_directions(logits, one_hot):
    log_probs = torch.log_softmax(logits, dim=1)
    not_label = 1 - one_hot
    top = torch.where(not_label > 0, log_probs.detach(), torch.full_like(log_probs, -math.inf)).max(dim=1, keepdim=True).values
    alive = torch.isfinite(top).to(logits.dtype)
    shift = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    q = torch.exp(torch.clamp(log_probs - shift, max=0)) * not_label
    g = q - one_hot * q.sum(dim=1, keepdim=True)
    norm = torch.sqrt(torch.clamp((g * g).sum(dim=1, keepdim=True), min=1e-30))
    return g / norm * alive


def reference_kernels(model, x, one_hot, pruned, mask):
    g = model.gate(x, pruned, mask)
    pre = torch.stack([x @ w for w in model.w1]) + torch.stack(list(model.b1)).unsqueeze(1)
    hid = torch.relu(pre)
    w2 = torch.stack(list(model.w2))
    outs = hid @ w2 + torch.stack(list(model.b2)).unsqueeze(1)
    logits = torch.zeros(x.shape[0], model.c) if len(pruned) == model.units else (g.T.unsqueeze(2) * outs).sum(dim=0)
    u = reference_directions(logits, one_hot)
    ue = g.T.unsqueeze(2) * u
    back = (pre > 0).to(x.dtype) * (ue @ w2.transpose(1, 2))
    uu = ue @ ue.transpose(1, 2)
    units = (hid @ hid.transpose(1, 2)) * uu + uu + (x @ x.T + 1) * (back @ back.transpose(1, 2))
    m = (outs * u).sum(dim=2).T
    r = g * (m - (g * m).sum(dim=1, keepdim=True))
    return units, (x @ x.T + 1) * (r @ r.T)


def moe(seed):
    return MoeMlp(20, 4, {"model": {"experts": 4, "hiddenUnits": 16}}, torch.Generator().manual_seed(seed))


CASES = [  # (pruned, frozen, mask)
    (frozenset(), set(), None),
    (frozenset({2}), set(), None),
    (frozenset(), {1}, None),
    (frozenset(), set(), [1.0, 0.5, 0.25, 0.0]),
    (frozenset({0, 1, 2, 3}), set(), None),  # every expert pruned: zero kernels, κ of the rest alone
]


@pytest.mark.parametrize("pruned,frozen,mask", CASES)
def test_the_monitoring_measurement_equals_the_previous_arithmetic(pruned, frozen, mask):
    model = moe(31)
    gen = torch.Generator().manual_seed(32)
    x = torch.rand(12, 20, generator=gen)
    y = torch.randint(0, 4, (12,), generator=gen)
    measurer = Measurer(model, x, y, 1e-3)
    mask_t = None if mask is None else torch.tensor(mask)
    trainable = [e for e in range(4) if e not in frozen and e not in pruned]
    for _ in range(2):  # the second measurement reads the cached X·Xᵀ + 1
        with torch.no_grad():
            units, rest, served = measurer.kernels(pruned, False, mask_t)
            ref_units, ref_rest = reference_kernels(model, x, measurer.one_hot, pruned, mask_t)
        assert torch.equal(units, ref_units) and torch.equal(rest, ref_rest)
        stats = measurer.measure(frozen, pruned, trainable, mask_t)
        # measure() runs every tensor op in one scripted call: the same kernels bit for bit (the model's
        # summed as before: over the stack when every unit is trainable, else over the trainable ones).
        every = len(trainable) == 4
        ref_model = ref_rest + (ref_units.sum(dim=0) if every else ref_units[trainable].sum(dim=0) if trainable else torch.zeros_like(ref_rest))
        off = None
        if pruned:
            off = torch.zeros(4)
            off[list(pruned)] = -1e9
        with torch.no_grad():
            k64, serves = moe_monitor_kernels(x, measurer.probe_gram1, measurer.one_hot, *measurer.label_masks, *measurer.expert_params, model.gate_w, model.gate_b, off, mask_t, len(pruned) == 4, None if every else trainable, 1 / 8)
        assert torch.equal(k64, torch.cat([ref_units, ref_model.unsqueeze(0)]).double())
        assert [[] if e in pruned else [i for i, yes in enumerate(row) if yes] for e, row in enumerate(serves.tolist())] == served
        k = ref_units.double().numpy()
        solved = [e for e in range(4) if e not in pruned and len(served[e]) >= estimators.MIN_SERVED]
        # The units' figures were eigenvalues only (eigvalsh) before as well.
        # Each unit's submatrix on its served rows cut out and solved alone (numpy runs the same LAPACK solve
        # on each matrix of a stack, so a stack of one gives a batched call's bits).
        expected = [estimators.conditioning_stack(k[e][np.ix_(served[e], served[e])][None], 1e-3)[0] for e in solved]
        assert [s["kappa"] is None for s in stats] == [e not in solved for e in range(4)]
        for e, c in zip(solved, expected):
            assert (stats[e]["mu"], stats[e]["lf"], stats[e]["kappa"]) == (c["mu"], c["lf"], c["kappa"])
        model_kernel = (ref_rest + (ref_units[trainable].sum(dim=0) if trainable else 0)).double().numpy()
        expected_model = estimators.conditioning(model_kernel, 1e-3)["kappa"]
        assert measurer.model_kappa == pytest.approx(expected_model, rel=1e-12)
        # The regularizer's path (eigenvectors wanted) gives the same units and the same model κ.
        with_vectors, _, v_min, v_max = measurer.condition(units, rest, served, frozen, pruned, trainable)
        assert with_vectors == stats and v_min is not None and v_max is not None
        assert measurer.model_kappa == pytest.approx(expected_model, rel=1e-12)
        # Train a little between the two rounds, so the cache is read with other weights.
        if len(pruned) == 4:
            continue  # nothing to train
        with torch.enable_grad():
            loss = F.cross_entropy(model(x, pruned, mask_t), y)
            loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                if p.grad is not None:
                    p -= 0.5 * p.grad
                    p.grad = None


def test_the_differentiable_kernels_are_unchanged_too():
    """The regularizer's path (create_graph): the same values as the reference, and a gradient."""
    model = moe(41)
    gen = torch.Generator().manual_seed(42)
    x = torch.rand(10, 20, generator=gen)
    y = torch.randint(0, 4, (10,), generator=gen)
    measurer = Measurer(model, x, y, 1e-3)
    units, rest, _ = measurer.kernels(frozenset(), True)
    ref_units, ref_rest = reference_kernels(model, x, measurer.one_hot, frozenset(), None)
    assert torch.equal(units, ref_units) and torch.equal(rest, ref_rest)
    (units.sum() + rest.sum()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_output_directions_equal_the_previous_formula_bit_for_bit():
    """Random rows, a confident row (e^(−top) would overflow unshifted), a row of −inf non-label logits
    (no pull: u = 0), a NaN row; with and without the caller's masks; float32 and float64."""
    for dtype in (torch.float32, torch.float64):
        gen = torch.Generator().manual_seed(5)
        logits = (torch.randn(8, 5, generator=gen) * 6).to(dtype)
        y = torch.randint(0, 5, (8,), generator=gen)
        logits[1, y[1]] = 400.0
        logits[2] = -math.inf
        logits[2, y[2]] = 0.0
        logits[3, 0] = math.nan
        one_hot = F.one_hot(y, 5).to(dtype)
        ref = reference_directions(logits, one_hot)
        for masks in (None, estimators.label_masks(one_hot)):
            got = estimators.output_directions_torch(logits, one_hot, masks)
            assert torch.equal(torch.nan_to_num(got, nan=7.0), torch.nan_to_num(ref, nan=7.0))
        assert torch.equal(ref[2], torch.zeros(5, dtype=dtype))


@pytest.mark.parametrize("pruned,mask", [(frozenset(), None), (frozenset({2}), [1.0, 0.5, 0.25, 0.0])])
def test_the_step_routing_survives_the_probe_pass_in_either_order(pruned, mask):
    """The step's routing shares come from the step's own forward: the loop used to read them off the model
    (`unmasked_routing`, set by every gate call), so a measurement (the probe's pass: other rows) between
    the forward and the read replaced them. Here the measurement runs in between, both ways (monitoring,
    and the regularizer's differentiable kernels), and the routing is checked against the softmax of the
    batch's gate logits computed independently in float64."""
    model = moe(51)
    gen = torch.Generator().manual_seed(52)
    batch, probe = torch.rand(32, 20, generator=gen), torch.rand(12, 20, generator=gen)
    measurer = Measurer(model, probe, torch.randint(0, 4, (12,), generator=gen), 1e-3)
    mask_t = None if mask is None else torch.tensor(mask)
    z = batch.double() @ model.gate_w.detach().double() + model.gate_b.detach().double()
    z[:, list(pruned)] -= 1e9
    expected = torch.softmax(z, dim=1)  # before the soft mask
    logits, routing = model.forward_with_routing(batch, pruned, mask_t)
    measurer.measure(set(), pruned, [e for e in range(4) if e not in pruned], mask_t)
    measurer.kernels(pruned, True, mask_t)
    assert routing.shape == (32, 4)
    assert torch.allclose(routing.double(), expected, rtol=1e-5, atol=1e-7)
    assert torch.equal(logits, model(batch, pruned, mask_t))
    # Nothing of a call is kept on the model for a later one to overwrite.
    assert not hasattr(model, "unmasked_routing")
    # Every expert pruned: no gate runs and nothing is routed (not a stale routing of an earlier call).
    out, none = model.forward_with_routing(batch, frozenset(range(4)))
    assert none is None and torch.equal(out, torch.zeros(32, 4))


def test_the_stacked_solve_equals_the_per_kernel_one():
    """conditioning_stack (monitoring's solve straight from the read-back stack) gives each kernel's figures
    solved alone exactly, a singular kernel (rank 3 of 6), a zero one (a dead unit) and a tiny one
    included, and refuses a non-finite entry."""
    rng = np.random.default_rng(3)
    a = rng.standard_normal((6, 9))
    low = rng.standard_normal((6, 3))
    stack = np.stack([a @ a.T, low @ low.T, np.zeros((6, 6)), 1e-30 * (a @ a.T), (a @ a.T) + rng.standard_normal((6, 6)) * 1e-7])
    assert estimators.conditioning_stack(stack, 1e-3) == [estimators.conditioning_stack(k[None], 1e-3)[0] for k in stack]
    assert estimators.conditioning_stack(stack, 1e-3)[2] == {"mu": 0.0, "lf": 0.0, "kappa": 1e3}
    stack[1, 2, 3] = math.nan
    with pytest.raises(ValueError, match="non-finite"):
        estimators.conditioning_stack(stack, 1e-3)


def test_without_torchscript_the_measurement_runs_eagerly_with_the_same_numbers(monkeypatch, capsys):
    """A torch that cannot script the measurement (TorchScript is deprecated upstream) still measures: the
    eager function runs the same ops, so every figure is the same as the scripted call's."""
    from pltrain import models

    model = moe(41)
    gen = torch.Generator().manual_seed(42)
    x, y = torch.rand(12, 20, generator=gen), torch.randint(0, 4, (12,), generator=gen)
    scripted = Measurer(model, x, y, 1e-3).measure(set(), frozenset({1}), [0, 2, 3])

    def refuse(_fn):
        raise RuntimeError("no TorchScript here")

    monkeypatch.setattr(models, "_scripted_monitor_kernels", None)
    monkeypatch.setattr(torch.jit, "script", refuse)
    measurer = Measurer(model, x, y, 1e-3)
    eager = measurer.measure(set(), frozenset({1}), [0, 2, 3])
    assert models._scripted_monitor_kernels is models._moe_monitor_kernels
    assert "κ monitoring runs eagerly" in capsys.readouterr().err
    assert [(s["mu"], s["lf"], s["kappa"]) for s in eager] == [(s["mu"], s["lf"], s["kappa"]) for s in scripted]
    assert any(s["kappa"] is not None for s in eager)


def _cut_solve(kernel, rows, damping):
    """The reference: the principal submatrix on `rows` cut out and solved alone (numpy's eigvalsh, float64)."""
    values = np.linalg.eigvalsh(kernel[np.ix_(rows, rows)])
    mu, lf = max(float(values[0]), 0.0), max(float(values[-1]), 0.0)
    return mu, lf, estimators.damped_kappa(lf, mu, damping)


def _close(got, want, scale):
    """μ and L_f to 1e-12 of the kernel's scale (an eigen-solve's rounding), κ to 1e-9 relative."""
    return abs(got["mu"] - want[0]) <= 1e-12 * scale and abs(got["lf"] - want[1]) <= 1e-12 * scale and got["kappa"] == pytest.approx(want[2], rel=1e-9)


def test_conditioning_served_equals_solving_each_cut_submatrix():
    """One batched solve of every kernel on its own rows (the rows a unit serves) gives the extremes of each
    principal submatrix, against cutting it out and solving it alone: random rows, a singular submatrix, a
    zero kernel (a dead unit), a submatrix that is a multiple of I (the padding's mean equals both
    extremes), one row, every row (then exactly conditioning_stack's figures); a NaN outside the rows does
    not leak in, one inside is refused."""
    rng = np.random.default_rng(5)
    n = 12
    a = rng.standard_normal((n, 20))
    full = a @ a.T
    low = rng.standard_normal((n, 2))
    singular = low @ low.T  # rank 2: singular on any 5 rows
    scaled_identity = full.copy()
    rows_i = [1, 4, 7, 9]
    scaled_identity[np.ix_(rows_i, rows_i)] = 3 * np.eye(4)
    cases = [(full, sorted(rng.choice(n, 5, replace=False).tolist())), (singular, [0, 2, 3, 8, 11]), (np.zeros((n, n)), [1, 2, 3, 4]),
             (scaled_identity, rows_i), (full, [6]), (full, list(range(n))), (1e-30 * full, [0, 1, 2, 5, 10])]
    stack = np.stack([k for k, _ in cases])
    got = estimators.conditioning_served(stack, [r for _, r in cases], 1e-3)
    for (kernel, rows), g in zip(cases, got):
        assert _close(g, _cut_solve(kernel, rows, 1e-3), max(float(np.abs(kernel).max()), 1e-300)), (rows, g)
    assert got[2] == {"mu": 0.0, "lf": 0.0, "kappa": 1e3}  # the dead unit
    assert got[3]["mu"] == pytest.approx(3, rel=1e-14) and got[3]["lf"] == pytest.approx(3, rel=1e-14)
    assert got[4]["mu"] == got[4]["lf"] == full[6, 6]
    assert got[5] == estimators.conditioning_stack(stack[5:6], 1e-3)[0]  # every row: the stack itself
    outside = stack.copy()
    outside[0, [r for r in range(n) if r not in cases[0][1]][0], 0] = math.nan
    assert estimators.conditioning_served(outside, [r for _, r in cases], 1e-3) == got
    inside = stack.copy()
    inside[0, cases[0][1][0], cases[0][1][1]] = math.nan
    with pytest.raises(ValueError, match="non-finite"):
        estimators.conditioning_served(inside, [r for _, r in cases], 1e-3)
    with pytest.raises(ValueError, match="no rows"):
        estimators.conditioning_served(stack[:1], [[]], 1e-3)


def test_a_measurement_with_a_sharp_gate_solves_each_unit_on_the_rows_it_serves():
    """A sharp (nearly collapsed) gate: each expert serves only some probe rows, so every unit's κ is taken
    over a different principal submatrix; each against its submatrix cut out of the reference kernels and
    solved alone in float64, the model's κ over its whole kernel."""
    model = moe(51)
    with torch.no_grad():
        model.gate_w.mul_(40)
    gen = torch.Generator().manual_seed(52)
    x, y = torch.rand(16, 20, generator=gen), torch.randint(0, 4, (16,), generator=gen)
    measurer = Measurer(model, x, y, 1e-3)
    stats = measurer.measure(set(), frozenset(), [0, 1, 2, 3])
    with torch.no_grad():
        _, _, served = measurer.kernels(frozenset(), False, None)
        ref_units, ref_rest = reference_kernels(model, x, measurer.one_hot, frozenset(), None)
    sizes = [len(s) for s in served]
    assert len(set(sizes)) > 1 and min(sizes) < 16, f"the gate should split the probe: {sizes}"
    k = ref_units.double().numpy()
    for e, s in enumerate(stats):
        if len(served[e]) < estimators.MIN_SERVED:
            assert s["kappa"] is None
            continue
        assert s["served"] == len(served[e]) and _close(s, _cut_solve(k[e], served[e], 1e-3), float(np.abs(k[e]).max())), (e, served[e], s)
    model_kernel = (ref_rest + ref_units.sum(dim=0)).double().numpy()
    assert measurer.model_kappa == pytest.approx(estimators.conditioning(model_kernel, 1e-3)["kappa"], rel=1e-9)
