"""PL Trainer's PyTorch engine: the same protocol (docs/protocol.md), run directory and steering as
the TensorFlow.js trainer (src/trainer), for CUDA GPUs. `python -m pltrain --config FILE`."""

from .attach import StopTraining, attach  # noqa: E402,F401 — the API for your own loop (docs/pytorch.md)
