"""Region Rebalance for HF transformers segmentation models (Segformer, UperNet, BEiT, Mask2Former), in a custom
loop or with the HF Trainer.

The model's own loss (pixel CE, plus the auxiliary head for UperNet/BEiT; Mask2Former's set criterion on mask and
class labels made from the semantic labels) is computed as usual; RR is added on the decode head's classifier
input, captured by a hook (Mask2Former: on its pixel decoder's mask features, ``pixel_decoder_last_hidden_state``).
The model, ``save_pretrained`` and ``from_pretrained`` are unchanged. Models are built from small configs (random
init, no hub access) and trained briefly on the synthetic long-tailed dataset (CPU, < 1 minute):

    python examples/hf_rr.py                               # Segformer (MiT-b0 config), custom loop
    python examples/hf_rr.py --model upernet --trainer     # UperNet + ConvNeXt, HF Trainer (needs accelerate)
    python examples/hf_rr.py --model beit --etf --rr-weight 0.2   # CeCo-style branch
    python examples/hf_rr.py --model mask2former           # Mask2Former + small Swin, mask classification
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything here is built from configs

import torch
import torch.nn.functional as F
import transformers

from rrseg.integrations.common import load_rr, save_rr
from rrseg.integrations.transformers import (
    RR_STATE_NAME,
    RRTrainer,
    compute_loss,
    is_mask_classifier,
    region_rebalance_for,
)
from rrseg.metrics import ConfusionMatrix
from rrseg.models.mask2former import semantic_inference
from rrseg.rebalance import ClassCounts

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1) * 255
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1) * 255


def build_model(name: str, num_classes: int, size: int) -> transformers.PreTrainedModel:
    """A randomly initialised model from a config (small sizes so that it trains on a CPU)."""
    if name == "segformer":  # the MiT-b0 configuration
        config = transformers.SegformerConfig(num_labels=num_classes, decoder_hidden_size=128)
        return transformers.SegformerForSemanticSegmentation(config)
    if name == "upernet":
        backbone = transformers.ConvNextConfig(
            hidden_sizes=[32, 64, 128, 256], depths=[1, 1, 2, 1],
            out_features=["stage1", "stage2", "stage3", "stage4"],
        )
        config = transformers.UperNetConfig(
            backbone_config=backbone, use_pretrained_backbone=False, hidden_size=64, auxiliary_in_channels=128,
            auxiliary_channels=32, num_labels=num_classes,
        )
        return transformers.UperNetForSemanticSegmentation(config)
    if name == "beit":
        config = transformers.BeitConfig(
            image_size=size, patch_size=8, hidden_size=96, num_hidden_layers=4, num_attention_heads=3,
            intermediate_size=192, out_indices=[0, 1, 2, 3], use_auxiliary_head=True, auxiliary_channels=32,
            pool_scales=[1, 2, 3], num_labels=num_classes,
        )
        return transformers.BeitForSemanticSegmentation(config)
    if name == "mask2former":  # a small Swin, 64-wide decoders, 16 queries, 3 decoder layers, 48 x 48 points
        backbone = transformers.SwinConfig(
            image_size=size, embed_dim=32, depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8], window_size=4,
            out_features=["stage1", "stage2", "stage3", "stage4"],
        )
        config = transformers.Mask2FormerConfig(
            backbone_config=backbone, num_labels=num_classes, feature_size=64, mask_feature_size=64, hidden_dim=64,
            encoder_feedforward_dim=128, encoder_layers=2, decoder_layers=4, num_attention_heads=4,
            dim_feedforward=128, num_queries=16, train_num_points=48 * 48,
        )
        return transformers.Mask2FormerForUniversalSegmentation(config)
    raise SystemExit(f"unknown --model {name!r}")


class HFSegments(torch.utils.data.Dataset):
    """rrseg dataset items -> the ``pixel_values`` / ``labels`` dicts HF models and the Trainer take."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = self.dataset[index]
        return {"pixel_values": (item["image"].float() - MEAN) / STD, "labels": item["label"].long()}


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


@torch.no_grad()
def evaluate(model: torch.nn.Module, dataset: HFSegments, num_classes: int, batch_size: int) -> float:
    model.eval()
    matrix = ConfusionMatrix(num_classes, ignore_index=255)
    for batch in torch.utils.data.DataLoader(dataset, batch_size):
        out = model(pixel_values=batch["pixel_values"])
        if is_mask_classifier(model):  # Mask2Former: class x mask probabilities summed over the queries
            logits = semantic_inference(out.class_queries_logits, out.masks_queries_logits)
        else:
            logits = out.logits  # Segformer/BEiT: 1/4 size; UperNet: full
        logits = F.interpolate(logits, size=batch["labels"].shape[-2:], mode="bilinear", align_corners=False)
        matrix.update(logits.argmax(1), batch["labels"])
    return matrix.compute().mIoU


def train_custom_loop(model, rr, train: HFSegments, args: argparse.Namespace) -> None:
    params = [p for p in itertools.chain(model.parameters(), rr.parameters()) if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)
    loader = torch.utils.data.DataLoader(train, args.batch_size, shuffle=True, drop_last=True, generator=gen)
    model.train()
    batches = itertools.chain.from_iterable(itertools.repeat(loader))
    for step, batch in enumerate(itertools.islice(batches, args.steps), 1):
        result = compute_loss(model, rr, batch["pixel_values"], batch["labels"])  # model's loss + RR
        optimizer.zero_grad(set_to_none=True)
        result.loss.backward()
        optimizer.step()
        if step % 25 == 0 or step == args.steps:
            parts = "  ".join(f"{k} {v.item():.3f}" for k, v in result.losses.items())
            print(f"step {step:4d}  loss {result.loss.item():.3f}  {parts}")


def train_with_trainer(model, rr, train: HFSegments, args: argparse.Namespace) -> None:
    training_args = transformers.TrainingArguments(
        output_dir=str(Path(args.out) / "trainer"), max_steps=args.steps, per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr, lr_scheduler_type="constant", logging_steps=min(25, args.steps), save_strategy="no",
        report_to="none", use_cpu=True, remove_unused_columns=False, disable_tqdm=True, seed=args.seed,
    )
    trainer = RRTrainer(model=model, args=training_args, train_dataset=train, rr=rr)
    trainer.train()  # each log line carries loss (model + RR) and loss_rr


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="segformer", choices=["segformer", "upernet", "beit", "mask2former"])
    parser.add_argument("--trainer", action="store_true", help="train with the HF Trainer (RRTrainer)")
    parser.add_argument("--data", help="an existing dataset folder with counts.json (default: synthetic)")
    parser.add_argument("--out", default="runs/hf_rr", help="output folder")
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

    from rrseg.data.folder import FolderDataset

    root = synthetic_data(args)
    train, val = FolderDataset(root, split="train"), FolderDataset(root, split="val")
    num_classes = train.num_classes
    counts = ClassCounts.load(root / "counts.json", num_classes)

    model = build_model(args.model, num_classes, args.size)
    rr = region_rebalance_for(model, counts, loss_weight=args.rr_weight, trainable=args.trainable,
                              per_image=args.per_image, prior=args.prior, etf=args.etf)
    if args.trainer:
        train_with_trainer(model, rr, HFSegments(train), args)
    else:
        train_custom_loop(model, rr, HFSegments(train), args)

    miou = evaluate(model, HFSegments(val), num_classes, args.batch_size)
    how = "HF Trainer" if args.trainer else "custom loop"
    print(f"val mIoU {100 * miou:.2f} over {num_classes} classes ({args.model}, {how}, {args.steps} steps)")

    # The model saves and loads as usual; the RR branch goes next to it in its own file.
    model.save_pretrained(out / "model")
    save_rr(rr, out / "model" / RR_STATE_NAME)
    reloaded = type(model).from_pretrained(out / "model")
    load_rr(region_rebalance_for(reloaded, counts, loss_weight=args.rr_weight, trainable=args.trainable,
                                 per_image=args.per_image, prior=args.prior, etf=args.etf),
            out / "model" / RR_STATE_NAME)
    same = evaluate(reloaded, HFSegments(val), num_classes, args.batch_size) == miou
    print(f"saved {out / 'model'}; reloaded with {type(model).__name__}.from_pretrained: "
          f"{'identical' if same else 'DIFFERENT'} mIoU")
    if not same:
        raise SystemExit("reloaded model does not reproduce the trained one")
    return miou


if __name__ == "__main__":
    logging.basicConfig(format="%(message)s", stream=sys.stdout)  # rrseg's messages, as the CLI shows them
    logging.getLogger("rrseg").setLevel(logging.INFO)
    main()
