"""Per-class image (region) and pixel counts of a dataset's training labels, or of a folder of label files.

LABELS is a dataset (a folder dataset, a benchmark folder recognised by its layout such as
ADEChallengeData2016 or ADE20K_2021_17_01, or any folder with --dataset NAME): its --split (default train) is
counted with the dataset's own classes, ignore index, label conversion and class names, so no other flag is
needed. Or LABELS is a folder of label files (searched recursively, *.png unless --suffix): then give
--num-classes, and --ignore-index / --reduce-zero-label as the labels need.

The JSON output feeds RR's prior (`loss.counts` in configs, or `ClassCounts.load`); `--txt PREFIX`
also writes the released format, PREFIX_image_label_stats.txt and PREFIX_pix_label_stats.txt.

`--plot stats.png` draws the dataset's long tail: per-class image count against pixel count (log-log,
classes named where there is room, from the dataset or --class-names; Spearman rank correlation in the title).

example:
  rrseg stats data/ade/ADEChallengeData2016/annotations/training --num-classes 150 \\
      --reduce-zero-label -o ade20k_counts.json --txt ade20k --plot ade20k_counts.png
  rrseg stats data/ADE20K_2021_17_01 -o ade20k_full_counts.json        # 847 classes, 65535 ignored
  rrseg stats data/ADE20K_2021_17_01/annotations_detectron2/training --suffix .tif \\
      --num-classes 847 --ignore-index 65535 -o ade20k_full_counts.json   # the same counts
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    from rrseg.cli._labels import add_dataset_arguments

    p.add_argument("label_dir", metavar="LABELS", help="a dataset (see above), or a folder of label files")
    add_dataset_arguments(p, split="train")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores, at most 8)")
    p.add_argument("--suffix", default=None, help="label file name ending in a folder of labels (default .png)")
    p.add_argument("--on-bad-label", choices=("error", "skip"), default="error",
                   help="a value outside [0, C): stop with an error (default) or skip the file")
    p.add_argument("-o", "--output", default="counts.json", help="JSON output (default counts.json)")
    p.add_argument("--txt", metavar="PREFIX", help="also write the released one-integer-per-line text files")
    p.add_argument("--plot", metavar="PNG", help="also draw image count against pixel count per class (.png)")
    p.add_argument("--class-names", help="text file with one class name per line (names in the plot)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rrseg.cli._labels import label_source
    from rrseg.data.labels import read_class_names
    from rrseg.data.stats import compute_stats, plot_class_counts, stats_files
    from rrseg.errors import RRSegError
    from rrseg.io import atomic_write_json, atomic_write_text, check_writable
    from rrseg.output import show_progress_bar

    src = label_source(args.label_dir, args)
    dataset = src.dataset
    if dataset is not None and args.suffix is not None:
        raise RRSegError(f"--suffix {args.suffix}: the {dataset.name} dataset at {args.label_dir} names its own "
                         "label files; --suffix is for a folder of labels")
    num_classes = src.num_classes
    if args.plot is not None:
        plot = Path(args.plot)
        if plot.suffix.lower() != ".png":
            raise RRSegError(f"--plot {args.plot}: the plot is written as PNG; give a path ending in .png")
        if plot.is_dir():
            raise RRSegError(f"--plot {args.plot}: is a directory; give a file path ending in .png")
    if args.class_names:
        names = read_class_names(args.class_names, num_classes)
    else:
        names = list(dataset.class_names) if dataset is not None else None
    targets = [args.output] + ([args.txt + "_image_label_stats.txt"] if args.txt else [])
    for target in targets + ([args.plot] if args.plot else []):
        check_writable(Path(target).absolute().parent)  # before the counting, not after it
    files = dataset.label_files if dataset is not None else stats_files(args.label_dir, args.suffix or ".png")
    counts, info = compute_stats(
        files, num_classes, src.reduce_zero_label, src.ignore_index, args.workers, args.on_bad_label,
        progress=show_progress_bar(), label_dtype=src.label_dtype, label_dtype_hint=src.label_dtype_hint,
    )
    out = counts.to_json()
    out.update(label_dir=str(Path(args.label_dir).resolve()), options=info["options"], skipped=info["skipped"])
    if dataset is not None:
        out.update(dataset=dataset.name, split=args.split, class_names=list(dataset.class_names))
    atomic_write_json(args.output, out)
    written = [args.output]
    if args.txt:
        for kind, values in (("image", counts.image_counts), ("pix", counts.pixel_counts)):
            path = f"{args.txt}_{kind}_label_stats.txt"
            atomic_write_text(path, "".join(f"{int(v)}\n" for v in values))
            written.append(path)
    if args.plot:
        rho = plot_class_counts(counts, args.plot, names)
        written.append(args.plot)
        rho_s = "n/a (fewer than 2 classes present, or constant counts)" if rho != rho else f"{rho:.2f}"
        print(f"Spearman rank correlation of image and pixel counts: {rho_s}")
    absent = int((counts.image_counts == 0).sum())
    print(f"{counts.num_images} label files, {num_classes} classes "
          f"(image counts {int(counts.image_counts.max())} max, {int(counts.image_counts.min())} min; "
          f"{absent} classes absent)")
    if info["skipped"]:
        print(f"skipped {len(info['skipped'])} files with bad labels:")
        for s in info["skipped"][:20]:
            print(f"  {s['path']}: {s['error'] or 'values ' + str(sorted(s['bad_values']))}")
    print("wrote " + ", ".join(written))
    return 0
