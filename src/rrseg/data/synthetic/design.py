"""The class design: how often each class appears, how big its regions are, how it looks; and which classes
each image gets. It depends only on the number of classes and images, never on the seed."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rrseg.errors import RRSegError

DEFAULTS = {"num_classes": 30, "num_train": 1200, "num_val": 300, "size": (128, 96)}
IGNORE = 255
MIN_TRAIN_IMAGES = 10  # the rarest class appears in this many training images ...
MIN_VAL_IMAGES = 5  # ... and this many validation images (when the splits are big enough)
TOP_FRACTION = 0.92  # share of training images that contain the most frequent class
ADE20K_RATIO = 283  # max / min image count of ADE20K's 150 classes
CURVE_POWER = 0.8  # log-count falls as rank**0.8: ADE20K's concave curve (rank**0.6 .. 0.8)
STUFF_AREA = (0.10, 0.65)  # range of the mean image share of a stuff region ...
THING_AREA = (0.008, 0.06)  # ... and of a thing class (summed over its instances)
SIZE_RARITY = 0.7  # how much region size follows rarity within a kind (0: random, 1: by rank only)
CLUTTER_AREA = 0.06  # mean share of an image left unlabelled (255), like ADE20K's "other"
_DESIGN_SEED = 20240417  # fixed: the class design does not change with --seed

_STUFF_NAMES = (
    "wall", "floor", "sky", "grass", "road", "ceiling", "water", "tree", "sand", "mountain", "carpet",
    "field", "snow", "tile", "earth", "rock", "curtain", "fence", "hill", "river", "path", "marble", "brick",
    "gravel", "mud", "ice", "cloud", "hedge", "plank", "roof", "dune", "reef", "moor", "bog", "slate",
)
_THING_NAMES = (
    "person", "car", "chair", "lamp", "box", "sign", "cup", "ball", "bottle", "book", "clock", "vase", "bag",
    "flag", "plate", "kite", "shoe", "hat", "toy", "drum", "fan", "bell", "coin", "key", "leaf", "shell",
    "egg", "bowl", "pot", "jar", "star", "gem", "bead", "nut", "cone",
)
_TEXTURES = ("stripes", "checks", "dots", "mottle", "grain", "gradient")
_SHAPES = ("ellipse", "rectangle", "triangle", "blob", "diamond")
# The pretraining set's textures: another family, so that no pretraining class shares a design with the demo's.
PRETRAIN_TEXTURES = ("rings", "waves", "zigzag", "hatch", "bricks")


@dataclass(frozen=True)
class ClassDesign:
    """One synthetic class: how often it appears, how big its regions are, and how it looks."""

    name: str
    kind: str  # "stuff" (large regions forming the background) or "thing" (small objects on top)
    train_images: int
    val_images: int
    area: float  # mean share of the image covered by the class where it appears
    color1: tuple[float, float, float]  # HSV in [0, 1]
    color2: tuple[float, float, float]
    texture: str
    period: float  # texture period in pixels
    angle: float  # texture angle in degrees
    shape: str  # things: outline of an instance
    vpos: float  # stuff: vertical preference (-1 top .. +1 bottom)
    twin_of: int | None = None  # a rare look-alike of this (frequent) class


def _curve(num_classes: int, top: int, bottom: int) -> np.ndarray:
    """Image counts from ``top`` down to ``bottom`` along a concave log curve (ADE20K's shape)."""
    if num_classes == 1:
        return np.array([top])
    x = np.arange(num_classes) / (num_classes - 1)
    counts = np.exp(np.log(top) - x**CURVE_POWER * (np.log(top) - np.log(bottom)))
    return np.maximum(np.round(counts).astype(np.int64), bottom)


def _twin_pairs(num_classes: int) -> list[tuple[int, int]]:
    """(frequent class, rare look-alike) pairs: about one class in five is a look-alike of a top-10 class."""
    n = min(10, max(1, num_classes // 5)) if num_classes >= 6 else 0
    originals = [1, 0, 3, 2, 5, 4, 7, 6, 9, 8][:n]
    # the look-alikes sit in the tail, spread over its last 40 %
    tail = np.linspace(num_classes - 1, round(num_classes * 0.6), n).round().astype(int).tolist()
    return list(zip(originals, tail))


def design_classes(
    num_classes: int = DEFAULTS["num_classes"],
    num_train: int = DEFAULTS["num_train"],
    num_val: int = DEFAULTS["num_val"],
) -> list[ClassDesign]:
    """The class table, most frequent class first; depends on the arguments only (not on the seed)."""
    if num_classes < 2:
        raise RRSegError(f"a synthetic dataset needs at least 2 classes, got {num_classes}")
    if num_classes > 254:
        raise RRSegError(f"at most 254 classes fit an 8-bit label with 255 = ignore, got {num_classes}")
    if num_train < 1 or num_val < 0:
        raise RRSegError(f"need at least 1 training image and 0 or more validation images, got {num_train}/{num_val}")
    rng = np.random.default_rng(_DESIGN_SEED)
    top = max(1, round(TOP_FRACTION * num_train))
    bottom = max(min(MIN_TRAIN_IMAGES, top), math.ceil(top / ADE20K_RATIO))
    train_counts = _curve(num_classes, top, bottom)
    val_counts = np.minimum(
        np.maximum(np.round(train_counts * num_val / num_train).astype(np.int64), MIN_VAL_IMAGES), num_val
    )
    twins = dict((t, o) for o, t in _twin_pairs(num_classes))

    # Kinds: half stuff, half things, interleaved over all frequencies (golden-ratio sequence). Region size
    # grows with rarity within each kind (ADE20K: frequent small things such as lamps, rare large stuff such
    # as runways), which brings the image/pixel rank correlation down to ADE20K's ~0.6.
    kinds = ["stuff" if (r * 0.618034) % 1.0 < 0.5 else "thing" for r in range(num_classes)]
    kinds[0] = "stuff"  # the most frequent class is background stuff (ADE20K: wall)
    for t, o in twins.items():
        kinds[t] = kinds[o]

    # Hues spread evenly (golden-angle order) so that frequent classes differ in colour; value/saturation
    # levels make more distinct looks; textures and periods cycle.
    designs: list[ClassDesign] = []
    stuff_i = thing_i = 0
    for r in range(num_classes):
        kind = kinds[r]
        if kind == "stuff":
            name = _STUFF_NAMES[stuff_i % len(_STUFF_NAMES)] + ("" if stuff_i < len(_STUFF_NAMES) else str(stuff_i))
            stuff_i += 1
            lo, hi = STUFF_AREA
        else:
            name = _THING_NAMES[thing_i % len(_THING_NAMES)] + ("" if thing_i < len(_THING_NAMES) else str(thing_i))
            thing_i += 1
            lo, hi = THING_AREA
        mix = SIZE_RARITY * r / max(1, num_classes - 1) + (1 - SIZE_RARITY) * rng.random()
        area = float(np.exp(np.log(lo) + (np.log(hi) - np.log(lo)) * mix))
        hue = (r * 0.381966 + 0.05) % 1.0
        sat = float(rng.choice([0.35, 0.55, 0.75]))
        val = float(rng.choice([0.45, 0.65, 0.85]))
        color1 = (hue, sat, val)
        color2 = ((hue + rng.uniform(-0.08, 0.08)) % 1.0, float(np.clip(sat + rng.uniform(-0.3, 0.3), 0.1, 1)),
                  float(np.clip(val + rng.choice([-0.3, 0.3]), 0.15, 1.0)))
        texture = _TEXTURES[(r * 5 + 1) % len(_TEXTURES)]
        period = float(rng.uniform(4.0, 12.0))
        angle = float(rng.uniform(0.0, 180.0))
        shape = _SHAPES[r % len(_SHAPES)]
        vpos = float(rng.uniform(-1.0, 1.0))
        twin_of = twins.get(r)
        if twin_of is not None:
            o = designs[twin_of]
            name = f"{o.name}-like" if f"{o.name}-like" not in [d.name for d in designs] else f"{o.name}-like{r}"
            area = o.area * float(rng.uniform(0.6, 1.4))
            color1 = ((o.color1[0] + 0.035) % 1.0, o.color1[1], o.color1[2])
            color2 = ((o.color2[0] + 0.035) % 1.0, o.color2[1], o.color2[2])
            texture, period, angle = _twin_texture(o.texture, o.period, o.angle)
            shape, vpos = o.shape, o.vpos
        designs.append(ClassDesign(
            name=name, kind=kind, train_images=int(train_counts[r]), val_images=int(val_counts[r]), area=area,
            color1=color1, color2=color2, texture=texture, period=period, angle=angle, shape=shape,
            vpos=vpos, twin_of=twin_of,
        ))
    return designs


def design_pretraining_classes(
    num_classes: int = 24, num_train: int = 2000, num_val: int = 200, classes_per_image: float = 5.0
) -> list[ClassDesign]:
    """A class-balanced table for pretraining, with no class design in common with ``design_classes``.

    Every class appears in the same number of images. Textures come from another family
    (``PRETRAIN_TEXTURES``: rings, waves, zigzag, hatch, bricks; the long-tailed set uses stripes, checks,
    dots, mottle, grain, gradient) and the two colours of a class are near-complementary (second hue about
    half a turn from the first; the long-tailed set's are within 0.08 of each other). Low-level primitives
    (colours, edges, periodic patterns, region shapes) are shared, as ImageNet shares them with ADE20K.
    """
    if num_classes < 2:
        raise RRSegError(f"a synthetic dataset needs at least 2 classes, got {num_classes}")
    rng = np.random.default_rng(_DESIGN_SEED + 1)
    per_class_train = max(1, min(num_train, round(num_train * classes_per_image / num_classes)))
    per_class_val = max(1, min(num_val, round(num_val * classes_per_image / num_classes))) if num_val else 0
    designs = []
    for r in range(num_classes):
        kind = "stuff" if r % 2 == 0 else "thing"
        lo, hi = STUFF_AREA if kind == "stuff" else THING_AREA
        hue = (r * 0.381966 + 0.3) % 1.0
        sat, val = float(rng.choice([0.4, 0.6, 0.8])), float(rng.choice([0.5, 0.7, 0.9]))
        designs.append(ClassDesign(
            name=f"pattern{r:02d}", kind=kind, train_images=per_class_train, val_images=per_class_val,
            area=float(np.exp(rng.uniform(np.log(lo), np.log(hi)))),
            color1=(hue, sat, val),
            color2=((hue + 0.5 + rng.uniform(-0.06, 0.06)) % 1.0, float(rng.uniform(0.3, 0.9)),
                    float(rng.uniform(0.3, 0.9))),
            texture=PRETRAIN_TEXTURES[r % len(PRETRAIN_TEXTURES)], period=float(rng.uniform(4.0, 12.0)),
            angle=float(rng.uniform(0.0, 180.0)), shape=_SHAPES[(r // 2) % len(_SHAPES)],
            vpos=float(rng.uniform(-1.0, 1.0)),
        ))
    return designs


def _twin_texture(texture: str, period: float, angle: float) -> tuple[str, float, float]:
    """One texture property changed: the cue that tells a look-alike from its frequent original."""
    if texture in ("stripes", "gradient"):
        return texture, period, (angle + 90.0) % 180.0
    if texture in ("checks", "dots", "mottle"):  # coarser or finer pattern
        return texture, period * (0.55 if period > 7 else 1.8), angle
    return "mottle", 3.0, angle  # grain -> a fine mottle: blotches of a few pixels instead of per-pixel noise


# ---- per-image assignment -------------------------------------------------------------------------------
def assign_classes(counts: Sequence[int], num_images: int, rng: np.random.Generator) -> list[list[int]]:
    """Which classes each image contains, with exactly ``counts[c]`` images per class (class 0 may gain a few
    so that no image is empty). Images differ in richness (some hold many classes, some few)."""
    richness = rng.lognormal(0.0, 0.5, num_images)
    load = np.zeros(num_images)
    members: list[list[int]] = [[] for _ in range(num_images)]
    order = sorted(range(len(counts)), key=lambda c: (counts[c], c))  # rarest first
    for c in order:
        n = min(int(counts[c]), num_images)
        if c == 0:  # the most frequent class fills every image left empty first
            empty = [i for i in range(num_images) if not members[i]]
            rest = [i for i in range(num_images) if members[i]]
            k = max(0, n - len(empty))
            p = richness[rest] / (1.0 + load[rest]) if rest else None
            extra = rng.choice(rest, size=min(k, len(rest)), replace=False, p=p / p.sum()) if k and rest else []
            chosen = list(empty) + [int(i) for i in extra]
        else:
            p = richness / (1.0 + 0.25 * load)
            chosen = rng.choice(num_images, size=n, replace=False, p=p / p.sum()).tolist()
        for i in chosen:
            members[i].append(c)
            load[i] += 1
    return [sorted(m) for m in members]


# ---- rendering ------------------------------------------------------------------------------------------
