"""Predict segmentation maps for images with a trained checkpoint.

For each image writes OUT/<stem>.png (an index PNG, mode P: pixel values are class ids, shown in the
dataset's palette; above 256 classes, e.g. ADE20K-Full's 847, a 16-bit grey PNG of class ids, mode I;16,
which `rrseg score` reads) and OUT/<stem>_overlay.jpg (the colours blended over the image). The model and the test
resize come from the checkpoint's own metadata, so no config is needed. Prints a line per image as it goes
(progress: -q hides them) and, at the end, how many predictions it wrote where.

examples:
  rrseg predict runs/demo/rr/inference.safetensors photos/*.jpg --out predictions/
  rrseg predict --import my_models work_dirs/my_config photos/*.jpg --out predictions/   # your own model
"""

from __future__ import annotations

import argparse

from rrseg.cli._extensions import add_import_argument


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="rrseg .safetensors checkpoint, checkpoint folder or work dir")
    p.add_argument("images", nargs="+", help="image files (JPEG/PNG)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity (default 0.5)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    add_import_argument(p)


def run(args: argparse.Namespace) -> int:
    import logging
    from pathlib import Path

    import numpy as np
    from PIL import Image

    from rrseg.data.base import read_image
    from rrseg.engine.distributed import pick_device
    from rrseg.engine.inference import class_palette, load_for_inference, predict_label
    from rrseg.errors import RRSegError
    from rrseg.io import atomic_open, check_writable, ensure_writable_dir

    logger = logging.getLogger(__name__)
    out = Path(args.out)
    check_writable(out)  # fail now; nothing is written until the model and every image have been read
    device = pick_device(args.device)
    model, meta, cfg = load_for_inference(args.checkpoint, device)
    paths = [Path(name) for name in args.images]
    seen: dict[str, Path] = {}
    for path in paths:
        read_image(path)
        if path.stem in seen:
            raise RRSegError(f"{path}: same output name {path.stem}.png as {seen[path.stem]}")
        seen[path.stem] = path
    ensure_writable_dir(out)
    num_classes = int(meta["num_classes"])
    palette = class_palette(meta.get("palette"), num_classes)
    flat_palette = [int(v) for c in palette[:256] for v in c]

    for path in paths:
        arr = read_image(path)
        pred = predict_label(model, arr, cfg, num_classes, device)
        if num_classes <= 256:  # mode P: the values are class ids, the palette shows them in colour
            index = Image.frombytes("P", (pred.shape[1], pred.shape[0]), pred.astype(np.uint8).tobytes())
            index.putpalette(flat_palette + [0] * (768 - len(flat_palette)))
        else:
            index = Image.fromarray(pred.astype(np.uint16))
        with atomic_open(out / f"{path.stem}.png") as f:
            index.save(f, format="PNG")
        colours = np.asarray(palette, dtype=np.uint8)[pred.astype(np.int64)]
        overlay = (args.alpha * colours + (1 - args.alpha) * arr).astype(np.uint8)
        with atomic_open(out / f"{path.stem}_overlay.jpg") as f:
            Image.fromarray(overlay).save(f, format="JPEG", quality=90)
        logger.info("%s -> %s", path, out / (path.stem + ".png"))  # progress: hidden by -q
    print(f"wrote {len(paths)} predictions to {out}/ (<name>.png: class ids; <name>_overlay.jpg: colours)")
    return 0

