"""``make_synthetic``: render every image in parallel, then write the layout, ``counts.json`` and
``synthetic.json``; the folder appears complete or not at all."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from PIL import Image

from rrseg.data.synthetic.design import DEFAULTS, IGNORE, assign_classes, design_classes, design_pretraining_classes
from rrseg.data.synthetic.render import palette_bytes, render_image
from rrseg.data.synthetic.statistics import count_split, format_statistics, long_tail_statistics
from rrseg.errors import RRSegError
from rrseg.io import atomic_write_json, atomic_write_text, ensure_writable_dir
from rrseg.output import RESULT
from rrseg.parallel import chunk_size, default_workers, parallel_map

logger = logging.getLogger(__name__)


def _render_chunk(job: tuple) -> int:
    designs, members, size, seed, split_id, start, img_dir, lbl_dir, palette = job
    for offset, present in enumerate(members):
        i = start + offset
        rng = np.random.default_rng([seed, split_id, i])
        image, label = render_image(designs, present, size, rng)
        Image.fromarray(image).save(Path(img_dir) / f"{i:06d}.jpg", quality=92, subsampling=0)
        lab = Image.frombytes("P", (label.shape[1], label.shape[0]), label.tobytes())
        lab.putpalette(palette)
        lab.save(Path(lbl_dir) / f"{i:06d}.png", optimize=False)
    return len(members)


def make_synthetic(
    out_dir: str | os.PathLike,
    num_classes: int = DEFAULTS["num_classes"],
    num_train: int = DEFAULTS["num_train"],
    num_val: int = DEFAULTS["num_val"],
    size: int | tuple[int, int] = DEFAULTS["size"],
    seed: int = 0,
    workers: int | None = None,
    overwrite: bool = False,
    verbose: bool = True,
    progress: bool = False,
    kind: Literal["longtail", "pretrain"] = "longtail",
) -> Path:
    """Write the synthetic dataset to ``out_dir`` (folder layout + ``counts.json`` + ``synthetic.json``).

    ``kind="pretrain"`` writes the class-balanced pretraining set of ``design_pretraining_classes`` instead
    of the long tail (the demo's pretrained backbone is trained on it).

    ``size`` is (width, height) or one number for square images. The folder appears complete or not at all
    (written to a temporary sibling, then renamed). Returns ``out_dir``; the statistics are logged (INFO) when
    ``verbose`` and stored in ``synthetic.json``.
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    w, h = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if min(w, h) < 16 or max(w, h) > 4096:
        raise RRSegError(f"image size must be 16..4096 pixels per side, got {w}x{h}")
    if kind not in ("longtail", "pretrain"):
        raise RRSegError(f"synthetic dataset kind must be 'longtail' or 'pretrain', got {kind!r}")
    designs = (design_classes(num_classes, num_train, num_val) if kind == "longtail"
               else design_pretraining_classes(num_classes, num_train, num_val))
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise RRSegError(f"{out}: already exists and is not empty (use --overwrite to replace it)")
    workers = default_workers(workers)
    parent = ensure_writable_dir(out.resolve().parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=parent))
    try:
        palette = palette_bytes(designs)
        jobs = []
        for split_id, (split, n, key) in enumerate((("train", num_train, "train_images"),
                                                    ("val", num_val, "val_images"))):
            img_dir, lbl_dir = tmp / "images" / split, tmp / "labels" / split
            img_dir.mkdir(parents=True)
            lbl_dir.mkdir(parents=True)
            if n == 0:
                continue
            members = assign_classes([getattr(d, key) for d in designs], n,
                                     np.random.default_rng([seed, split_id, 2**31]))
            chunk = chunk_size(n, workers)  # the images do not depend on it: each has its own seed
            for start in range(0, n, chunk):
                jobs.append((designs, members[start:start + chunk], (w, h), seed, split_id, start,
                             str(img_dir), str(lbl_dir), palette))
        total = num_train + num_val
        for _ in parallel_map(_render_chunk, jobs, workers, progress=progress, description="rendering", total=total,
                              advance=int):
            pass
        spec = {
            "name": f"synthetic-{kind}",
            "classes": [d.name for d in designs],
            "palette": [list(palette[3 * i: 3 * i + 3]) for i in range(num_classes)],
            "ignore_index": IGNORE,
            "reduce_zero_label": False,
            "image_suffix": ".jpg",
            "label_suffix": ".png",
            "info": {
                "generator": "rrseg make-synthetic",
                "seed": seed,
                "size": [w, h],
                "kinds": [d.kind for d in designs],
                "look_alikes": {d.name: designs[d.twin_of].name for d in designs if d.twin_of is not None},
            },
        }
        atomic_write_text(
            tmp / "dataset.yaml", yaml.safe_dump(spec, sort_keys=False, width=110, default_flow_style=None)
        )
        atomic_write_json(tmp / "design.json", [asdict(d) for d in designs])
        train_counts, info, train_ds = count_split(tmp, "train", workers)
        counts_json = train_counts.to_json()
        counts_json.update(label_dir="labels/train", options=info["options"], skipped=info["skipped"],
                           class_names=train_ds.class_names)
        atomic_write_json(tmp / "counts.json", counts_json)
        val_counts = count_split(tmp, "val", workers)[0] if num_val > 0 else None
        stats = long_tail_statistics(train_counts, val_counts)
        stats["seconds"] = round(time.perf_counter() - t0, 1)
        atomic_write_json(tmp / "synthetic.json", stats)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if verbose:
        # the result (kept by rrseg -q); the statistics below are detail (INFO), stored in synthetic.json too
        logger.log(RESULT, f"wrote {out} ({total} images, {w}x{h}, seed {seed}) in {stats['seconds']:.1f} s")
        logger.info(format_statistics(stats) if kind == "longtail" else f"{num_classes} classes, class-balanced "
                    f"({designs[0].train_images} training images each)")
    return out
