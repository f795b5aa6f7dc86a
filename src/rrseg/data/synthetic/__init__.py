"""A synthetic long-tailed segmentation dataset shaped after ADE20K's class statistics.

``make_synthetic(OUT)`` writes the generic folder layout (``dataset.yaml``, ``images/{train,val}/*.jpg``,
``labels/{train,val}/*.png``) plus ``counts.json`` (the training split's class counts, as ``rrseg stats``
writes them) and ``synthetic.json`` (the statistics below). What makes it long-tailed like ADE20K:

- image counts fall along ADE20K's concave frequency curve (on a log scale), from ~92 % of the training
  images for the most frequent class down to 10 images for the rarest (>= 100x apart with the defaults);
  every class appears in at least 5 validation images;
- region size is a property of the class, not of its frequency: large "stuff" classes (wall, sky, ...) and
  small "thing" classes (cup, sign, ...) at every frequency, so that pixel counts and image counts rank the
  classes differently (Spearman ~0.6; ADE20K 0.63) and pixels per region spread over more than 30x;
- several classes per image (about 5 with the defaults; ADE20K about 8);
- appearance is learnable but not trivial: each class has two colours mixed by a texture (stripes, checks,
  dots, mottle, grain, gradient) with per-region variation of hue, brightness, period and angle, and
  per-image lighting, colour cast and sensor noise; several rare classes are look-alikes of frequent ones
  (a small hue shift and one different texture property), which a frequency-biased model confuses;
- a little unlabelled clutter (ignore, 255) as ADE20K's "other".

The class design (frequencies, kinds, sizes, looks) depends only on the number of classes and images; the
seed draws the images, which are byte-identical for a seed (same Pillow build), independent of ``workers``.
"""

from rrseg.data.stats import spearman
from rrseg.data.synthetic.design import (
    DEFAULTS,
    PRETRAIN_TEXTURES,
    ClassDesign,
    assign_classes,
    design_classes,
    design_pretraining_classes,
)
from rrseg.data.synthetic.render import render_image
from rrseg.data.synthetic.statistics import (
    check_statistics,
    format_statistics,
    long_tail_statistics,
    synthetic_statistics,
)
from rrseg.data.synthetic.writer import make_synthetic

__all__ = [
    "DEFAULTS",
    "PRETRAIN_TEXTURES",
    "ClassDesign",
    "assign_classes",
    "check_statistics",
    "design_classes",
    "design_pretraining_classes",
    "format_statistics",
    "long_tail_statistics",
    "make_synthetic",
    "render_image",
    "spearman",
    "synthetic_statistics",
]
