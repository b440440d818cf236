"""One rank of the DDP test (test_ddp.py): a two-head MLP under DistributedDataParallel (gloo, CPU),
steered through pltrain.attach. Rank r trains on its own batches; after every step it records α, the
frozen set and a digest of every parameter; at the end it writes them to <out>/rank<r>.json."""
import faulthandler
import hashlib
import signal
import json
import os
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import pltrain  # noqa: E402


class TwoHeads(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = torch.nn.Linear(8, 16)
        self.head0 = torch.nn.Linear(8, 4)
        self.head1 = torch.nn.Linear(8, 4)

    def forward(self, x):
        h = torch.tanh(self.inp(x))
        return self.head0(h[:, :8]) + self.head1(h[:, 8:])


def digest(t):
    return hashlib.sha256(t.detach().contiguous().numpy().tobytes()).hexdigest()[:16]


def main():
    faulthandler.register(signal.SIGUSR1)
    out, run_dir = sys.argv[1], sys.argv[2]
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)  # the same initial weights on every rank (DDP also broadcasts them)
    inner = TwoHeads()
    model = torch.nn.parallel.DistributedDataParallel(inner)
    gen = torch.Generator().manual_seed(100 + rank)  # each rank its own data
    probe_x = torch.randn(8, 8, generator=torch.Generator().manual_seed(7))
    probe_y = torch.arange(8) % 4
    run = pltrain.attach(model, units=[("head 0", inner.head0), ("head 1", inner.head1)], probe=(probe_x, probe_y),
                         run_dir=run_dir if rank == 0 else None, config={"alpha": 0.0, "monitor": {"every": 5, "damping": 1e-3}}, unit_name="head")
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    records = []
    for _ in range(100000):
        x = torch.randn(16, 8, generator=gen)
        y = torch.randint(0, 4, (16,), generator=gen)
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        if run.alpha > 0:
            loss = loss + run.alpha * run.regularizer()
        loss.backward()
        opt.step()
        go = run.step(loss=loss)
        records.append({"step": run.step_count, "alpha": run.alpha, "frozen": sorted(run.frozen), "params": {n: digest(p) for n, p in inner.named_parameters()}})
        if not go:
            break
        time.sleep(0.005)
    run.close()
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(records, f)
    dist.destroy_process_group()
    sys.stdout.flush()
    # The records are written; skip interpreter teardown, where torch 1.13's gloo threads were seen to
    # hang (no Python frame left, faulthandler) once in a few runs.
    os._exit(0)


if __name__ == "__main__":
    import time

    main()
