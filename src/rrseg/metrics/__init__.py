"""Segmentation metrics: a mergeable confusion matrix, per-class figures and frequency groups."""

from rrseg.metrics.confusion import ConfusionMatrix, SegMetrics
from rrseg.metrics.groups import GROUP_NAMES, frequency_groups, group_summary

__all__ = ["GROUP_NAMES", "ConfusionMatrix", "SegMetrics", "frequency_groups", "group_summary"]
