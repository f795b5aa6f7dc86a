"""rrseg's outputs for a family of :mod:`tests.reference.families`, computed as :mod:`mmseg_outputs` computes
mmseg's (float64, same inputs), from the mmseg checkpoint loaded through rrseg's own loader and converter."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from rrseg.engine.config import EvalConfig
from rrseg.engine.evaluator import predict_probs
from rrseg.models import build_model, load_pretrained
from rrseg.rebalance.pixel import CrossEntropyLoss
from tests.reference import families


def load_mmseg(name: str, state_dict: dict[str, torch.Tensor], tmp: Path, **options) -> nn.Module:
    """rrseg's ``name`` with an mmseg checkpoint (written to ``tmp``) loaded by ``load_pretrained``; every key
    must be used and every tensor of the model filled."""
    model = build_model(name, families.NUM_CLASSES if "num_classes" not in options else options.pop("num_classes"),
                        **options)
    path = tmp / f"{name}_mmseg.pth"
    torch.save({"state_dict": state_dict, "meta": {}}, path)
    result = load_pretrained(model, path, verbose=False)
    assert result.source == "mmseg", result.source
    assert not result.unexpected, f"unexpected: {result.unexpected[:8]}"
    assert not result.missing, f"missing: {result.missing[:8]}"
    return model


def outputs(family: families.Family, state_dict: dict[str, torch.Tensor], tmp: Path) -> dict[str, torch.Tensor]:
    model = load_mmseg(family.rrseg_tiny, state_dict, tmp, **family.rrseg_options).double()
    x = {k: v.double() if v.is_floating_point() else v for k, v in families.inputs(family).items()}
    out: dict[str, torch.Tensor] = {}
    model.eval()
    with torch.no_grad():
        out["eval_logits"] = model(x["eval"])
        crop, stride = family.slide
        slide = EvalConfig(mode="slide", crop_size=list(crop), stride=list(stride))
        # predict_probs averages probabilities: the slide logits' softmax (compared as such)
        out["slide_probs"] = predict_probs(model, x["slide"], slide, families.NUM_CLASSES)
    model.train()
    for m in model.modules():
        if isinstance(m, (nn.Dropout, nn.Dropout2d)):
            m.eval()
    seg = model(x["train"])
    out["features"], out["logits"], out["aux_logits"] = seg.features, seg.logits, seg.aux_logits
    labels = x["labels"]
    # the paper configs' losses: CE averaged over all pixels (mmseg's avg_non_ignore=False), aux weight 0.4
    out["loss_decode"] = CrossEntropyLoss("loss_ce", 1.0, ignore_index=255, avg_non_ignore=False)(seg, labels)
    out["loss_aux"] = CrossEntropyLoss("loss_aux", 0.4, source="aux_logits", ignore_index=255,
                                       avg_non_ignore=False)(seg, labels)
    return {k: v.detach() for k, v in out.items()}


def assert_matches(got: dict[str, torch.Tensor], ref: dict[str, torch.Tensor], rtol: float = 1e-5) -> None:
    """Every output within ``rtol`` of the reference's largest magnitude (relative error in float64)."""
    ref = dict(ref)
    if "slide_logits" in ref:
        ref["slide_probs"] = ref.pop("slide_logits").double().softmax(1)
    errors = []
    for k in sorted(set(got) | set(ref)):
        if k not in got or k not in ref:
            errors.append(f"{k}: only in {'rrseg' if k in got else 'the reference'}")
            continue
        a, b = got[k].double(), ref[k].double()
        if a.shape != b.shape:
            errors.append(f"{k}: shape {tuple(a.shape)} vs the reference's {tuple(b.shape)}")
            continue
        scale = b.abs().max().item()
        err = (a - b).abs().max().item()
        if err > rtol * max(scale, 1e-12):
            errors.append(f"{k}: max abs error {err:.3g}, reference max abs {scale:.3g}")
    assert not errors, "; ".join(errors)
