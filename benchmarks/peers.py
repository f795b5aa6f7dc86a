"""rrseg against its peers on the same models, measured side by side in one run (issue 24, item 1).

Every figure is a ratio to rrseg from ONE process: the implementations of a row are built together and timed
in interleaved repetitions (one repetition = one call of each, in an order rotated from one repetition to the
next, so that none is always first), after warm-up calls of each. Reported per implementation: the median,
the spread (IQR / median, numpy's linear percentiles; the JSON also has (max - min) / median), and the ratio
peer / rrseg of the times (the median of the per-repetition ratios; above 1: rrseg is faster).

Rows (same input, same precision, same threads for every implementation of a row):
- UPerNet Swin-T and UPerNet ConvNeXt-T: rrseg vs mmseg vs HF ``UperNetForSemanticSegmentation`` vs smp
  ``UPerNet`` (timm encoder); DeepLabV3+ R50-D8: rrseg vs mmseg, smp's ``DeepLabV3Plus`` (ResNet-50, output
  stride 8, 512 decoder channels) reported as the nearest model, not the same; OCRNet HRNet-W18: rrseg vs mmseg.
  Each: a training step (zero_grad, forward, loss, backward, AdamW step) and inference (eval mode, no_grad,
  logits at the input size). Auxiliary heads are left out for every peer alike (OCRNet's soft-region head is
  part of its architecture, kept, and its 0.4-weighted loss computed, in both); stochastic depth 0 everywhere;
  the decode heads' dropout as each library has it (rrseg and mmseg: 0.1, HF and smp: none). Each model's
  parameter count is printed; one more than 1 % from rrseg's is flagged "not the same model".
  Losses: rrseg: its trainer's criterion (``rrseg_loss``: rrseg's ``CrossEntropyLoss`` terms on the logits
  upsampled from stride 4 to the label size); smp: ``F.cross_entropy`` (ignore 255) on its input-size logits
  (benchmarks/data_pipeline.py's ``seg_loss``); mmseg: ``model.loss`` (its decode heads' own losses); HF: the
  model's own ``labels=`` loss.
- ``--compile``: each model row also times "rrseg compiled", rrseg's model as ``train.compile`` runs it
  (``torch.compile``, inductor, rrseg's ``COMPILE_OPTIONS``; the loss compiled on its own, as the trainer's
  criterion is), in the same interleaved repetitions; its ratio is to eager rrseg. Its compilation (training and
  eval graphs) happens in the warm-up calls, untimed: minutes per model on a CPU.
- Sliding-window evaluation of UPerNet ConvNeXt-T (whose mmseg config evaluates by slide): rrseg's
  ``predict_probs`` in slide mode vs mmseg's ``slide_inference``, each followed by the argmax.
- The training data loader on ADE20K-shaped 683x512 JPEG + PNG files (benchmarks/data_pipeline.py writes them,
  and times a DataLoader with its ``loader_rate``): decode + the mmseg ADE20K training pipeline (random resize
  of (2048, 512) x 0.5-2.0, crop with cat_max_ratio 0.75, flip, photometric distortion) + normalisation and
  padding, in one DataLoader worker each: rrseg's ``ADE20KDataset`` + ``train_transforms`` vs mmseg's own
  ``ADE20KDataset`` with its config's pipeline, followed in the worker by its ``SegDataPreProcessor``
  (normalisation and padding, which mmseg runs on the batch in the main process: here the same work in the
  same place as rrseg's). OpenCV's threads as mmengine's runner sets them (``cv2.setNumThreads(0)``); glibc's
  malloc as each tool leaves it: rrseg's worker with ``rrseg.allocator.tune_malloc`` (its trainer sets it before
  it starts the workers), mmseg's as it is. The model rows share one process, and so one malloc setting: glibc's
  default (rrseg's command runs its own steps with the tuned one: 0.7-0.8x on the CPU, docs/BENCHMARKS.md).

The mmseg rows need ``make test-mmseg``'s venv (.venv-mmseg, which also has every other peer); run there, one
process measures all of them. Elsewhere they are reported as "not run (needs make test-mmseg)", as is a peer
whose library does not import (HF transformers, smp).

    python benchmarks/peers.py                           # the CPU defaults below; Markdown to stdout
    .venv-mmseg/bin/python benchmarks/peers.py --out peers.md --json benchmarks/results/peers.json
    python benchmarks/peers.py --quick                   # tiny sizes, few repetitions: checks that it runs
    python benchmarks/peers.py --compile --rows deeplabv3plus_r50   # + rrseg under torch.compile
    python benchmarks/peers.py --device cuda --amp bf16 --batch 8 --size 512 --reps 7   # benchmarks/gpu.sh

Defaults (CPU): batch 2 x 256^2, fp32, all the cores' threads, 2 warm-up calls + 7 repetitions; slide on one
512x683 image, 256^2 windows, stride 171; loader crops 512^2 from 48 image pairs, batches of 4, 12 batches a
repetition (with 4 batches, the spread was 10-28 %). ``--quick``: batch 2 x 64^2, 1 warm-up + 3 repetitions,
slide 64x96 / 64 / 32, loader crops 128^2.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import json
import os
import platform
import random
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# OpenMP threads that spin while waiting slow a shared CPU down many times (benchmarks/data_pipeline.py)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "src"):  # rrseg from this checkout; tests.reference.mmseg_env for the mmseg rows
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from data_pipeline import loader_rate, seg_loss, write_ade_like  # noqa: E402

from rrseg.io import atomic_write_text  # noqa: E402
from rrseg.models import build_model  # noqa: E402
from rrseg.rebalance import CrossEntropyLoss  # noqa: E402

NUM_CLASSES = 150
SAME_WITHIN = 0.01  # parameter counts within 1 % of rrseg's: the same model
NOT_MMSEG = "not run (needs make test-mmseg)"
SWIN_CFG = "swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512"
CONVNEXT_CFG = "convnext/convnext-tiny_upernet_8xb2-amp-160k_ade20k-512x512"
DEEPLAB_CFG = "deeplabv3plus/deeplabv3plus_r50-d8_4xb4-160k_ade20k-512x512"
OCR_CFG = "ocrnet/ocrnet_hr18_4xb4-160k_ade20k-512x512"
ROWS = ("upernet_swin_t", "upernet_convnext_t", "deeplabv3plus_r50", "ocrnet_hr18", "slide", "loader")


# ---- statistics ------------------------------------------------------------------------------------------
def summarize(values: Sequence[float]) -> dict[str, float]:
    """Median and spread of repeated measurements: ``iqr_rel`` = (75th - 25th percentile) / median (numpy's
    linear interpolation), ``range_rel`` = (max - min) / median."""
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        raise ValueError("no measurements")
    med = float(np.median(a))
    q1, q3 = np.percentile(a, [25, 75])
    return {"n": int(a.size), "median": med, "iqr_rel": float((q3 - q1) / med), "range_rel": float(np.ptp(a) / med),
            "min": float(a.min()), "max": float(a.max())}


def paired_ratio(peer: Sequence[float], ref: Sequence[float]) -> dict[str, float]:
    """peer / ref per repetition (the two were measured in the same repetition), summarised as
    :func:`summarize` does, plus ``of_medians``: median(peer) / median(ref)."""
    if len(peer) != len(ref):
        raise ValueError(f"{len(peer)} vs {len(ref)} repetitions")
    out = summarize([p / r for p, r in zip(peer, ref)])
    out["of_medians"] = float(np.median(peer) / np.median(ref))
    return out


def interleaved(calls: dict[str, Callable[[], Any]], warmup: int, reps: int,
                sync: Callable[[], None] = lambda: None) -> dict[str, list[float]]:
    """Seconds of each call in ``reps`` repetitions; a repetition calls each once, in the order of ``calls``
    rotated by the repetition's index; ``warmup`` untimed rounds first. ``sync`` waits for the device."""
    names = list(calls)
    for _ in range(warmup):
        for name in names:
            calls[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        k = rep % len(names)
        for name in names[k:] + names[:k]:
            sync()
            t0 = time.perf_counter()
            calls[name]()
            sync()
            times[name].append(time.perf_counter() - t0)
    return times


# ---- the peers -------------------------------------------------------------------------------------------
def _mmseg_env():
    from tests.reference import mmseg_env

    return mmseg_env


def unavailable(library: str) -> str | None:
    """Why ``library`` cannot run here (None: it can)."""
    if library == "rrseg":
        return None
    if library == "mmseg":
        return _mmseg_env().unavailable_reason()
    try:
        if library == "transformers":
            from transformers import UperNetForSemanticSegmentation  # noqa: F401
        elif library == "smp":
            import segmentation_models_pytorch  # noqa: F401
        else:
            raise ValueError(f"unknown library {library!r}")
    except ImportError as e:
        return f"{library} does not import: {e}"
    return None


def not_run(library: str, reason: str) -> str:
    """The table's status of an implementation that ``unavailable`` gave ``reason`` for."""
    return NOT_MMSEG if library == "mmseg" else f"not run ({reason})"


@dataclass
class Impl:
    """One implementation of a row: ``build()`` its model; ``loss(model, x, y)`` its training loss;
    ``infer(model, x)`` its inference output. ``same=False``: the nearest model, not the same one."""

    name: str
    library: str
    build: Callable[[], nn.Module]
    loss: Callable[[nn.Module, Tensor, Tensor], Tensor] | None = None
    infer: Callable[[nn.Module, Tensor], Tensor] | None = None
    same: bool = True
    note: str = ""


@dataclass
class Case:
    key: str
    title: str
    impls: list[Impl]
    kinds: tuple[str, ...] = ("train", "inference")
    extra: dict[str, Any] = field(default_factory=dict)


def _metas(shape: Sequence[int], batch: int) -> list[dict]:
    hw = tuple(int(s) for s in shape)
    return [dict(img_shape=hw, ori_shape=hw, pad_shape=hw) for _ in range(batch)]


def _mmseg_model(config: str, backbone: dict | None = None) -> nn.Module:
    env = _mmseg_env()
    cfg = env.base_model_config(config)
    cfg.pop("auxiliary_head", None)  # for every peer alike
    if backbone:
        cfg["backbone"].update(backbone)
    return env.build(cfg)


def _mmseg_loss(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """mmseg's own training loss: ``model.loss`` on SegDataSamples (what its data pipeline packs)."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    samples = []
    for label in y:
        s = SegDataSample(metainfo=_metas(y.shape[-2:], 1)[0])
        s.gt_sem_seg = PixelData(data=label[None])
        samples.append(s)
    losses = model.loss(x, samples)
    return sum(v for k, v in losses.items() if "loss" in k)


def _mmseg_infer(model: nn.Module, x: Tensor) -> Tensor:
    return model.whole_inference(x, _metas(x.shape[-2:], x.shape[0]))


def _hf_upernet(backbone: str) -> nn.Module:
    from transformers import ConvNextConfig, SwinConfig, UperNetConfig, UperNetForSemanticSegmentation

    stages = ["stage1", "stage2", "stage3", "stage4"]
    if backbone == "swin":
        bb = SwinConfig(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7,
                        drop_path_rate=0.0, out_features=stages)
    else:
        bb = ConvNextConfig(depths=[3, 3, 9, 3], hidden_sizes=[96, 192, 384, 768], drop_path_rate=0.0,
                            out_features=stages)
    cfg = UperNetConfig(backbone_config=bb, hidden_size=512, use_auxiliary_head=False, num_labels=NUM_CLASSES,
                        loss_ignore_index=255)
    return UperNetForSemanticSegmentation(cfg)


def _hf_loss(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    return model(pixel_values=x, labels=y).loss


def _hf_infer(model: nn.Module, x: Tensor) -> Tensor:
    return model(pixel_values=x).logits


_CE, _AUX_CE = CrossEntropyLoss(), CrossEntropyLoss("loss_aux", 0.4, source="aux_logits")


def rrseg_loss(out: Any, labels: Tensor) -> Tensor:
    """rrseg's training loss as its trainer builds it (``build_criterion``): the pixel CE term, + 0.4 x the
    auxiliary CE where the model gives auxiliary logits (OCRNet's soft regions here)."""
    loss = _CE(out, labels)
    return loss + _AUX_CE(out, labels) if out.aux_logits is not None else loss


def _rrseg_loss(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    return rrseg_loss(model(x), y)


def _plain_loss(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    return seg_loss(model(x), y)


def _plain_infer(model: nn.Module, x: Tensor) -> Tensor:
    return model(x)


def _smp(kind: str, **kwargs: Any) -> nn.Module:
    import segmentation_models_pytorch as smp

    return getattr(smp, kind)(encoder_weights=None, classes=NUM_CLASSES, **kwargs)


def compiled(impl: Impl) -> Impl:
    """``impl`` (an rrseg row, the loss :func:`rrseg_loss`) as ``train.compile`` runs it: the model compiled, and
    the loss compiled on its own graph."""
    from rrseg.engine.components import COMPILE_OPTIONS

    loss_fn = torch.compile(rrseg_loss, options=COMPILE_OPTIONS)
    return Impl(f"{impl.name} compiled", impl.library,
                build=lambda: torch.compile(impl.build(), options=COMPILE_OPTIONS),
                loss=lambda model, x, y: loss_fn(model(x), y), infer=impl.infer, same=impl.same,
                note="torch.compile (train.compile)")


def model_cases(size: int, compile: bool = False) -> list[Case]:
    """The model rows; with ``compile``, rrseg compiled (:func:`compiled`) after rrseg in each."""
    cases = _model_cases(size)
    if compile:
        for case in cases:
            case.impls.insert(1, compiled(case.impls[0]))
    return cases


def _model_cases(size: int) -> list[Case]:
    rr = dict(loss=_rrseg_loss, infer=_plain_infer)
    plain = dict(loss=_plain_loss, infer=_plain_infer)  # smp: F.cross_entropy on its input-size logits
    mm = dict(loss=_mmseg_loss, infer=_mmseg_infer)
    hf = dict(loss=_hf_loss, infer=_hf_infer)
    # timm's Swin sized for 224 with strict_img_size=False takes any input with 7x7 windows in every stage (sized
    # for a small input, timm would shrink the windows and so the relative-position tables)
    smp_swin = dict(encoder_name="tu-swin_tiny_patch4_window7_224", img_size=224, strict_img_size=False)
    return [
        Case("upernet_swin_t", "UPerNet Swin-T", [
            Impl("rrseg", "rrseg", lambda: build_model("upernet_swin_t", NUM_CLASSES, aux_head=False,
                                                       drop_path_rate=0.0, img_size=size), **rr),
            Impl("mmseg", "mmseg", lambda: _mmseg_model(SWIN_CFG, dict(drop_path_rate=0.0)), **mm),
            Impl("HF transformers", "transformers", lambda: _hf_upernet("swin"), **hf),
            Impl("smp", "smp", lambda: _smp("UPerNet", decoder_channels=512, **smp_swin), **plain),
        ]),
        Case("upernet_convnext_t", "UPerNet ConvNeXt-T", [
            Impl("rrseg", "rrseg", lambda: build_model("upernet_convnext_t", NUM_CLASSES, aux_head=False,
                                                       drop_path_rate=0.0), **rr),
            Impl("mmseg", "mmseg", lambda: _mmseg_model(CONVNEXT_CFG, dict(drop_path_rate=0.0)), **mm),
            Impl("HF transformers", "transformers", lambda: _hf_upernet("convnext"), **hf),
            Impl("smp", "smp", lambda: _smp("UPerNet", encoder_name="tu-convnext_tiny", decoder_channels=512),
                 **plain),
        ]),
        Case("deeplabv3plus_r50", "DeepLabV3+ R50-D8", [
            Impl("rrseg", "rrseg", lambda: build_model("deeplabv3plus_r50", NUM_CLASSES, aux_head=False), **rr),
            Impl("mmseg", "mmseg", lambda: _mmseg_model(DEEPLAB_CFG), **mm),
            Impl("smp (nearest)", "smp", lambda: _smp("DeepLabV3Plus", encoder_name="resnet50",
                                                      encoder_output_stride=8, decoder_channels=512),
                 same=False, note="nearest model, not the same (ResNet-50 without the deep stem, its own ASPP)",
                 **plain),
        ]),
        Case("ocrnet_hr18", "OCRNet HRNet-W18", [
            Impl("rrseg", "rrseg", lambda: build_model("ocrnet_hr18", NUM_CLASSES), **rr),
            Impl("mmseg", "mmseg", lambda: _mmseg_model(OCR_CFG), **mm),
        ]),
    ]


# ---- running ---------------------------------------------------------------------------------------------
@dataclass
class Settings:
    device: torch.device
    amp: str
    batch: int
    size: int
    warmup: int
    reps: int
    slide_size: tuple[int, int]
    crop: int
    stride: int
    loader_crop: int
    loader_pairs: int
    loader_batch: int
    loader_batches: int
    loader_workers: int

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp == "none":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def _row(case: Case, kind: str, impl: Impl, status: str = "ok", **values: Any) -> dict:
    """One line of the results; ``status`` "ok" (measured) or why not, ``values`` (times, ...) when measured."""
    return {"case": case.key, "title": case.title, "kind": kind, "impl": impl.name, "library": impl.library,
            "same_model": impl.same, "note": impl.note, "status": status, **values}


def _inputs(s: Settings) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(s.batch, 3, s.size, s.size, generator=g)
    y = torch.randint(0, NUM_CLASSES, (s.batch, s.size, s.size), generator=g)
    y[torch.rand(y.shape, generator=g) < 0.05] = 255
    return x.to(s.device), y.to(s.device)


def _skipped(case: Case) -> dict[str, dict[str, str]]:
    """{implementation: {"status", "reason"}} for those of the case that cannot run here."""
    out = {}
    for impl in case.impls:
        reason = unavailable(impl.library)
        if reason is not None:
            out[impl.name] = {"status": not_run(impl.library, reason), "reason": reason}
    return out


def _built(case: Case, s: Settings) -> tuple[dict[str, nn.Module], dict[str, dict[str, str]]]:
    """The models of the case's implementations that can run here, and why the others are not measured."""
    models, skipped = {}, _skipped(case)
    for impl in case.impls:
        if impl.name in skipped:
            continue
        try:
            models[impl.name] = impl.build().to(s.device)
        except Exception as e:  # a peer that does not build is reported, the others still run
            if impl.library == "rrseg":
                raise
            skipped[impl.name] = {"status": "**failed to build**", "reason": f"{type(e).__name__}: {e}"}
    return models, skipped


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _param_note(impl: Impl, n: int, ref: int) -> str:
    rel = n / ref - 1.0
    if not impl.same:
        return f"{impl.note}; parameters {rel:+.1%} of rrseg's"
    if abs(rel) > SAME_WITHIN:
        return f"**not the same model**: parameters {rel:+.1%} of rrseg's"
    return impl.note


def _results(case: Case, kinds: Sequence[str], times: dict[tuple[str, str], list[float]],
             skipped: dict[str, dict[str, str]], extra: dict[str, dict]) -> list[dict]:
    rows = []
    for kind in kinds:
        ref = times.get(("rrseg", kind))
        for impl in case.impls:
            if impl.name in skipped:
                rows.append(_row(case, kind, impl, **skipped[impl.name]))
                continue
            t = times[(impl.name, kind)]
            row = _row(case, kind, impl, times_s=t, stats=summarize(t), **extra.get(impl.name, {}))
            if impl.name != "rrseg":
                row["ratio"] = paired_ratio(t, ref)
            rows.append(row)
    return rows


def run_model_case(case: Case, s: Settings) -> list[dict]:
    models, skipped = _built(case, s)
    x, y = _inputs(s)
    ref_params = _params(models["rrseg"])
    extra, calls = {}, {}
    for impl in case.impls:
        model = models.get(impl.name)
        if model is None:
            continue
        n = _params(model)
        extra[impl.name] = {"params": n}
        extra[impl.name]["note"] = _param_note(impl, n, ref_params)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.01)

        def train(model=model, opt=opt, impl=impl) -> None:
            model.train()
            opt.zero_grad(set_to_none=True)
            with s.autocast():
                loss = impl.loss(model, x, y)
            loss.backward()
            opt.step()

        def infer(model=model, impl=impl) -> None:
            model.eval()
            with torch.no_grad(), s.autocast():
                impl.infer(model, x)

        calls[(impl.name, "train")] = train
        calls[(impl.name, "inference")] = infer
    times = interleaved(calls, s.warmup, s.reps, s.sync)
    return _results(case, ("train", "inference"), times, skipped, extra)


def slide_case(s: Settings) -> Case:
    from rrseg.engine.config import EvalConfig
    from rrseg.engine.evaluator import predict_probs

    crop, stride = [s.crop, s.crop], [s.stride, s.stride]

    def rr_slide(model: nn.Module, x: Tensor) -> Tensor:
        return predict_probs(model, x, EvalConfig(mode="slide", crop_size=crop, stride=stride), NUM_CLASSES)

    def mm_slide(model: nn.Module, x: Tensor) -> Tensor:
        model.test_cfg = _mmseg_env().config_dict(dict(mode="slide", crop_size=tuple(crop), stride=tuple(stride)))
        return model.slide_inference(x, _metas(x.shape[-2:], x.shape[0]))  # fresh metas: it edits them

    return Case("slide", f"sliding-window evaluation, UPerNet ConvNeXt-T ({s.slide_size[0]}x{s.slide_size[1]}, "
                         f"{s.crop}^2 windows, stride {s.stride})", [
        Impl("rrseg", "rrseg", lambda: build_model("upernet_convnext_t", NUM_CLASSES, aux_head=False,
                                                   drop_path_rate=0.0), infer=rr_slide),
        Impl("mmseg", "mmseg", lambda: _mmseg_model(CONVNEXT_CFG, dict(drop_path_rate=0.0)), infer=mm_slide),
    ], kinds=("slide eval",))


def run_slide_case(case: Case, s: Settings) -> list[dict]:
    models, skipped = _built(case, s)
    x = torch.randn(1, 3, *s.slide_size, generator=torch.Generator().manual_seed(1)).to(s.device)
    calls = {}
    for impl in case.impls:
        if impl.name in models:
            models[impl.name].eval()

            def call(model=models[impl.name], impl=impl) -> None:
                with torch.no_grad(), s.autocast():
                    impl.infer(model, x).argmax(1)

            calls[(impl.name, "slide eval")] = call
    extra = {name: {"params": _params(m)} for name, m in models.items()}
    return _results(case, ("slide eval",), interleaved(calls, s.warmup, s.reps, s.sync), skipped, extra)


class MmsegTrainItems(torch.utils.data.Dataset):
    """mmseg's training dataset, each item through its ``SegDataPreProcessor`` (BGR -> RGB, normalisation,
    padding to the crop) and as rrseg's ``seg_collate`` takes it: {"image": [3, H, W], "label": [H, W]}."""

    def __init__(self, dataset: Any, preprocessor: nn.Module) -> None:
        self.dataset, self.preprocessor = dataset, preprocessor

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        item = self.dataset[i]
        out = self.preprocessor(dict(inputs=[item["inputs"]], data_samples=[item["data_samples"]]), training=True)
        return {"image": out["inputs"][0], "label": out["data_samples"][0].gt_sem_seg.data[0]}


def _mmseg_loader_dataset(ade: Path, crop: int) -> torch.utils.data.Dataset:
    env = _mmseg_env()
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmseg.datasets import ADE20KDataset
    from mmseg.registry import MODELS

    cfg = Config.fromfile(str(env.config_path(DEEPLAB_CFG)))  # the ADE20K pipeline and data preprocessor
    pipeline = copy.deepcopy(cfg.train_pipeline)
    for step in pipeline:
        if step["type"] == "RandomResize":
            step["scale"] = (4 * crop, crop)
        elif step["type"] == "RandomCrop":
            step["crop_size"] = (crop, crop)
    preprocessor_cfg = dict(copy.deepcopy(cfg.model.data_preprocessor), size=(crop, crop))
    with DefaultScope.overwrite_default_scope("mmseg"):
        dataset = ADE20KDataset(data_root=str(ade), data_prefix=dict(img_path="images/training",
                                                                     seg_map_path="annotations/training"),
                                pipeline=pipeline)
        preprocessor = MODELS.build(preprocessor_cfg)
    return MmsegTrainItems(dataset, preprocessor)


def _tune_malloc_worker(_: int) -> None:
    from rrseg.allocator import tune_malloc

    tune_malloc()


def loader_case(s: Settings) -> Case:
    return Case("loader", f"training loader, ADE20K-shaped JPEG + PNG, {s.loader_crop}^2 crops, "
                          f"{s.loader_workers} worker(s)", [
        Impl("rrseg", "rrseg", lambda: None),
        Impl("mmseg", "mmseg", lambda: None),
    ], kinds=("loader",))


def run_loader_case(case: Case, s: Settings) -> list[dict]:
    from rrseg.data import ADE20KDataset, train_transforms

    with contextlib.suppress(ImportError):  # mmengine's runner: OpenCV without its own threads
        import cv2

        cv2.setNumThreads(0)
    # mmseg's own ADE20K pipeline says this for every label it loads (the forked worker inherits the filter)
    warnings.filterwarnings("ignore", message=".*reduce_zero_label. will be deprecated", category=UserWarning)
    with tempfile.TemporaryDirectory() as tmp:
        ade = write_ade_like(Path(tmp), s.loader_pairs)
        c = s.loader_crop
        datasets = {"rrseg": ADE20KDataset(ade, "train", train_transforms(crop_size=(c, c), scale=(4 * c, c)))}
        skipped = _skipped(case)
        if "mmseg" not in skipped:
            datasets["mmseg"] = _mmseg_loader_dataset(ade, c)
        rates: dict[str, list[float]] = {}

        # each loader's workers as its own tool runs them: rrseg's trainer sets glibc's malloc before it starts
        # them (rrseg.allocator), mmseg's runner leaves it as it is
        init = {"rrseg": _tune_malloc_worker}

        def call(name: str) -> Callable[[], None]:
            def run() -> None:
                # repetition k draws the same images in the same order for every implementation (the sampler:
                # torch's generator) and seeds the workers' own generators alike (DataLoader's base seed from
                # torch; numpy's and Python's state inherited by the forked worker). The row's spread stayed
                # 8-24 % on this project's VM with it, and with one seed for every repetition (the same work
                # each time): host noise on sub-second calls (docs/BENCHMARKS.md, section 6)
                k = len(rates.get(name, []))
                torch.manual_seed(k)
                np.random.seed(k)
                random.seed(k)
                rate = loader_rate(datasets[name], s.loader_workers, s.loader_batch, s.loader_batches, warmup=1,
                                   worker_init_fn=init.get(name))
                rates.setdefault(name, []).append(rate)
            return run

        # each repetition one loader per implementation (its first batch, which starts the worker, untimed):
        # seconds per image per worker from the rate loader_rate measured, not the wall time of the call
        interleaved({name: call(name) for name in datasets}, 0, s.reps)
    times = {(name, "loader"): [s.loader_workers / r for r in rs] for name, rs in rates.items()}
    extra = {name: {"images_per_s_per_worker": summarize([r / s.loader_workers for r in rs])["median"]}
             for name, rs in rates.items()}
    return _results(case, ("loader",), times, skipped, extra)


# ---- report ----------------------------------------------------------------------------------------------
def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _version(module: str) -> str:
    try:
        return __import__(module).__version__
    except Exception:
        return "absent"


def machine_info(s: Settings, threads: int) -> dict:
    info = {
        "cpu": _cpu_model(), "cores": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)), "threads": threads,
        "torch": torch.__version__, "python": platform.python_version(), "device": str(s.device),
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    if s.device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(s.device)
    for name, module in (("mmseg", "mmseg"), ("transformers", "transformers"), ("smp", "segmentation_models_pytorch"),
                         ("timm", "timm")):
        info[name] = _version(module)
    try:
        info["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                        cwd=ROOT, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        info["commit"] = "unknown"
    return info


def _ms(seconds: float) -> str:
    ms = 1000.0 * seconds
    return f"{ms:.0f} ms" if ms >= 100 else f"{ms:.1f} ms" if ms >= 1 else f"{ms:.3f} ms"


def markdown(info: dict, s: Settings, rows: list[dict]) -> str:
    precision = "fp32" if s.amp == "none" else f"{s.amp} autocast"
    lines = [
        f"rrseg against its peers (`benchmarks/peers.py`), side by side in one run. {info['date']}; "
        f"{info.get('gpu', info['cpu'])}; {info['cores']} cores ({info['affinity']} usable), "
        f"{info['threads']} torch threads; torch {info['torch']}, mmseg {info['mmseg']}, transformers "
        f"{info['transformers']}, smp {info['smp']}, timm {info['timm']}; commit {info['commit']}.", "",
        f"Command: `{info['command']}`", "",
        f"Models: batch {s.batch} x {s.size}^2, {precision}, {NUM_CLASSES} classes, on {info['device']}; "
        f"{s.warmup} warm-up call(s) then {s.reps} interleaved repetitions of every implementation of a row. "
        "Median per call; spread = IQR / median; ratio = peer / rrseg time (median of the per-repetition "
        "ratios): above 1, rrseg is faster.", "",
        "| row | what | implementation | parameters | median | spread | peer / rrseg | note |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        params = f"{r['params']:,}" if "params" in r else ""
        if r["status"] != "ok":
            lines.append(f"| {r['title']} | {r['kind']} | {r['impl']} | {params} | {r['status']} | | | {r['note']} |")
            continue
        st = r["stats"]
        median = _ms(st["median"])
        if r["kind"] == "loader":
            median += f"/image ({r['images_per_s_per_worker']:.1f} img/s per worker)"
        ratio = f"{r['ratio']['median']:.2f} (±{r['ratio']['iqr_rel']:.0%})" if "ratio" in r else "1"
        lines.append(f"| {r['title']} | {r['kind']} | {r['impl']} | {params} | {median} | {st['iqr_rel']:.1%} | "
                     f"{ratio} | {r['note']} |")
    return "\n".join(lines) + "\n"


def write_outputs(info: dict, s: Settings, rows: list[dict], out: Path | None, js: Path | None) -> str:
    """The Markdown (returned, and written to ``out``) and the JSON (to ``js``); called after every row, so
    that a run cut short (gpu.sh's timeout) leaves whole files with the rows finished so far."""
    text = markdown(info, s, rows)
    results = {"machine": info, "settings": _settings_json(s), "rows": rows}
    for path, content in ((out, text), (js, json.dumps(results, indent=1) + "\n")):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, content)
    return text


def _settings_json(s: Settings) -> dict:
    return {k: str(v) if isinstance(v, torch.device) else v for k, v in vars(s).items()}


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes and few repetitions (a test that it runs)")
    ap.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS), help="the rows to run (default all)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    ap.add_argument("--amp", choices=["none", "bf16"], default="none", help="precision: none (fp32) or bf16 autocast")
    ap.add_argument("--threads", type=_positive, default=len(os.sched_getaffinity(0)),
                    help="torch threads (default: every usable core)")
    ap.add_argument("--batch", type=_positive, help="images per step (default 2, also --quick: batch norm in training "
                    "needs 2 values of the 1x1 pyramid-pooling branch)")
    ap.add_argument("--size", type=_positive, help="square input side (default 256; --quick 64)")
    ap.add_argument("--warmup", type=int, help="untimed calls of each implementation first (default 2; --quick 1)")
    ap.add_argument("--reps", type=_positive, help="interleaved repetitions (default 7; --quick 3)")
    ap.add_argument("--slide-size", type=_positive, nargs=2, metavar=("H", "W"), help="slide image (default 512 683)")
    ap.add_argument("--crop", type=_positive, help="slide window side (default 256; --quick 64)")
    ap.add_argument("--stride", type=_positive, help="slide stride (default 171; --quick 32)")
    ap.add_argument("--loader-crop", type=_positive, help="loader crop side (default 512; --quick 128)")
    ap.add_argument("--loader-pairs", type=_positive, help="image/label pairs written (default 48; --quick 4)")
    ap.add_argument("--loader-batch", type=_positive, help="loader batch (default 4; --quick 2)")
    ap.add_argument("--loader-batches", type=_positive, help="timed batches per repetition (default 12; --quick 1)")
    ap.add_argument("--loader-workers", type=_positive, default=1, help="DataLoader workers (default 1)")
    ap.add_argument("--compile", action="store_true",
                    help="also time rrseg's models under torch.compile (train.compile), in the model rows")
    ap.add_argument("--budget-s", type=float, default=None, help="start no row after this many seconds")
    ap.add_argument("--out", type=Path, help="also write the Markdown table here")
    ap.add_argument("--json", type=Path, help="write the results as JSON here (e.g. benchmarks/results/peers.json)")
    return ap.parse_args(argv)


def settings(args: argparse.Namespace) -> Settings:
    quick = args.quick
    pick = lambda value, default, small: value if value is not None else (small if quick else default)  # noqa: E731
    return Settings(
        device=torch.device(args.device), amp=args.amp, batch=pick(args.batch, 2, 2), size=pick(args.size, 256, 64),
        warmup=pick(args.warmup, 2, 1), reps=pick(args.reps, 7, 3),
        slide_size=tuple(pick(args.slide_size, (512, 683), (64, 96))), crop=pick(args.crop, 256, 64),
        stride=pick(args.stride, 171, 32), loader_crop=pick(args.loader_crop, 512, 128),
        loader_pairs=pick(args.loader_pairs, 48, 4), loader_batch=pick(args.loader_batch, 4, 2),
        loader_batches=pick(args.loader_batches, 12, 1), loader_workers=args.loader_workers,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    s = settings(args)
    info = machine_info(s, args.threads)
    cases = {c.key: c for c in model_cases(s.size, args.compile)}
    cases["slide"] = slide_case(s)
    cases["loader"] = loader_case(s)
    runners = {"slide": run_slide_case, "loader": run_loader_case}
    rows: list[dict] = []
    failed = False
    start = time.perf_counter()
    for key in args.rows:
        case = cases[key]
        t0 = time.perf_counter()
        if args.budget_s is not None and t0 - start > args.budget_s:
            reason = f"not started: time budget ({args.budget_s:.0f} s) spent"
            rows += [_row(case, kind, impl, reason) for kind in case.kinds for impl in case.impls]
        else:
            try:
                rows += runners.get(key, run_model_case)(case, s)
            except Exception as e:  # the next rows still run; the exit status says it failed
                traceback.print_exc()
                failed = True
                reason = f"{type(e).__name__}: {e}"
                rows += [_row(case, kind, impl, f"**failed**: {reason[:200]}", reason=reason)
                         for kind in case.kinds for impl in case.impls]
        print(f"[peers] {key}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
        text = write_outputs(info, s, rows, args.out, args.json)
    print(text, end="")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
