"""Training: config, components, the trainer loop and its callbacks, checkpoints, evaluation, inference models.
Offline tools that use it (scoring, comparisons, experiments, the demo) are in :mod:`rrseg.tools`."""
