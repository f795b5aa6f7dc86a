"""Load weights into a Segmentor, its backbone, or any module: local files, packaged weights, or timm's hub.

Accepted: a timm-format state dict (``.pth`` / ``.pt`` / ``.bin`` / ``.ckpt`` read with
``torch.load(weights_only=True)``, or ``.safetensors``); a Hugging Face folder (``model.safetensors`` /
``pytorch_model.bin``, sharded or not; timm Hub folders and transformers Swin / BEiT / ConvNeXt checkpoints);
an mmsegmentation checkpoint (``{"state_dict": ...}`` with ``backbone.`` / ``decode_head.`` keys, mapped
by rule, see ``rrseg.models.checkpoint_conversion``); a checkpoint of this package (the whole Segmentor,
optionally under ``"model"``); ``"rrseg:NAME"``, weights shipped with the package. Nothing of these is downloaded.

``"timm"`` / ``"timm:TAG"``: the backbone's ImageNet weights as timm publishes them, fetched by timm itself
(``timm.models.load_pretrained``: the Hugging Face hub download and cache, ``HF_HOME`` / ``HF_HUB_CACHE``;
with ``HF_HUB_OFFLINE=1`` from the cache only). This is the one way rrseg downloads anything. ``PAPER_WEIGHTS``
names the tag each paper model starts from; ``"none"`` (any case, ``is_no_weights``) is the explicit choice of
no weights, which ``build_model`` accepts.

Every tensor must match the model's shape: a mismatch raises RRSegError naming the key and both shapes
(relative-position tables and patch embeddings are resized first, as timm does). A summary of what was
loaded, missing and unexpected is logged (INFO, logger ``rrseg.models.weights``).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from rrseg.errors import RRSegError
from rrseg.io import read_safetensors
from rrseg.models.checkpoint_conversion import (
    backbone_family,
    hf_to_timm,
    is_hf_format,
    mmseg_to_rrseg,
    timm_filter,
)

logger = logging.getLogger(__name__)

__all__ = [
    "PAPER_WEIGHTS",
    "LoadResult",
    "is_no_weights",
    "is_timm_spec",
    "load_pretrained",
    "load_timm_pretrained",
    "read_state_dict",
    "usual_weights",
]

_WRAPPERS = ("state_dict", "model", "module", "model_state", "state_dict_ema", "model_ema")
_HF_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)


@dataclass
class LoadResult:
    """What ``load_pretrained`` did; keys are named as in the module the weights went into."""

    path: str
    source: str  # "rrseg", "mmseg", "timm", "hf"
    target: str  # where the weights went: "model" or "backbone.model"
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)  # loaded after resizing (position tables, patch embed)

    def summary(self) -> str:
        total = len(self.loaded) + len(self.missing)
        lines = [
            f"{self.path}: loaded {len(self.loaded)}/{total} tensors ({self.source} format -> {self.target})"
        ]
        if self.missing:
            lines.append(f"  missing ({len(self.missing)}, left as initialised): {_group(self.missing)}")
        if self.resized:
            lines.append(f"  resized to fit ({len(self.resized)}): {_group(self.resized)}")
        if self.unexpected:
            lines.append(f"  unexpected ({len(self.unexpected)}, ignored): {_group(self.unexpected)}")
        return "\n".join(lines)


def _group(keys: list[str], limit: int = 8) -> str:
    """Keys grouped by their first two name parts, with counts: short enough for a terminal."""
    groups: dict[str, int] = {}
    for k in keys:
        parts = k.split(".")
        g = ".".join(parts[:2]) + (".*" if len(parts) > 2 else "")
        groups[g] = groups.get(g, 0) + 1
    items = [f"{g} ({n})" if n > 1 else g for g, n in groups.items()]
    more = f", ... {len(items) - limit} more groups" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def _read_file(path: Path) -> dict:
    if path.suffix == ".safetensors":
        return read_safetensors(path)[0]
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # pickle / zip errors come in many types; all mean the same to the user
        msg = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise RRSegError(
            f"{path}: cannot read as a weights-only PyTorch checkpoint ({msg}); if it holds pickled objects "
            "(e.g. training state), re-save just its state dict"
        ) from None


def _read_hf_folder(folder: Path) -> dict:
    for name in _HF_FILES:
        p = folder / name
        if not p.is_file():
            continue
        if name.endswith(".index.json"):
            try:
                weight_map = json.loads(p.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise RRSegError(f"{p}: not a sharded-checkpoint index (needs 'weight_map')") from None
            merged: dict = {}
            for shard in sorted(set(weight_map.values())):
                merged.update(_read_file(folder / shard))
            return merged
        return _read_file(p)
    raise RRSegError(f"{folder}: no {', '.join(_HF_FILES[:2])} or sharded index in this folder")


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """The flat ``{name: tensor}`` of a weights file or HF folder: wrappers (``state_dict``, ``model``, ...)
    and a DistributedDataParallel ``module.`` prefix removed, non-tensor entries dropped."""
    p = Path(path)
    if p.is_dir():
        obj = _read_hf_folder(p)
    elif p.is_file():
        obj = _read_file(p)
    else:
        raise RRSegError(f"{p}: weights file not found")
    if not isinstance(obj, Mapping):
        raise RRSegError(
            f"{p}: expected a state dict (mapping of names to tensors), got {type(obj).__name__}"
        )
    for _ in range(3):  # e.g. {"model": {"state_dict": ...}}
        inner = next((obj[w] for w in _WRAPPERS if isinstance(obj.get(w), Mapping)), None)
        if inner is None or any(isinstance(v, Tensor) for v in obj.values()):
            break
        obj = inner
    sd = {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}
    if not sd:
        raise RRSegError(f"{p}: holds no tensors")
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd


def _is_segmentor(module: nn.Module) -> bool:
    return all(hasattr(module, a) for a in ("backbone", "decode_head", "inference_state_dict"))


_MMSEG_GROUPS = ("backbone.", "decode_head.", "auxiliary_head.")


def _is_mmseg_backbone(sd: Mapping[str, Tensor], segmentor: nn.Module) -> bool:
    """A backbone-only file in mmseg's / mmcls's names for this Segmentor's backbone family, as mmseg's configs
    load for ImageNet starts (no ``backbone.`` prefix): ResNetV1c's ``stem.*`` (``open-mmlab://resnet50_v1c``),
    Swin / BEiT after mmseg's ``swin2mmseg.py`` / ``beit2mmseg.py`` (``patch_embed.projection``, ``w_msa``,
    ``layers.N.ln1``), mmcls ConvNeXt (``depthwise_conv``). HRNet's names are timm's: no conversion needed."""
    family = backbone_family(getattr(segmentor.backbone, "model", segmentor.backbone))
    if family == "resnet":
        return "stem.0.weight" in sd
    if family == "swin":
        return "patch_embed.projection.weight" in sd or any(".w_msa." in k for k in sd)
    if family == "beit":
        return "patch_embed.projection.weight" in sd or any(re.match(r"^layers\.\d+\.ln1\.", k) for k in sd)
    if family == "convnext":
        return any(".depthwise_conv." in k for k in sd)
    return False


def _detect(sd: Mapping[str, Tensor], module: nn.Module) -> str:
    if _is_segmentor(module):
        if any(k.startswith("backbone.model.") for k in sd):  # mmseg backbones have no ".model" level
            return "rrseg"
        if any(k.startswith(_MMSEG_GROUPS) for k in sd) or _is_mmseg_backbone(sd, module):
            return "mmseg"
    return "hf" if is_hf_format(sd) else "timm"


def _safe_filter(sd: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    try:
        return timm_filter(sd, model)
    except (AttributeError, KeyError, RuntimeError, ValueError):
        return sd  # an unusual layout: let the shape check below report exactly what does not fit


PACKAGED_PREFIX = "rrseg:"


def packaged_weights() -> dict[str, Path]:
    """Weights shipped inside the package (``src/rrseg/models/pretrained/NAME.safetensors``), by name."""
    from importlib import resources

    folder = resources.files("rrseg") / "models" / "pretrained"
    if not folder.is_dir():
        return {}
    return {Path(f.name).stem: Path(str(f)) for f in folder.iterdir() if f.name.endswith(".safetensors")}


def resolve_weights(path: str | os.PathLike) -> str | os.PathLike:
    """``"rrseg:NAME"`` -> the packaged file of that name (see ``packaged_weights``); anything else unchanged."""
    if not (isinstance(path, str) and path.startswith(PACKAGED_PREFIX)):
        return path
    name = path[len(PACKAGED_PREFIX):]
    known = packaged_weights()
    if name not in known:
        raise RRSegError(f"{path}: no packaged weights of that name; packaged: {', '.join(sorted(known)) or '(none)'}")
    return known[name]


def load_pretrained(
    module: nn.Module,
    path: str | os.PathLike,
    *,
    source: str = "auto",
    verbose: bool = True,
) -> LoadResult:
    """Load weights into ``module`` (a Segmentor, a ``TimmBackbone`` or any nn.Module).

    ``path``: a file or folder, or ``"rrseg:NAME"`` for weights shipped with the package (the demo's
    backbone pretrained on the class-balanced synthetic set: ``rrseg:demo_small_backbone``), or ``"timm"`` /
    ``"timm:TAG"`` for the backbone's timm weights from the hub (see ``load_timm_pretrained``).
    ``source``: "auto" (detected from the keys), "rrseg", "mmseg", "timm" or "hf". Backbone-only weights
    (timm, HF) loaded into a Segmentor go to ``module.backbone.model``. Raises RRSegError on unreadable
    files, on any shape mismatch (naming the key and both shapes), and when nothing matches at all.
    """
    if source not in ("auto", "rrseg", "mmseg", "timm", "hf"):
        raise RRSegError(f"weights source must be auto, rrseg, mmseg, timm or hf, got {source!r}")
    if is_timm_spec(path):
        return load_timm_pretrained(module, str(path), verbose=verbose)
    path = resolve_weights(path)
    sd = read_state_dict(path)
    kind = _detect(sd, module) if source == "auto" else source

    file_shapes = {k: tuple(v.shape) for k, v in sd.items()}
    target, target_name = module, "model"
    if kind == "mmseg":
        if not _is_segmentor(module):
            raise RRSegError(f"{path}: an mmsegmentation checkpoint loads into a whole Segmentor only")
        if not any(k.startswith(_MMSEG_GROUPS) for k in sd):  # backbone only (mmseg's ImageNet start files)
            sd = {f"backbone.{k}": v for k, v in sd.items()}
        sd = mmseg_to_rrseg(sd, module)
    elif kind in ("timm", "hf"):
        target, target_name = _backbone_target(module)
        if kind == "hf":
            sd = hf_to_timm(sd, target)
        sd = _safe_filter(sd, target)

    result = LoadResult(str(path), kind, target_name)
    to_load = _matching(sd, target, str(path), file_shapes, result)
    target.load_state_dict(to_load, strict=False)
    _finish(result, module, target, to_load, file_shapes)
    if verbose:
        logger.info(result.summary())
    return result


def _backbone_target(module: nn.Module) -> tuple[nn.Module, str]:
    """Where backbone-only (timm / HF) weights go: a Segmentor's ``backbone.model``, a ``TimmBackbone``'s
    ``model``, else the module itself."""
    if _is_segmentor(module) and hasattr(module.backbone, "model"):
        return module.backbone.model, "backbone.model"
    if hasattr(module, "model") and hasattr(module, "channels"):  # a TimmBackbone
        return module.model, "model"
    return module, "model"


def _matching(
    sd: Mapping[str, Tensor],
    target: nn.Module,
    label: str,
    file_shapes: Mapping[str, tuple[int, ...]],
    result: LoadResult,
) -> dict[str, Tensor]:
    """The tensors of ``sd`` that ``target`` has, in its dtypes; the others go to ``result.unexpected``.
    Any shape mismatch, or nothing matching at all, is an RRSegError naming ``label``."""
    own = target.state_dict()
    mismatched = []
    to_load = {}
    for k, v in sd.items():
        if k not in own:
            result.unexpected.append(k)
        elif tuple(v.shape) != tuple(own[k].shape):
            mismatched.append((k, tuple(v.shape), tuple(own[k].shape)))
        else:
            to_load[k] = v
    if mismatched:
        k, got, want = mismatched[0]
        more = f" (and {len(mismatched) - 1} more)" if len(mismatched) > 1 else ""
        if file_shapes.get(k, got) != got:  # timm's filter resized it and it still does not fit
            got = f"{file_shapes[k]} (resized to {got})"
        raise RRSegError(f"{label}: shape mismatch for {k!r}: checkpoint {got} vs model {want}{more}")
    if not to_load:
        first = f", first key {next(iter(sd))!r}" if sd else ""
        raise RRSegError(
            f"{label}: no tensor matches {type(target).__name__} ({len(sd)} tensors in the file{first}); "
            "wrong model or weights format?"
        )
    # keep the model's own dtype (e.g. fp16 checkpoints into an fp32 model)
    return {k: v.to(own[k].dtype) for k, v in to_load.items()}


def _finish(
    result: LoadResult,
    module: nn.Module,
    target: nn.Module,
    loaded: Mapping[str, Tensor],
    file_shapes: Mapping[str, tuple[int, ...]],
) -> None:
    own = target.state_dict()
    result.loaded = sorted(loaded)
    result.resized = [k for k in result.loaded if file_shapes.get(k, own[k].shape) != tuple(own[k].shape)]
    result.missing = [k for k in own if k not in loaded and not k.endswith("num_batches_tracked")]
    if _is_segmentor(module) and target is module:
        # training-only RR parameters in the file but not in the model are expected, not worth listing
        result.unexpected = [k for k in result.unexpected if not k.startswith("rebalance.")]


# ---------------------------------------------------------------------------------------- timm's hub
TIMM_SPEC = "timm"
NO_WEIGHTS = "none"

# The ImageNet weights each paper model starts from, as the timm tag nearest to the checkpoint mmsegmentation's
# config for the model loads (docs/FIDELITY.md, "Backbone weights": each tag's origin against mmseg's file). The
# paper presets (configs/<model>/*.yaml) name these; a run that leaves model.pretrained unset is warned with it.
PAPER_WEIGHTS: dict[str, str] = {
    "deeplabv3plus_r50": "timm:resnet50c.gluon_in1k",
    "deeplabv3plus_r101": "timm:resnet101c.gluon_in1k",
    "ocrnet_hr18": "timm:hrnet_w18.ms_in1k",
    "ocrnet_hr48": "timm:hrnet_w48.ms_in1k",
    "upernet_swin_t": "timm:swin_tiny_patch4_window7_224.ms_in1k",
    "upernet_swin_b": "timm:swin_base_patch4_window12_384.ms_in22k",
    "upernet_convnext_t": "timm:convnext_tiny.fb_in1k",
    "upernet_beit_b": "timm:beit_base_patch16_224.in22k_ft_in22k",
    "upernet_beit_l": "timm:beit_large_patch16_224.in22k_ft_in22k",
    # Mask2Former's release loads detectron2 conversions: torchvision's R-50.pkl, the official Swin-T .pkl
    "mask2former_r50": "timm:resnet50.tv_in1k",
    "mask2former_swin_t": "timm:swin_tiny_patch4_window7_224.ms_in1k",
}


def is_no_weights(pretrained: object) -> bool:
    """``"none"`` in any case: no weights, the explicit choice of a random start (``None`` is "not set")."""
    return isinstance(pretrained, str) and pretrained.strip().lower() == NO_WEIGHTS


def usual_weights(name: str, model: nn.Module) -> str | None:
    """The weights a model named ``name`` usually starts from: its ``PAPER_WEIGHTS`` tag for a paper model,
    else ``timm:ARCH.TAG`` of timm's default weights when its backbone is a timm model that has weights; None
    when timm has none for the backbone (the test-sized models, the demo's, which builds from configs)."""
    if name in PAPER_WEIGHTS:
        return PAPER_WEIGHTS[name]
    import timm

    target, _ = _backbone_target(model)
    arch = (getattr(target, "pretrained_cfg", None) or {}).get("architecture")
    tags = timm.list_pretrained(f"{arch}.*") if arch else []
    if not tags:
        return None
    default = timm.models.get_pretrained_cfg(arch)
    full = f"{arch}.{default.tag}" if default is not None and f"{arch}.{default.tag}" in tags else tags[0]
    return f"{TIMM_SPEC}:{full}"


def is_timm_spec(pretrained: object) -> bool:
    """``"timm"`` or ``"timm:TAG"``: the backbone's timm weights (a local file named so: ``./timm``)."""
    return isinstance(pretrained, str) and (pretrained == TIMM_SPEC or pretrained.startswith(TIMM_SPEC + ":"))


def _timm_cfg(target: nn.Module, spec: str, what: str) -> tuple[str, dict]:
    """(``architecture.tag``, timm's pretrained config of it) for the timm model ``target``."""
    import timm

    own = getattr(target, "pretrained_cfg", None) or {}
    arch = own.get("architecture")
    if not arch:
        raise RRSegError(
            f"pretrained={spec!r}: {what}'s backbone ({type(target).__name__}) is not a timm model built by name, "
            "so timm has no weights for it; give a local weights file instead"
        )
    tag = spec[len(TIMM_SPEC) + 1 :] if spec != TIMM_SPEC else (own.get("tag") or "")
    if "." in tag:  # "timm:arch.tag"
        named_arch, _, tag = tag.partition(".")
        if named_arch != arch:
            raise RRSegError(f"pretrained={spec!r}: {what}'s backbone is {arch}, not {named_arch}")
    if not tag:  # the architecture's default weights
        default = timm.models.get_pretrained_cfg(arch)
        tag = default.tag if default is not None and default.tag else ""
    tags = timm.list_pretrained(f"{arch}.*")
    full = f"{arch}.{tag}"
    if full not in tags:
        known = ", ".join(t.split(".", 1)[1] for t in tags) or "(none)"
        raise RRSegError(f"pretrained={spec!r}: timm has no weights {full} for {what}'s backbone; tags of {arch}: "
                         f"{known}")
    cfg = timm.models.get_pretrained_cfg(full)
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        raise RRSegError(f"pretrained={spec!r}: timm lists {full} but has no location for its weights")
    return full, cfg.to_dict()


def _hub_cache() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except ImportError:  # timm then downloads by URL, into torch's hub cache
        return str(Path(torch.hub.get_dir()) / "checkpoints")


def _unavailable(spec: str, full: str, cfg: Mapping, error: BaseException) -> RRSegError:
    hub_id = cfg.get("hf_hub_id")
    text = " ".join(str(error).split())
    why = type(error).__name__ + (f": {text}" if text and len(text) <= 120 else "")
    if hub_id:
        where = f"Hugging Face hub repo {hub_id}"
        file = cfg.get("hf_hub_filename") or "model.safetensors"
        folder = "models--" + hub_id.replace("/", "--")
        how = (f"download https://huggingface.co/{hub_id}/resolve/main/{file} where there is network and give that "
               "file's path as pretrained (model.pretrained: /path/to/model.safetensors), or copy that machine's "
               f"hub cache folder {folder} into {_hub_cache()}")
    else:
        where = f"URL {cfg.get('url')}"
        how = "download it where there is network and give that file's path as pretrained"
    return RRSegError(f"pretrained={spec!r}: cannot get timm weights {full} from the {where} (offline or "
                      f"unreachable, and not in the cache: {why}); {how}")


def load_timm_pretrained(
    module: nn.Module, spec: str = TIMM_SPEC, *, what: str | None = None, verbose: bool = True
) -> LoadResult:
    """The timm weights ``spec`` names (``"timm"``: the backbone's default tag; ``"timm:TAG"`` or
    ``"timm:ARCH.TAG"``: another one) loaded into ``module``'s timm backbone, fetched and read by timm's own
    ``load_pretrained`` (Hugging Face hub download and cache; ``HF_HUB_OFFLINE=1`` works from the cache).

    rrseg's part is the check of what timm read: timm's checkpoint filter for the family (position tables
    resized to the model), then every tensor must fit the (pruned) backbone; the classifier and the layers
    the backbone does not use are reported as unexpected. Raises RRSegError when the backbone is not a timm
    model with weights, for an unknown tag, and when the weights are neither reachable nor cached.
    """
    from timm.models import load_pretrained as timm_load_pretrained

    if not is_timm_spec(spec):
        raise RRSegError(f"pretrained={spec!r}: expected 'timm' or 'timm:TAG'")
    what = what or type(module).__name__
    target, target_name = _backbone_target(module)
    full, cfg = _timm_cfg(target, spec, what)
    result = LoadResult(f"timm {full}", "timm", target_name)
    seen: dict[str, Mapping] = {}

    def check(state_dict: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
        file_shapes = {k: tuple(v.shape) for k, v in state_dict.items()}
        to_load = _matching(_safe_filter(state_dict, model), model, f"timm {full}", file_shapes, result)
        seen.update(to_load=to_load, file_shapes=file_shapes)
        return to_load

    try:
        # num_classes=0: the classifier is dropped; strict=False: the pruned layers are not in the backbone
        timm_load_pretrained(target, pretrained_cfg=cfg, num_classes=0, filter_fn=check, strict=False)
    except RRSegError:
        raise
    except OSError as e:  # hub / URL download and cache errors (offline, unreachable, not cached)
        raise _unavailable(spec, full, cfg, e) from None
    except Exception as e:  # e.g. a corrupt cached file: one line, naming the weights
        msg = " ".join(str(e).split())[:200]
        raise RRSegError(f"pretrained={spec!r}: timm could not load {full} ({type(e).__name__}: {msg})") from None
    if "to_load" not in seen:  # timm read the weights some other way (a model's own custom loader)
        raise RRSegError(f"pretrained={spec!r}: timm loads {full} with a custom loader that rrseg cannot check")
    _finish(result, module, target, seen["to_load"], seen["file_shapes"])
    if verbose:
        logger.info(result.summary())
    return result
