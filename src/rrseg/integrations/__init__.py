"""Region Rebalance for models people already train.

- ``rrseg.integrations.smp``: ``RRWrapper`` for segmentation_models_pytorch models.
- ``rrseg.integrations.transformers``: ``region_rebalance_for``, ``compute_loss`` and ``RRTrainer`` for HF
  UperNet, BEiT and Segformer (and other models with ``classifier=``); needs ``transformers``.
- ``rrseg.integrations.common``: ``capture_input`` (a classifier's input via a forward hook), ``RROutput``,
  ``save_rr`` / ``load_rr`` (the RR branch, kept apart from the model's checkpoint).

Plain PyTorch needs none of these: ``rrseg.rebalance.RegionRebalance(features, labels)`` is the loss term.
The submodules are imported on demand, so ``import rrseg.integrations`` pulls in no framework.
"""
