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


SETTINGS = {"enabled": True, "warmup": 10, "every": 5, "budget": 0.5, "threshold": 0.5, "gateLearningRate": 0.05, "kappaFactor": 2}


def stats(kappas):
    return [{"id": i, "mu": 1 / k, "lf": 1.0, "kappa": k, "frozen": False, "pruned": False} for i, k in enumerate(kappas)]


def test_pruner_gradient_matches_central_differences():
    p = GatingPruner(4, SETTINGS, 3)
    p.observe(stats([1, 2, 50, 3]), set(), set())
    ids = [0, 1, 2, 3]
    _, grad = p.loss_and_gradient(ids)
    h = 1e-6
    for k in range(0, len(p.w), 7):
        w0 = p.w[k]
        p.w[k] = w0 + h
        lp, _ = p.loss_and_gradient(ids)
        p.w[k] = w0 - h
        lm, _ = p.loss_and_gradient(ids)
        p.w[k] = w0
        assert grad[k] == pytest.approx((lp - lm) / (2 * h), rel=1e-4, abs=1e-9)


def test_pruner_closes_the_ill_conditioned_unit_within_the_budget_never_a_frozen_one():
    p = GatingPruner(4, SETTINGS, 1)
    for _ in range(30):
        p.observe(stats([1, 1.2, 1e4, 1e4]), {3}, set())
    assert p.is_decision_step(10) and p.is_decision_step(15) and not p.is_decision_step(12) and not p.is_decision_step(5)
    decided = p.decide({3}, set())
    assert decided == [2]
    assert p.decide({3}, {0, 2}) == []  # the budget (2 of 4) is spent
    state = p.get_state()
    q = GatingPruner(4, SETTINGS, 9)
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


def test_share_ema_flags_an_inactive_unit_and_its_recovery_once_each():
    from pltrain.train import Activity, participation

    assert participation([0.25] * 4) == pytest.approx(4.0)
    assert participation([1.0, 0, 0]) == pytest.approx(1.0)
    a = Activity(4)  # threshold 1/40
    assert a.observe(0, 0.01) is False  # the first record sets the EMA
    assert a.changes() == [(0, False, 0.01)]
    for _ in range(5):
        a.observe(0, 0.01)
    assert a.changes() == []
    flips = []
    for k in range(100):
        a.observe(0, 0.5)
        flips += a.changes()
    assert len(flips) == 1 and flips[0][1] is True and flips[0][2] >= 0.025
    # 0.95^k·0.01 + (1 − 0.95^k)·0.5 ≥ 1/40 from the first update on
    assert a.ema[0] == pytest.approx(0.5, rel=0.01)
