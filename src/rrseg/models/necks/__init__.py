"""Necks between a backbone and a decode head."""

from rrseg.models.necks.feature2pyramid import Feature2Pyramid

__all__ = ["Feature2Pyramid"]
