"""Offline tools built on the training engine: score saved predictions, compare runs, base-vs-RR experiments and
their plots, and the demo. Training itself (trainer, config, checkpoints, evaluation) is :mod:`rrseg.engine`."""
