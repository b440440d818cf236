"""pltrain.attach on a model whose kernels have a closed form: z = W₀x₀ + W₁x₁ + b (x split in two halves,
one unit per half). s_i = u_iᵀz_i, so K_e(i,j) = (u_i·u_j)(x_ie·x_je) and K_rest(i,j) = u_i·u_j (the bias)."""
import json
import os

import numpy as np
import pytest
import torch

import pltrain
from pltrain.estimators import damped_kappa

D, C, N = 6, 3, 8


class TwoBlocks(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w0 = torch.nn.Linear(D // 2, C, bias=False)
        self.w1 = torch.nn.Linear(D // 2, C, bias=False)
        self.b = torch.nn.Parameter(torch.zeros(C))

    def forward(self, x):
        return self.w0(x[:, : D // 2]) + self.w1(x[:, D // 2:]) + self.b


def closed_form(model, x, y, frozen=()):
    """Unit kernels, K_rest and the model's kernel in float64 numpy, from the formulas alone."""
    W0, W1, b = (t.detach().double().numpy() for t in (model.w0.weight, model.w1.weight, model.b))
    x = x.double().numpy()
    z = x[:, : D // 2] @ W0.T + x[:, D // 2:] @ W1.T + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    g = p - np.eye(C)[y.numpy()]
    u = g / np.linalg.norm(g, axis=1, keepdims=True)
    uu = u @ u.T
    ks = [uu * (x[:, : D // 2] @ x[:, : D // 2].T), uu * (x[:, D // 2:] @ x[:, D // 2:].T)]
    model_k = uu + sum(ks[e] for e in range(2) if e not in frozen)
    return ks, model_k


def kappa_of(k, damping):
    lam = np.linalg.eigvalsh(k)
    return damped_kappa(max(lam[-1], 0), max(lam[0], 0), damping)


def make_run(tmp_path, alpha=0.5, every=1, damping=1e-3):
    torch.manual_seed(0)
    model = TwoBlocks().double()
    x = torch.randn(N, D, dtype=torch.float64)
    y = torch.arange(N) % C
    run = pltrain.attach(model, units=[("left", model.w0), ("right", [model.w1.weight])], probe=(x, y), run_dir=str(tmp_path / "run"),
                         config={"alpha": alpha, "monitor": {"every": every, "damping": damping}}, unit_name="block")
    return model, x, y, run


def test_measure_and_regularizer_match_the_closed_form(tmp_path):
    model, x, y, run = make_run(tmp_path)
    try:
        stats, model_kappa, traces, _ = run.measure()
        ks, model_k = closed_form(model, x, y)
        for e in range(2):
            lam = np.linalg.eigvalsh(ks[e])
            assert stats[e]["served"] == N
            assert stats[e]["mu"] == pytest.approx(max(lam[0], 0), abs=1e-10)
            assert stats[e]["lf"] == pytest.approx(lam[-1], rel=1e-10)
            assert stats[e]["kappa"] == pytest.approx(kappa_of(ks[e], 1e-3), rel=1e-8)
            assert traces[e] == pytest.approx(np.trace(ks[e]), rel=1e-10)
        assert model_kappa == pytest.approx(kappa_of(model_k, 1e-3), rel=1e-8)
        assert float(run.regularizer()) == pytest.approx(kappa_of(model_k, 1e-3), rel=1e-8)
    finally:
        run.close()


def test_regularizer_gradient_matches_central_differences_of_kappa(tmp_path):
    """Item 7: the gradient follows K's dependence on every weight and u's (checked in float64)."""
    model, x, y, run = make_run(tmp_path, damping=1e-2)
    try:
        reg = run.regularizer()
        params = [model.w0.weight, model.w1.weight, model.b]
        grads = torch.autograd.grad(reg, params)
        h = 1e-6
        for p, g in zip(params, grads):
            for idx in [(0,), (1,), (2,)] if p.dim() == 1 else [(0, 0), (1, 2), (2, 1)]:
                with torch.no_grad():
                    old = p[idx].item()
                    p[idx] = old + h
                    plus = kappa_of(closed_form(model, x, y)[1], 1e-2)
                    p[idx] = old - h
                    minus = kappa_of(closed_form(model, x, y)[1], 1e-2)
                    p[idx] = old
                fd = (plus - minus) / (2 * h)
                assert g[idx].item() == pytest.approx(fd, rel=1e-4, abs=1e-7)
    finally:
        run.close()


def test_alpha_zero_gives_a_constant_regularizer(tmp_path):
    _, _, _, run = make_run(tmp_path, alpha=0)
    try:
        r = run.regularizer()
        assert float(r) == 0 and not r.requires_grad
    finally:
        run.close()


def test_routerless_units_with_too_few_probe_examples_are_null(tmp_path):
    torch.manual_seed(0)
    model = TwoBlocks().double()
    x, y = torch.randn(3, D, dtype=torch.float64), torch.tensor([0, 1, 2])
    run = pltrain.attach(model, units=[("l", model.w0), ("r", model.w1)], probe=(x, y), run_dir=str(tmp_path / "run"))
    try:
        stats, _, _, _ = run.measure()
        assert all(s["mu"] is None and s["kappa"] is None and s["served"] == 3 for s in stats)
    finally:
        run.close()


def test_router_decides_what_a_unit_serves(tmp_path):
    torch.manual_seed(0)
    model = TwoBlocks().double()
    x, y = torch.randn(N, D, dtype=torch.float64), torch.arange(N) % C
    # Unit 0 gets the first 5 examples (p = 0.9), unit 1 only the last 3 (< MIN_SERVED): null.
    probs = torch.tensor([[0.9, 0.1]] * 5 + [[0.1, 0.9]] * 3, dtype=torch.float64)
    run = pltrain.attach(model, units=[("l", model.w0), ("r", model.w1)], probe=(x, y), run_dir=str(tmp_path / "run"), router=lambda inp: probs[: inp.shape[0]])
    try:
        stats, _, _, _ = run.measure()
        ks, _ = closed_form(model, x, y)
        assert stats[0]["served"] == 5 and stats[1]["served"] == 3 and stats[1]["kappa"] is None
        assert stats[0]["lf"] == pytest.approx(np.linalg.eigvalsh(ks[0][:5, :5])[-1], rel=1e-10)
        assert run._shares([0, 0], x) == pytest.approx([0.9 * 5 / 8 + 0.1 * 3 / 8, 0.1 * 5 / 8 + 0.9 * 3 / 8])
    finally:
        run.close()


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_freeze_keeps_weights_bit_identical_under_adam_and_acks_after_the_durable_record(tmp_path):
    model, x, y, run = make_run(tmp_path, alpha=0.1, every=2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-3)

    def one_step():
        opt.zero_grad()
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits, y) + run.alpha * run.regularizer()
        loss.backward()
        return loss

    for _ in range(3):
        loss = one_step()
        opt.step()
        assert run.step(loss=loss, metrics={"accuracy": 0.5})
    run.steering.enqueue("f1", {"kind": "freeze", "unit": 1})
    run.steering.enqueue("a1", {"kind": "setAlpha", "alpha": 0.25})
    loss = one_step()
    opt.step()
    assert run.step(loss=loss)
    assert run.alpha == 0.25 and run.frozen == {1}
    frozen_before = model.w1.weight.detach().clone()
    other_before = model.w0.weight.detach().clone()
    for _ in range(4):
        loss = one_step()
        assert torch.count_nonzero(model.w1.weight.grad) == 0  # zero before optimizer.step
        opt.step()
        assert run.step(loss=loss)
        assert torch.equal(model.w1.weight, frozen_before)  # bit-identical
    assert not torch.equal(model.w0.weight, other_before)
    run.steering.enqueue("u1", {"kind": "unfreeze", "unit": 1})
    run.steering.enqueue("s1", {"kind": "stop"})
    loss = one_step()
    opt.step()
    assert run.step(loss=loss) is False
    with pytest.raises(pltrain.StopTraining):
        run.step(loss=loss)
    run.close()
    d = str(tmp_path / "run")
    acks = read_jsonl(os.path.join(d, "commands.jsonl"))
    assert [(a["commandId"], a["status"], a["step"]) for a in acks] == [("f1", "applied", 4), ("a1", "applied", 4), ("u1", "applied", 9), ("s1", "applied", 9)]
    with open(os.path.join(d, "steering.json")) as f:
        durable = json.load(f)
    assert durable["frozen"] == [] and durable["alpha"] == 0.25 and [a["seq"] for a in durable["acks"]] == [a["seq"] for a in acks[2:]]
    metrics = read_jsonl(os.path.join(d, "metrics.jsonl"))
    assert [m["step"] for m in metrics] == list(range(1, 10))
    assert all("units" in m for m in metrics if m["step"] % 2 == 0)
    assert [u["frozen"] for u in metrics[5]["units"]] == [False, True]
    assert abs(sum(u["share"] for u in metrics[1]["units"]) - 1) < 1e-9
    events = read_jsonl(os.path.join(d, "events.jsonl"))
    hello = events[0]
    assert hello["type"] == "hello" and hello["unitCount"] == 2 and hello["unitName"] == "block" and hello["protocol"] == 2
    assert events[-1]["type"] == "state" and events[-1]["state"] == "stopped"


def test_overlapping_units_are_refused(tmp_path):
    model = TwoBlocks()
    with pytest.raises(ValueError, match="two units"):
        pltrain.attach(model, units=[("a", model.w0), ("b", model.w0)], probe=(torch.randn(4, D), torch.zeros(4, dtype=torch.long)), run_dir=str(tmp_path / "r"))


def test_pl_ratio_is_half_the_squared_gradient_norm_over_the_objective_on_monitor_steps_only(tmp_path):
    """Item 11 with f* = 0, from the gradients optimizer.step() used (lr-0 steps keep the weights), in
    float64; sent on monitor steps only (every 2nd here), and not when the loop cleared the gradients."""
    model, x, y, run = make_run(tmp_path, alpha=0.3, every=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    expected = {}
    for step in range(1, 6):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y) + run.alpha * run.regularizer()
        loss.backward()
        expected[step] = 0.5 * sum(float((p.grad.double() ** 2).sum()) for p in model.parameters()) / float(loss)
        opt.step()
        if step == 4:
            opt.zero_grad(set_to_none=True)  # a monitor step with no gradients left: no plRatio
        assert run.step(loss=loss)
    run.close()
    metrics = read_jsonl(os.path.join(str(tmp_path / "run"), "metrics.jsonl"))
    assert [m["step"] for m in metrics] == [1, 2, 3, 4, 5]
    assert [m["step"] for m in metrics if "plRatio" in m] == [2]
    assert [m["step"] for m in metrics if "units" in m] == [2, 4]
    assert metrics[1]["plRatio"] == pytest.approx(expected[2], rel=1e-12)
    assert metrics[0]["regularizer"] == pytest.approx(kappa_of(closed_form(model, x, y)[1], 1e-3), rel=1e-8)
    assert metrics[1]["taskLoss"] == pytest.approx(float(loss) - 0.3 * metrics[1]["regularizer"], rel=1e-12)


def test_the_config_a_script_was_started_from_sets_its_run_fields(tmp_path, monkeypatch):
    """launcher.ts passes the .pltrain.json it started the script from in PLTRAIN_CONFIG: its alpha, steps,
    logEvery, monitor.every/damping and name override the script's own config= and total_steps=; the other
    fields (model, data, …) are the script's business and ignored; an unreadable file is a clear error."""
    launch = tmp_path / "mine.pltrain.json"
    launch.write_text(json.dumps({"name": "from-config", "engine": "pytorch", "script": "train.py", "alpha": 0.25, "steps": 7, "logEvery": 2,
                                  "monitor": {"every": 3, "probeSize": 99}, "model": {"family": "moe-mlp"}}))
    monkeypatch.setenv("PLTRAIN_CONFIG", str(launch))
    torch.manual_seed(0)
    model = TwoBlocks().double()
    x, y = torch.randn(N, D, dtype=torch.float64), torch.arange(N) % C
    run = pltrain.attach(model, units=[("left", model.w0), ("right", model.w1)], probe=(x, y), run_dir=str(tmp_path / "run"),
                         config={"alpha": 0.5, "steps": 100, "monitor": {"every": 1, "damping": 1e-3}}, total_steps=50)
    try:
        assert run.alpha == 0.25 and run.total_steps == 7
        assert run.config["logEvery"] == 2 and run.config["name"] == "from-config"
        # monitor: every from the file, damping kept from the script, probeSize always the probe's own.
        assert run.config["monitor"] == {"every": 3, "damping": 1e-3, "probeSize": N}
        assert run.config["model"]["family"] == "custom"
        with open(os.path.join(run.run_dir_path, "run.json")) as f:
            assert json.load(f)["totalSteps"] == 7
    finally:
        run.close()
    monkeypatch.setenv("PLTRAIN_CONFIG", str(tmp_path / "missing.pltrain.json"))
    with pytest.raises(ValueError, match="PLTRAIN_CONFIG=.*cannot read the config this script was started from"):
        pltrain.attach(model, units=[("left", model.w0), ("right", model.w1)], probe=(x, y), run_dir=str(tmp_path / "run2"))
    launch.write_text(json.dumps({"steps": -1}))
    monkeypatch.setenv("PLTRAIN_CONFIG", str(launch))
    with pytest.raises(ValueError, match="steps must be an integer ≥ 0"):
        pltrain.attach(model, units=[("left", model.w0), ("right", model.w1)], probe=(x, y), run_dir=str(tmp_path / "run3"))
    # A field out of range in the file is reported against the file, even where the script's config= is fine.
    for bad, message in (({"monitor": {"damping": 2}}, r"monitor.damping must be in \(0, 1\], got 2"), ({"monitor": {"damping": 0}}, r"monitor.damping must be in \(0, 1\], got 0"),
                         ({"monitor": "fast"}, "monitor must be an object"), ([1, 2], "not a JSON object")):
        launch.write_text(json.dumps(bad))
        with pytest.raises(ValueError, match="PLTRAIN_CONFIG=.*mine.pltrain.json: .*" + message):
            pltrain.attach(model, units=[("left", model.w0), ("right", model.w1)], probe=(x, y), run_dir=str(tmp_path / "run4"),
                           config={"monitor": {"damping": 1e-3}})
        assert not os.path.exists(tmp_path / "run4"), "nothing written for a refused config"
