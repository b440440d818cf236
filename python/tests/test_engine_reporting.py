"""What the engine reports per step, from real runs (Trainer.run, as `python -m pltrain` runs it): plRatio
(docs/method.md item 11, f* = 0) = ½‖∇f‖²/f of the gradients the step's Adam update used, on monitor
steps only (the steps whose metrics carry `units`) with no pass over the gradients on the others; the
same lines whichever way the figures are read back; with logEvery > 1, the same lines on fewer steps."""
import asyncio
import json
import os

import pytest
import torch

from pltrain import config as cfg
from pltrain import train
from pltrain.train import Trainer


@pytest.mark.parametrize("alpha", [0.0, 0.05])
def test_pl_ratio_on_monitor_steps_equals_the_float64_gradient_norm_of_the_same_step(tmp_path, monkeypatch, alpha):
    squared_norms = []  # per optimizer step: Σ‖g‖² in float64 over the gradients Adam is about to use

    class RecordingAdam(torch.optim.Adam):
        def step(self, closure=None):
            squared_norms.append(sum(float((p.grad.double() ** 2).sum()) for g in self.param_groups for p in g["params"] if p.grad is not None))
            return super().step(closure)

    passes = []  # the steps on which the engine read the gradients for ‖g‖²
    terms = train.grad_norm_squared_terms

    def counted(grads):
        passes.append(len(squared_norms) + 1)
        return terms(grads)

    monkeypatch.setattr(torch.optim, "Adam", RecordingAdam)
    monkeypatch.setattr(train, "grad_norm_squared_terms", counted)
    steps, every = 11, 4
    config = cfg.resolve({"engine": "pytorch", "device": "cpu", "steps": steps, "alpha": alpha, "batchSize": 32, "logEvery": 1,
                          "monitor": {"every": every}, "checkpointEvery": 0})
    run_dir = str(tmp_path / "run")
    assert asyncio.run(Trainer(config, str(tmp_path), run_dir).run()) == "completed"
    with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as f:
        metrics = [json.loads(line) for line in f]

    monitor_steps = [4, 8, 11]  # every 4th and the last
    assert [m["step"] for m in metrics] == list(range(1, steps + 1))
    assert [m["step"] for m in metrics if "units" in m] == monitor_steps
    assert [m["step"] for m in metrics if "plRatio" in m] == monitor_steps
    assert passes == monitor_steps
    assert len(squared_norms) == steps
    for m in metrics:
        if "plRatio" in m:
            expected = 0.5 * squared_norms[m["step"] - 1] / m["loss"]
            assert expected > 0
            assert m["plRatio"] == pytest.approx(expected, rel=1e-5)


def _run_metrics(tmp_path, name, config, progress=None):
    run_dir = str(tmp_path / name)
    assert asyncio.run(Trainer(config, str(tmp_path), run_dir, progress=progress).run()) == "completed"
    with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as f:
        return [{k: v for k, v in json.loads(line).items() if k not in ("time", "stepsPerSec")} for line in f]


@pytest.mark.parametrize("alpha", [0.0, 0.05])
def test_figures_read_one_by_one_equal_the_one_transfer_read(tmp_path, monkeypatch, alpha):
    """The CPU reads each reported figure on its own; CUDA reads them all in one transfer (a sync per read
    would cost more there). Both ways give the same metrics lines, shares and participation included;
    the one-transfer path is taken here on the CPU."""
    config = cfg.resolve({"engine": "pytorch", "device": "cpu", "steps": 12, "alpha": alpha, "batchSize": 32, "logEvery": 1,
                          "model": {"experts": 3}, "monitor": {"every": 5}, "checkpointEvery": 0})
    one_by_one = _run_metrics(tmp_path, "host", config)
    monkeypatch.setattr(train, "reads_each_figure", lambda device: False)
    one_transfer = _run_metrics(tmp_path, "transfer", config)
    assert [m["step"] for m in one_by_one] == list(range(1, 13))
    assert all("participation" in m for m in one_by_one)
    assert one_by_one == one_transfer


def test_with_log_every_above_one_the_lines_sent_carry_the_same_figures(tmp_path, monkeypatch):
    """logEvery 3: metrics lines on every 3rd step and on monitor steps only, and the task metric computed
    only on those steps and where the progress line prints; the lines sent equal a logEvery-1 run's lines
    of the same steps (same seed)."""
    import io

    from pltrain.progress import Progress

    config = cfg.resolve({"engine": "pytorch", "device": "cpu", "steps": 12, "alpha": 0.0, "batchSize": 32, "logEvery": 1,
                          "model": {"experts": 3}, "monitor": {"every": 5}, "checkpointEvery": 0})
    every_step = {m["step"]: m for m in _run_metrics(tmp_path, "every", config)}

    class RecordingProgress(Progress):
        def due(self, step, total):
            due = super().due(step, total)
            if due:
                printed.add(step)
            return due

    printed, argmax_steps = set(), []
    real_argmax = torch.Tensor.argmax

    def argmax(self, *args, **kwargs):
        if self.shape[0] == 32:  # a training batch's logits (the test set is read in chunks of 500)
            argmax_steps.append(1)
        return real_argmax(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "argmax", argmax)
    sparse = _run_metrics(tmp_path, "sparse", dict(config, logEvery=3), RecordingProgress(io.StringIO(), live=True))
    lines = [3, 5, 6, 9, 10, 12]
    assert [m["step"] for m in sparse] == lines
    without_seq = lambda m: {k: v for k, v in m.items() if k != "seq"}  # noqa: E731
    assert [without_seq(m) for m in sparse] == [without_seq(every_step[m["step"]]) for m in sparse]
    assert 12 in printed and len(set(lines) | printed) < 12
    assert len(argmax_steps) == len(set(lines) | printed)
