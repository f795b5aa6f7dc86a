"""Region Rebalance for a segmentation_models_pytorch model.

``RRWrapper`` adds RR on the decoder output that feeds ``segmentation_head``; the model itself, its
inference and its checkpoints stay the plain smp ones. Trains briefly on the synthetic long-tailed
dataset (CPU, < 1 minute), evaluates, saves, and reloads the weights into a fresh plain smp model:

    python examples/smp_rr.py
    python examples/smp_rr.py --arch Unet --encoder resnet34 --steps 400 --trainable --per-image
    python examples/smp_rr.py --rr-weight 0          # the same run without RR, to compare
"""

from __future__ import annotations

import argparse
import itertools
import logging
import sys
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
from safetensors.torch import load_file, save_file

from rrseg.integrations.common import save_rr
from rrseg.integrations.smp import RRWrapper
from rrseg.metrics import ConfusionMatrix
from rrseg.rebalance import ClassCounts

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255


def synthetic_data(args: argparse.Namespace) -> Path:
    """The synthetic long-tailed dataset: ``--data`` if given, else made (once) under ``--out``."""
    if args.data:
        return Path(args.data)
    root = Path(args.out) / "data"
    if not (root / "dataset.yaml").is_file():
        from rrseg.data.synthetic import make_synthetic

        make_synthetic(root, num_classes=args.num_classes, num_train=args.num_train, num_val=args.num_val,
                       size=args.size, seed=args.seed)
    return root


def loaders(root: Path, batch_size: int, seed: int):
    from rrseg.data.folder import FolderDataset

    def collate(items):  # images uint8 [B,3,H,W] -> normalised float; labels [B,H,W] with 255 = ignore
        images = torch.stack([item["image"] for item in items]).float()
        return (images - MEAN) / STD, torch.stack([item["label"] for item in items]).long()

    train, val = FolderDataset(root, split="train"), FolderDataset(root, split="val")
    gen = torch.Generator().manual_seed(seed)
    train_loader = torch.utils.data.DataLoader(train, batch_size, shuffle=True, drop_last=True,
                                               collate_fn=collate, generator=gen)
    val_loader = torch.utils.data.DataLoader(val, batch_size, collate_fn=collate)
    return train.num_classes, train_loader, val_loader


def build_model(args: argparse.Namespace, num_classes: int) -> torch.nn.Module:
    return smp.create_model(args.arch, encoder_name=args.encoder, encoder_weights=None, classes=num_classes)


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, num_classes: int) -> float:
    model.eval()
    matrix = ConfusionMatrix(num_classes, ignore_index=255)
    for images, labels in loader:
        matrix.update(model(images).argmax(1), labels)  # smp logits come at the input size
    return matrix.compute().mIoU


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="an existing dataset folder with counts.json (default: synthetic)")
    parser.add_argument("--out", default="runs/smp_rr", help="output folder")
    parser.add_argument("--arch", default="FPN", help="any smp architecture: Unet, FPN, DeepLabV3Plus, UPerNet, ...")
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--rr-weight", type=float, default=1.0, help="RR loss weight (0 = no RR)")
    parser.add_argument("--trainable", action="store_true", help="train the RR branch too (default: frozen)")
    parser.add_argument("--per-image", action="store_true", help="one region per class per image")
    parser.add_argument("--prior", default="region", choices=["region", "pixel", "none"])
    parser.add_argument("--etf", action="store_true", help="CeCo: fixed simplex-ETF region classifier")
    parser.add_argument("--num-classes", type=int, default=12)
    parser.add_argument("--num-train", type=int, default=96)
    parser.add_argument("--num-val", type=int, default=24)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="CPU threads for PyTorch (default: its own choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)

    root = synthetic_data(args)
    num_classes, train_loader, val_loader = loaders(root, args.batch_size, args.seed)
    counts = ClassCounts.load(root / "counts.json", num_classes)

    model = build_model(args, num_classes)
    wrapper = RRWrapper(model, counts, loss_weight=args.rr_weight, trainable=args.trainable,
                        per_image=args.per_image, prior=args.prior, etf=args.etf)
    # wrapper.parameters() = the model's + the RR branch's (frozen ones get no gradient and no update)
    optimizer = torch.optim.AdamW([p for p in wrapper.parameters() if p.requires_grad], lr=args.lr)

    wrapper.train()
    batches = itertools.chain.from_iterable(itertools.repeat(train_loader))
    for step, (images, labels) in enumerate(itertools.islice(batches, args.steps), 1):
        result = wrapper(images, labels)  # loss = CE + RR
        optimizer.zero_grad(set_to_none=True)
        result.loss.backward()
        optimizer.step()
        if step % 25 == 0 or step == args.steps:
            parts = "  ".join(f"{k} {v.item():.3f}" for k, v in result.losses.items())
            print(f"step {step:4d}  loss {result.loss.item():.3f}  {parts}")

    miou = evaluate(wrapper, val_loader, num_classes)  # wrapper(images) is model(images)
    print(f"val mIoU {100 * miou:.2f} over {num_classes} classes ({args.arch}/{args.encoder}, {args.steps} steps)")

    # The wrapper's state dict is the plain model's: it loads into a fresh smp model, no rrseg needed.
    out.mkdir(parents=True, exist_ok=True)
    save_file(wrapper.state_dict(), out / "model.safetensors")
    save_rr(wrapper.rr, out / "rr.safetensors")  # the RR branch, kept apart (to resume training)
    plain = build_model(args, num_classes)
    plain.load_state_dict(load_file(out / "model.safetensors"))
    reloaded = evaluate(plain, val_loader, num_classes)
    same = reloaded == miou
    print(f"saved {out / 'model.safetensors'}; reloaded into a plain smp.{args.arch}: "
          f"{'identical' if same else 'DIFFERENT'} mIoU")
    if not same:
        raise SystemExit("reloaded model does not reproduce the trained one")
    return miou


if __name__ == "__main__":
    logging.basicConfig(format="%(message)s", stream=sys.stdout)  # rrseg's messages, as the CLI shows them
    logging.getLogger("rrseg").setLevel(logging.INFO)
    main()
