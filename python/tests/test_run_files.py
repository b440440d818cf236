"""Steering rules, the event log's resume, checkpoints and the pruner (pure parts of the engine)."""
import json
import os

import numpy as np
import pytest

from pltrain.checkpoint import load_checkpoint, save_checkpoint
from pltrain.events import EventLog
from pltrain.pruning import DampingFloorWatch, GatingPruner
from pltrain.steering import SteeringState


def test_steering_rules_and_reasons():
    s = SteeringState(3, 0.1, [2], "head")
    for cid, c in [("p", {"kind": "pause"}), ("p", {"kind": "resume"}), ("p2", {"kind": "pause"}), ("f9", {"kind": "freeze", "unit": 9}),
                   ("f0", {"kind": "freeze", "unit": 0}), ("f1", {"kind": "freeze", "unit": 1}), ("u1", {"kind": "unfreeze", "unit": 1}),
                   ("a", {"kind": "setAlpha", "alpha": -1}), ("r", {"kind": "resume"}), ("s", {"kind": "stop"}), ("late", {"kind": "pause"})]:
        s.enqueue(cid, c)
    got = [(cid, status, reason) for cid, _, status, reason in s.drain()]
    assert got == [
        ("p", "applied", None),
        ("p", "rejected", "duplicate command id p"),
        ("p2", "rejected", "already paused"),
        ("f9", "rejected", "head 9 does not exist (the model has 3: 0…2)"),
        ("f0", "applied", None),
        ("f1", "rejected", "cannot freeze every head: at least one must stay trainable"),
        ("u1", "rejected", "head 1 is not frozen"),
        ("a", "rejected", "α must be ≥ 0 (got -1)"),
        ("r", "applied", None),
        ("s", "applied", None),
        ("late", "rejected", "the run is stopping"),
    ]
    assert s.trainable() == [1] and s.stop_requested and not s.paused


def test_event_log_resume_keeps_the_checkpointed_history_and_never_reuses_seqs(tmp_path):
    log = EventLog(str(tmp_path))
    log.emit({"type": "hello"})
    for step in range(1, 6):
        log.emit({"type": "metrics", "step": step})
    log.emit({"type": "ack", "commandId": "a"})
    log.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"type": "metr')  # a kill -9 mid-line
    resumed = EventLog.resume(str(tmp_path), 3)
    assert [e["seq"] for e in resumed.history] == [0, 1, 2, 3]
    assert resumed.next == 7
    kept = [json.loads(l)["step"] for l in open(tmp_path / "metrics.jsonl")]
    assert kept == [1, 2, 3]
    discarded = open(tmp_path / "metrics.discarded.jsonl").read().splitlines()
    assert len(discarded) == 3 and discarded[-1] == '{"type": "metr'
    assert [json.loads(l)["commandId"] for l in open(tmp_path / "commands.discarded.jsonl")] == ["a"]
    assert [e["seq"] for e in resumed.since(1)] == [2, 3]


def test_checkpoint_roundtrip_and_the_old_copy(tmp_path):
    progress = {"step": 7, "seq": 9, "alpha": 0.3, "frozen": [1], "pruned": [], "time": 1}
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    save_checkpoint(str(tmp_path), progress, [("var:w", a), ("opt:g:0", np.asarray(3.0, dtype=np.float32))])
    got, tensors = load_checkpoint(str(tmp_path))
    assert got == progress
    np.testing.assert_array_equal(tensors["var:w"], a)
    assert float(tensors["opt:g:0"]) == 3.0
    # A crash between the two renames leaves only checkpoint.old: still found.
    os.rename(tmp_path / "checkpoint", tmp_path / "checkpoint.old")
    assert load_checkpoint(str(tmp_path))[0]["step"] == 7
    assert load_checkpoint(str(tmp_path / "nothing")) is None


SETTINGS = {"enabled": True, "warmup": 10, "anneal": 20, "budget": 0.5, "exact": False, "kappaFactor": 2, "keepCost": 0.05, "gateLearningRate": 0.05}


def stats(kappas, shares=None):
    return [{"id": i, "mu": 1 / k, "lf": 1.0, "kappa": k, "frozen": False, "pruned": False, **({"share": shares[i]} if shares else {})} for i, k in enumerate(kappas)]


def test_pruner_gradient_matches_central_differences():
    p = GatingPruner(4, SETTINGS, 3)
    p.observe(stats([1, 2, 50, 3], [0.4, 0.3, 0.1, 0.2]), [1.0, 2.0, 0.5, 1.5], set())
    sample = ([0.3, -0.2, 1.1, -0.7], 0.5)
    grad_m = [0.2, -0.1, 0.05, 0.3]
    _, grad = p.loss_and_gradient(grad_m, {3}, set(), sample)
    h = 1e-6
    for k in range(0, len(p.w), 5):
        w0 = p.w[k]
        p.w[k] = w0 + h
        lp, _ = p.loss_and_gradient(grad_m, {3}, set(), sample)
        p.w[k] = w0 - h
        lm, _ = p.loss_and_gradient(grad_m, {3}, set(), sample)
        p.w[k] = w0
        assert grad[k] == pytest.approx((lp - lm) / (2 * h), rel=1e-5, abs=1e-9)


def test_pruner_schedule_masks_and_final_decisions():
    p = GatingPruner(4, dict(SETTINGS, exact=True), 1)
    assert not p.in_anneal(9) and p.in_anneal(10) and p.in_anneal(29) and not p.in_anneal(30)
    assert p.is_decision_step(30) and not p.is_decision_step(20)
    assert p.temperature(10) == pytest.approx(1.0) and p.temperature(29) == pytest.approx(0.05)
    assert p.sample_mask(12, {0}, set()) is None  # no measurement yet: unmasked
    p.observe(stats([1, 1.2, 1e4, 3]), [1, 1, 1, 1], set())
    mask = p.sample_mask(12, {0}, {1})
    assert mask[0] == 1.0 and mask[1] == 0.0 and all(1e-3 <= m <= 1 for m in mask[2:])
    # A unit whose mask lowers the task loss when it closes (positive ∂L/∂m) is pushed out.
    for step in range(10, 30):
        if p.sample_mask(step, {0}, set()) is not None:
            p.update([0.0, -1.0, 1.0, -1.0], {0}, set())
    keep = p.decision_keep_probabilities({0}, set())
    assert keep[0] == 1.0 and keep[2] < keep[1] and keep[2] < keep[3]
    decided = p.decide({0}, set())
    assert len(decided) == 2 and 0 not in decided and decided[0] == 2  # exact: the budget's two, lowest first
    state = p.get_state()
    q = GatingPruner(4, dict(SETTINGS, exact=True), 9)
    q.set_state(state)
    assert q.get_state() == state


def test_damping_floor_watch_reports_each_episode_once():
    w = DampingFloorWatch(0.02)
    floor = lambda k, frozen=False: [{"id": 0, "kappa": k, "mu": 0, "lf": 1, "frozen": frozen, "pruned": False}]
    assert [len(x) for x in w.observe(floor(50.0))] == [1, 0]
    assert [len(x) for x in w.observe(floor(50.0))] == [0, 0]
    assert [len(x) for x in w.observe(floor(10.0))] == [0, 1]
    assert [len(x) for x in w.observe(floor(50.0))] == [1, 0]
    assert [len(x) for x in w.observe(floor(50.0, frozen=True))] == [0, 1]


def test_share_watch_normalizes_flags_an_inactive_unit_once_and_its_recovery():
    from pltrain.train import ShareWatch, participation

    assert participation([0.25] * 4) == pytest.approx(4.0)
    assert participation([2.0, 0, 0]) == pytest.approx(1.0)
    w = ShareWatch(4)  # threshold 1/40
    w.observe([0.01, 0.33, 0.33, 0.33])
    assert w.take_participation() == pytest.approx(1 / (0.01 ** 2 + 3 * 0.33 ** 2)) and w.take_participation() is None
    units = [{"id": i, "kappa": 2.0} for i in range(4)]
    stats = w.annotate(units, set())
    assert [u["active"] for u in stats] == [False, True, True, True] and stats[0]["share"] == pytest.approx(0.01)
    assert w.changes(stats) == [(0, False, pytest.approx(0.01))]
    assert w.changes(w.annotate(units, set())) == []
    assert w.annotate(units, {0})[0]["active"] is True  # a pruned unit is not flagged
    flips = []
    for _ in range(100):
        w.observe([0.25] * 4)
        flips += w.changes(w.annotate(units, set()))
    assert len(flips) == 1 and flips[0][:2] == (0, True)


def test_progress_due_says_exactly_when_update_prints():
    """The step loop builds the progress figures only when Progress.due says update() would print: the
    same decision, for a log (a line every 5 % and at the end) and a live terminal line."""
    import io

    from pltrain.progress import Progress

    for live in (False, True):
        out = io.StringIO()
        progress = Progress(out, live=live)
        lines = 0
        for step in range(1, 301):
            due = progress.due(step, 300)
            before = out.getvalue()
            progress.update({"step": step, "totalSteps": 300, "loss": 0.5, "meanKappa": 3.0, "stepsPerSec": 100.0, "accuracy": 0.5})
            printed = out.getvalue() != before
            assert due == printed, (live, step)
            lines += printed
        # A log: the first line, one per 5 %, the last; live: at least the first and the last.
        assert lines == 21 if not live else lines >= 2


def test_grad_norm_squared_is_the_float64_sum_of_squares():
    """The step's ‖g‖² (plRatio) from one multi-tensor norm, squared and summed on the host, against Σ g²
    in float64: mixed sizes, one large, small ones, and zeros."""
    import torch

    from pltrain.train import grad_norm_squared

    gen = torch.Generator().manual_seed(5)
    big = [torch.randn(196, 256, generator=gen), torch.randn(1 << 14, generator=gen) * 1e-3]
    small = [torch.randn(10, generator=gen) * 50, torch.randn(3, 4, generator=gen), torch.zeros(7)]
    for grads in (big + small, big[:1], small, [torch.zeros(5), torch.zeros(1 << 14)]):
        expected = sum(float((g.double() ** 2).sum()) for g in grads)
        got = grad_norm_squared(grads)
        assert got == pytest.approx(expected, rel=1e-6, abs=1e-30)
