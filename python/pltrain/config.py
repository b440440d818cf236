"""The training config with its defaults, as src/protocol/config.ts resolves it. `pltrain --config`
(Node) validates every rule before it starts this engine; run on its own (`python -m pltrain`), the
engine fills the same defaults and refuses what it cannot run, naming the field."""
import copy
import json
import re

DEFAULTS = {
    "name": "pl-run",
    "model": {"family": "moe-mlp", "experts": 4, "dModel": 32, "layers": 2, "contextLength": 32, "opt": False},
    "data": {"source": "builtin", "maxTrainExamples": 0},
    "steps": 300,
    "batchSize": 64,
    "learningRate": 0.003,
    "seed": 1,
    "alpha": 0.01,
    "monitor": {"every": 10, "probeSize": 16, "damping": 1e-6, "lipschitz": "tangent-kernel"},
    "pruning": {"enabled": False, "warmup": 100, "anneal": 200, "budget": 0.5, "exact": False, "kappaFactor": 10, "keepCost": 0.05, "gateLearningRate": 0.02},
    "frozenExperts": [],
    "backend": "auto",
    "engine": "tfjs",
    "device": "auto",
    "checkpointEvery": 200,
    "logEvery": 1,
}
# The families this engine trains (all four).
FAMILIES = ("moe-mlp", "vgg", "bert-encoder", "switch-transformer")


class ConfigError(Exception):
    def __init__(self, problems):
        super().__init__("; ".join(problems))
        self.problems = problems


def resolve(raw):
    """Defaults filled in (the same resolved config the TypeScript schema produces)."""
    if not isinstance(raw, dict):
        raise ConfigError(["(root): Expected object"])
    c = copy.deepcopy(DEFAULTS)
    for k, v in raw.items():
        if k not in c and k != "$schema":
            raise ConfigError([f'{k}: unknown field "{k}"'])
        if isinstance(c.get(k), dict):
            if not isinstance(v, dict):
                raise ConfigError([f"{k}: Expected object"])
            c[k].update(v)
        else:
            c[k] = v
    c.pop("$schema", None)
    m = c["model"]
    m.setdefault("hiddenUnits", 4 if m["family"] == "vgg" else 32)
    problems = []
    if c["engine"] != "pytorch":
        problems.append('engine: this is the PyTorch engine; the config says "engine": "%s"' % c["engine"])
    if m["family"] not in FAMILIES:
        problems.append(f'model.family: {m["family"]} is not a model family (it trains {", ".join(FAMILIES)})')
    if (m["family"] == "switch-transformer") != (c["data"]["source"] == "text"):
        problems.append('data.source: the switch-transformer language model trains on text: set data.source to "text"' if m["family"] == "switch-transformer" else f'data.source: text data needs model.family "switch-transformer" ({m["family"]} classifies images)')
    if m.get("opt"):
        problems.append("model.opt: OPT mode is implemented in the tfjs engine only, not the pytorch engine")
    if c["monitor"]["lipschitz"] != "tangent-kernel":
        problems.append(f'monitor.lipschitz: the {c["monitor"]["lipschitz"]} L_f is implemented in the tfjs engine only; the pytorch engine uses tangent-kernel')
    if not isinstance(c["device"], str) or not re.match(r"^(auto|cpu|cuda|cuda:\d{1,2})$", c["device"]):
        problems.append('device: device must be "auto", "cpu", "cuda" or "cuda:N"')
    if not (isinstance(m["experts"], int) and 2 <= m["experts"] <= 64):
        problems.append("model.experts: must be an integer from 2 to 64")
    for i, e in enumerate(c["frozenExperts"]):
        if not isinstance(e, int) or e < 0 or e >= m["experts"]:
            problems.append(f"frozenExperts[{i}]: unit {e} does not exist")
    if problems:
        raise ConfigError(problems)
    return c


def load(path, steps=None):
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    if steps is not None and isinstance(raw, dict):
        raw["steps"] = steps
    return resolve(raw)
