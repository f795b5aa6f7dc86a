"""Rendering one image and its label from the class design: textures, shapes, lighting and noise."""

from __future__ import annotations

import colorsys
import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from rrseg.data.synthetic.design import CLUTTER_AREA, IGNORE, ClassDesign


def _smooth(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Low-frequency noise in about [0, 1]: a coarse random grid, bicubically upsampled."""
    ch = max(2, round(cells * h / max(h, w)))
    cw = max(2, round(cells * w / max(h, w)))
    grid = rng.random((ch, cw)).astype(np.float32)
    return np.asarray(Image.fromarray(grid, mode="F").resize((w, h), Image.BICUBIC))


def _hsv_to_rgb(hsv: tuple[float, float, float]) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(*hsv), dtype=np.float32) * 255.0


def _texture(d: ClassDesign, rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """A pattern in [0, 1] with the class's texture, varied per region (phase, period, angle)."""
    h, w = yy.shape
    period = d.period * rng.uniform(0.85, 1.15)
    theta = math.radians(d.angle + rng.uniform(-12, 12))
    phase = rng.uniform(0, 2 * math.pi)
    u = xx * math.cos(theta) + yy * math.sin(theta)
    if d.texture == "stripes":
        return 0.5 + 0.5 * np.sin(2 * math.pi * u / period + phase)
    if d.texture == "checks":
        v = -xx * math.sin(theta) + yy * math.cos(theta)
        return ((np.floor(u / period + phase) + np.floor(v / period)) % 2).astype(np.float32)
    if d.texture == "dots":
        v = -xx * math.sin(theta) + yy * math.cos(theta)
        s = np.sin(2 * math.pi * u / period + phase) * np.sin(2 * math.pi * v / period)
        return (s > 0.45).astype(np.float32)
    if d.texture == "mottle":
        return _smooth(rng, h, w, max(3, round(max(h, w) / (1.5 * period))))
    if d.texture == "grain":
        return rng.random((h, w)).astype(np.float32)
    v = -xx * math.sin(theta) + yy * math.cos(theta)
    if d.texture == "rings":  # concentric circles around a point anywhere in (or near) the image
        cy, cx = rng.uniform(-0.2 * h, 1.2 * h), rng.uniform(-0.2 * w, 1.2 * w)
        return 0.5 + 0.5 * np.sin(2 * math.pi * np.hypot(yy - cy, xx - cx) / period + phase)
    if d.texture == "waves":  # stripes bent by a slow sine
        return 0.5 + 0.5 * np.sin(2 * math.pi * (u + 0.6 * period * np.sin(2 * math.pi * v / (3 * period))) / period
                                  + phase)
    if d.texture == "zigzag":  # sharp triangle-wave stripes
        z = (u + np.abs(((v / period) % 2.0) - 1.0) * period) / period + phase
        return np.abs((z % 2.0) - 1.0).astype(np.float32)
    if d.texture == "hatch":  # two crossed sets of thin lines
        lines = (np.sin(2 * math.pi * u / period + phase) > 0.75) | (np.sin(2 * math.pi * v / period) > 0.75)
        return lines.astype(np.float32)
    if d.texture == "bricks":  # rows of bricks, every other row shifted by half a brick, with mortar lines
        row = np.floor(v / period)
        along = u / (2 * period) + 0.5 * (row % 2) + phase
        mortar = ((v / period) % 1.0 < 0.18) | (along % 1.0 < 0.09)
        return (~mortar).astype(np.float32)
    # gradient: a slow ramp across the region with a little grain
    ramp = (u - u.min()) / max(1e-6, float(u.max() - u.min()))
    return np.clip(ramp + 0.15 * rng.standard_normal((h, w)).astype(np.float32), 0, 1)


def _paint(d: ClassDesign, rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """The class's appearance over the whole image (RGB float), varied per region."""
    dh = rng.uniform(-0.025, 0.025)
    ds = rng.uniform(0.8, 1.2)
    dv = rng.uniform(0.8, 1.2)

    def colour(hsv: tuple[float, float, float]) -> np.ndarray:
        return _hsv_to_rgb(((hsv[0] + dh) % 1.0, min(1.0, hsv[1] * ds), min(1.0, hsv[2] * dv)))

    c1, c2 = colour(d.color1), colour(d.color2)
    contrast = rng.uniform(0.6, 1.0)  # how strongly the texture shows in this region
    t = 0.5 + contrast * (_texture(d, rng, yy, xx)[..., None] - 0.5)
    return c1 * (1.0 - t) + c2 * t


def _shape_mask(shape: str, rng: np.random.Generator, h: int, w: int, area_px: float, cy: float, cx: float,
                ) -> np.ndarray:
    """A filled outline of about ``area_px`` pixels centred at (cy, cx)."""
    aspect = rng.uniform(0.6, 1.6)
    rot = rng.uniform(0, math.pi)
    if shape == "ellipse":
        a = math.sqrt(area_px * aspect / math.pi)
        b = area_px / (math.pi * a)
        angles = np.linspace(0, 2 * math.pi, 24, endpoint=False)
        pts = np.stack([a * np.cos(angles), b * np.sin(angles)], 1)
    elif shape == "rectangle":
        a = math.sqrt(area_px * aspect) / 2
        b = area_px / (4 * a)
        pts = np.array([[-a, -b], [a, -b], [a, b], [-a, b]])
    elif shape == "diamond":
        a = math.sqrt(area_px * aspect / 2)
        b = area_px / (2 * a)
        pts = np.array([[-a, 0], [0, -b], [a, 0], [0, b]])
    elif shape == "triangle":
        s = math.sqrt(4 * area_px / math.sqrt(3))
        r = s / math.sqrt(3)
        angles = np.array([0, 2 * math.pi / 3, 4 * math.pi / 3])
        pts = np.stack([r * np.cos(angles) * aspect, r * np.sin(angles)], 1)
    else:  # blob: a star-convex polygon with random radii
        angles = np.linspace(0, 2 * math.pi, 14, endpoint=False)
        radii = rng.uniform(0.7, 1.3, angles.size)
        scale = math.sqrt(area_px / (0.5 * np.sum(radii * np.roll(radii, -1)) * math.sin(2 * math.pi / angles.size)))
        pts = np.stack([radii * np.cos(angles), radii * np.sin(angles)], 1) * scale
    c, s = math.cos(rot), math.sin(rot)
    pts = pts @ np.array([[c, s], [-s, c]])
    im = Image.new("L", (w, h), 0)
    ImageDraw.Draw(im).polygon([(float(x + cx), float(y + cy)) for x, y in pts], fill=1)
    return np.asarray(im, dtype=bool)


def render_image(
    designs: Sequence[ClassDesign], present: Sequence[int], size: tuple[int, int], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One (RGB uint8 [H, W, 3], label uint8 [H, W]) pair holding exactly the classes in ``present``."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    label = np.full((h, w), IGNORE, np.uint8)
    stuff = [c for c in present if designs[c].kind == "stuff"]
    things = [c for c in present if designs[c].kind == "thing"]

    # Stuff: split the image by areas; each class takes the pixels where its own smooth field (plus its
    # vertical preference) is highest among what is left, which gives organic, mostly connected regions.
    parts = [(c, designs[c].area * rng.lognormal(0.0, 0.3)) for c in stuff]
    clutter = CLUTTER_AREA * rng.lognormal(0.0, 0.5) if stuff else 1.0
    parts.append((IGNORE, clutter))
    total = sum(a for _, a in parts)
    parts.sort(key=lambda p: designs[p[0]].vpos if p[0] != IGNORE else 0.0)
    free = np.ones((h, w), bool)
    ynorm = yy / max(1, h - 1) * 2 - 1
    for i, (c, a) in enumerate(parts):
        if i == len(parts) - 1:
            label[free] = c
            break
        k = max(1, round(a / total * h * w))
        field = _smooth(rng, h, w, 4) + (0.8 * designs[c].vpos * ynorm if c != IGNORE else 0.0)
        vals = field[free]
        if k >= vals.size:
            label[free] = c
            free[:] = False
            continue
        thresh = np.partition(vals, vals.size - k)[vals.size - k]
        sel = free & (field >= thresh)
        label[sel] = c
        free &= ~sel

    # Things: 1-2 instances each, placed where they overlap earlier things least.
    occupied = np.zeros((h, w), bool)
    for c in sorted(things, key=lambda c: -designs[c].area):
        d = designs[c]
        instances = 1 if rng.random() < 0.7 else 2
        total_px = d.area * rng.lognormal(0.0, 0.35) * h * w
        for _ in range(instances):
            best = None
            for _try in range(6):
                cy, cx = rng.uniform(0.1 * h, 0.9 * h), rng.uniform(0.1 * w, 0.9 * w)
                m = _shape_mask(d.shape, rng, h, w, max(12.0, total_px / instances), cy, cx)
                overlap = int((m & occupied).sum())
                if best is None or overlap < best[0]:
                    best = (overlap, m)
                if overlap == 0:
                    break
            m = best[1]
            label[m] = c
            occupied |= m

    # Every listed class must survive the overlaps; a class that lost all its pixels gets a small blob.
    counts = np.bincount(label.ravel(), minlength=256)
    for c in present:
        if counts[c] < 6:
            m = _shape_mask("blob", rng, h, w, max(30.0, designs[c].area * h * w * 0.5),
                            rng.uniform(0.2 * h, 0.8 * h), rng.uniform(0.2 * w, 0.8 * w))
            label[m] = c
            counts = np.bincount(label.ravel(), minlength=256)

    # Appearance: every class painted with its own texture, then lighting, colour cast and sensor noise.
    image = np.empty((h, w, 3), np.float32)
    for c in np.unique(label):
        m = label == c
        if c == IGNORE:  # clutter: grey-brown mottle, unlabelled
            g = _smooth(rng, h, w, 10)[..., None]
            base = np.array([110, 100, 90], np.float32) * rng.uniform(0.7, 1.3)
            image[m] = (base * (0.7 + 0.6 * g))[m]
        else:
            image[m] = _paint(designs[c], rng, yy, xx)[m]
    light = rng.uniform(0.75, 1.2) * (1 + rng.uniform(-0.08, 0.08, 3)).astype(np.float32)
    shade = 1.0 + 0.15 * (_smooth(rng, h, w, 2)[..., None] - 0.5)
    image = image * light * shade + rng.normal(0.0, 3.0, image.shape).astype(np.float32)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8), label


# ---- writing ----------------------------------------------------------------------------------------------
def palette_bytes(designs: Sequence[ClassDesign]) -> list[int]:
    pal = np.zeros((256, 3), np.uint8)
    for i, d in enumerate(designs):
        pal[i] = np.clip(_hsv_to_rgb(d.color1), 0, 255).astype(np.uint8)
    pal[IGNORE] = (255, 255, 255)
    return pal.ravel().tolist()
