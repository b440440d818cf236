"""PL Trainer's PyTorch engine: the same protocol (docs/protocol.md), run directory and steering as
the TensorFlow.js trainer (src/trainer), for CUDA GPUs. `python -m pltrain --config FILE`."""
