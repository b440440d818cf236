"""An ordinary PyTorch training loop (a small mixture of experts on the built-in Fashion-MNIST subset)
with PL Trainer attached: the five lines marked `# PL Trainer (k/5)` are all that was added
(docs/pytorch.md). Run it in a terminal (it prints PLTRAIN_LISTENING and VS Code attaches through its
run directory) or from examples/attach.pltrain.json ("script": "train_attach.py") with Start.

    PYTHONPATH=python /usr/bin/python3 examples/train_attach.py --steps 300
"""
import argparse

import torch
import torch.nn.functional as F

import pltrain  # PL Trainer (1/5)
from pltrain.data import load_builtin


class MixtureOfExperts(torch.nn.Module):
    def __init__(self, features, classes, experts=4, hidden=32):
        super().__init__()
        self.gate = torch.nn.Linear(features, experts)
        self.experts = torch.nn.ModuleList(torch.nn.Sequential(torch.nn.Linear(features, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, classes)) for _ in range(experts))

    def routing(self, x):
        return torch.softmax(self.gate(x), dim=1)

    def forward(self, x):
        p = self.routing(x)
        return sum(p[:, e:e + 1] * expert(x) for e, expert in enumerate(self.experts))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    args = parser.parse_args()

    torch.manual_seed(1)
    data = load_builtin()
    train_x, train_y = torch.from_numpy(data.train_x), torch.from_numpy(data.train_y)
    model = MixtureOfExperts(data.features, data.classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)

    run = pltrain.attach(model, units=[(f"expert {e}", m) for e, m in enumerate(model.experts)], probe=(train_x[:16], train_y[:16]), router=model.routing, unit_name="expert", total_steps=args.steps, config={"alpha": 0.01, "name": "train-attach"})  # PL Trainer (2/5)
    # run.total_steps: --steps, or the config's `steps` when VS Code started this script from one.
    for step in range(run.total_steps):
        idx = torch.randint(0, train_x.shape[0], (args.batch_size,))
        x, y = train_x[idx], train_y[idx]
        optimizer.zero_grad()
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        accuracy = (logits.argmax(dim=1) == y).float().mean().item()
        loss = loss + run.alpha * run.regularizer()  # PL Trainer (3/5)
        loss.backward()
        optimizer.step()
        if not run.step(loss=loss, metrics={"accuracy": accuracy}, inputs=x):  # PL Trainer (4/5)
            break
    run.close()  # PL Trainer (5/5)
    with torch.no_grad():
        test_accuracy = (model(torch.from_numpy(data.test_x)).argmax(dim=1) == torch.from_numpy(data.test_y)).float().mean().item()
    print(f"test accuracy {test_accuracy * 100:.2f}% after {run.step_count} steps")


if __name__ == "__main__":
    main()
