"""Region Rebalance in a plain PyTorch training loop.

Any segmentation model works if it can hand over the tensor its pixel classifier reads. Here a small
conv net returns ``(features, logits)``; ``RegionRebalance(features, labels)`` adds the region loss in
training and nothing at test time. Trains briefly on the synthetic long-tailed dataset (CPU, < 1 minute):

    python examples/plain_pytorch_rr.py
    python examples/plain_pytorch_rr.py --steps 300 --rr-weight 0   # the same run without RR, to compare

For a model you cannot edit, record the classifier's input with a hook instead:
``with rrseg.integrations.common.capture_input(model.classifier) as cap: logits = model(x)``, then
``rr(cap.tensor, labels)``.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from rrseg.metrics import ConfusionMatrix
from rrseg.rebalance import ClassCounts, RegionRebalance

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255


class TinySegNet(nn.Module):
    """Stride-4 conv net; returns (features, logits): features are exactly what the classifier reads."""

    def __init__(self, num_classes: int, width: int = 48) -> None:
        super().__init__()

        def block(cin: int, cout: int, stride: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

        self.body = nn.Sequential(block(3, width, 2), block(width, width, 2), block(width, width, 1),
                                  block(width, width, 1))
        self.classifier = nn.Conv2d(width, num_classes, 1)
        self.width = width

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(images)
        return features, self.classifier(features)


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


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="an existing dataset folder (default: make the synthetic one)")
    parser.add_argument("--out", default="runs/plain_pytorch_rr", help="output folder")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--rr-weight", type=float, default=1.0, help="RR loss weight (0 = no RR)")
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

    root = synthetic_data(args)
    num_classes, train_loader, val_loader = loaders(root, args.batch_size, args.seed)
    counts = ClassCounts.load(root / "counts.json", num_classes)  # image counts of the training split

    # --- the training loop: model, RR branch, one optimizer --------------------------------------------
    model = TinySegNet(num_classes)
    rr = RegionRebalance(model.width, num_classes, counts, loss_weight=args.rr_weight)  # released defaults
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)  # add rr.parameters() if trainable=True
    model.train()
    rr.train()  # RR follows the model's mode: it returns 0 in eval mode
    batches = itertools.chain.from_iterable(itertools.repeat(train_loader))
    for step, (images, labels) in enumerate(itertools.islice(batches, args.steps), 1):
        features, logits = model(images)
        logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
        loss_ce = F.cross_entropy(logits, labels, ignore_index=255)
        loss_rr = rr(features, labels)  # region loss on the classifier's input
        loss = loss_ce + loss_rr
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 25 == 0 or step == args.steps:
            print(f"step {step:4d}  loss {loss.item():.3f}  ce {loss_ce.item():.3f}  rr {loss_rr.item():.3f}")

    # --- evaluation: the plain model, RR plays no part -------------------------------------------------
    model.eval()
    matrix = ConfusionMatrix(num_classes, ignore_index=255)
    with torch.no_grad():
        for images, labels in val_loader:
            _, logits = model(images)
            logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
            matrix.update(logits.argmax(1), labels)
    miou = matrix.compute().mIoU
    print(f"val mIoU {100 * miou:.2f} over {num_classes} classes ({args.steps} steps, RR weight {args.rr_weight})")
    return miou


if __name__ == "__main__":
    logging.basicConfig(format="%(message)s", stream=sys.stdout)  # rrseg's messages, as the CLI shows them
    logging.getLogger("rrseg").setLevel(logging.INFO)
    main()
