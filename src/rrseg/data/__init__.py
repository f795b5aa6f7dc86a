"""Datasets, transforms, label reading, class statistics and the synthetic long-tailed dataset."""
