"""mmsegmentation 1.2.2 as a reference, importable on mmcv-lite (no compiled ``mmcv._ext``): for the tests marked
``mmseg``, which run in ``make test-mmseg``'s venv (.venv-mmseg) and are skipped anywhere mmseg is absent.

Importing this module never fails; ``available()`` says whether mmseg imports. On import of this module (where mmcv
is installed), before mmseg is imported, a stub ``mmcv.ops`` goes into ``sys.modules`` (mmcv-lite's own
``mmcv/ops/__init__.py`` loads the compiled extension and fails), so after it a plain ``import mmseg.models`` works.
The stub serves the pure-PyTorch functions of ``mmcv/ops/point_sample.py`` (``point_sample`` and the rest of that
file) and a placeholder ``sigmoid_focal_loss`` (mmseg's focal_loss.py imports it unconditionally but calls it only
for CUDA tensors); any other name raises ``MmcvOpsUnavailable``, a ``ModuleNotFoundError``, which is what mmseg's and
mmcv's own ``try: from mmcv.ops import X / except ModuleNotFoundError`` fallbacks expect.

    from tests.reference import mmseg_env
    cfg = mmseg_env.base_model_config("deeplabv3plus_r50-d8")   # mmseg's _base_ config, SyncBN -> BN
    cfg["backbone"].update(depth=18)
    model = mmseg_env.build(cfg).eval()
    logits = mmseg_env.predict_logits(model, x)                  # [N, num_classes, H, W]

``build`` also takes ``type='mmpretrain.ConvNeXt'`` (upernet_convnext.py): the scope prefix makes mmengine import
``mmpretrain.registry``, whose MODELS registry (a child of mmengine's root, like mmseg's) imports
``mmpretrain.models`` on first use; ``mmpretrain_available()`` says whether that package imports.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import sys
import types
import warnings
from functools import cache
from pathlib import Path
from typing import Any

__all__ = [
    "MmcvOpsUnavailable",
    "available",
    "base_model_config",
    "build",
    "config_path",
    "install_mmcv_ops_stub",
    "mmpretrain_available",
    "predict_logits",
    "source_path",
]

# the public names of mmcv/ops/point_sample.py (all pure PyTorch)
_POINT_SAMPLE_NAMES = (
    "bilinear_grid_sample",
    "normalize",
    "denormalize",
    "generate_grid",
    "rel_roi_point_to_abs_img_point",
    "get_shape_from_feature_map",
    "abs_img_point_to_rel_img_point",
    "rel_roi_point_to_rel_img_point",
    "point_sample",
    "SimpleRoIAlign",
)


class MmcvOpsUnavailable(ModuleNotFoundError):
    """An ``mmcv.ops`` name that needs mmcv's compiled extension, which mmcv-lite lacks."""


def _unavailable_message(name: str) -> str:
    return (
        f"mmcv.ops.{name} needs mmcv's compiled extension (mmcv._ext), which mmcv-lite does not ship; the stub "
        f"mmcv.ops from tests/reference/mmseg_env.py serves only {', '.join(_POINT_SAMPLE_NAMES)}"
    )


def _needs_ext(name: str):
    def unavailable(*args: Any, **kwargs: Any):
        raise MmcvOpsUnavailable(_unavailable_message(name), name=f"mmcv.ops.{name}")

    unavailable.__name__ = unavailable.__qualname__ = name
    return unavailable


def install_mmcv_ops_stub() -> types.ModuleType:
    """Put the stub ``mmcv.ops`` in ``sys.modules`` (once) and return it. Needs mmcv (mmcv-lite) installed."""
    existing = sys.modules.get("mmcv.ops")
    if existing is not None:
        return existing
    import mmcv

    ops_dir = Path(mmcv.__file__).resolve().parent / "ops"
    # load point_sample.py as mmcv.ops.point_sample without running mmcv/ops/__init__.py (which loads mmcv._ext)
    spec = importlib.util.spec_from_file_location("mmcv.ops.point_sample", ops_dir / "point_sample.py")
    point_sample_mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = point_sample_mod
    try:
        spec.loader.exec_module(point_sample_mod)
    except BaseException:
        del sys.modules[spec.name]
        raise

    stub = types.ModuleType("mmcv.ops", "Stub of mmcv.ops from tests/reference/mmseg_env.py (mmcv-lite, no _ext).")
    stub.__file__ = __file__
    # no __path__: not a package, so `import mmcv.ops.<sub>` raises ModuleNotFoundError, as mmcv-lite callers expect
    for name in _POINT_SAMPLE_NAMES:
        setattr(stub, name, getattr(point_sample_mod, name))
    stub.sigmoid_focal_loss = _needs_ext("sigmoid_focal_loss")
    stub.__all__ = [*_POINT_SAMPLE_NAMES, "sigmoid_focal_loss"]

    def __getattr__(name: str):
        if name.startswith("__") and name.endswith("__"):  # introspection (inspect, pytest, copy): the usual answer
            raise AttributeError(f"module 'mmcv.ops' has no attribute {name!r}")
        raise MmcvOpsUnavailable(_unavailable_message(name), name=f"mmcv.ops.{name}")

    stub.__getattr__ = __getattr__
    sys.modules["mmcv.ops"] = stub
    mmcv.ops = stub
    return stub


def _try_install_stub() -> None:
    """At import of this module: the stub in place where mmcv is installed, so that plain ``import mmseg.models``
    works after ``from tests.reference import mmseg_env``; a no-op (and no error) without mmcv."""
    if importlib.util.find_spec("mmcv") is None:
        return
    with contextlib.suppress(Exception):  # reported by available() / unavailable_reason()
        install_mmcv_ops_stub()


@cache
def _import_mmseg() -> str | None:
    """Import mmseg (models, registries) behind the stub; None on success, else why not."""
    try:
        import mmcv  # noqa: F401
    except ImportError as e:
        return f"mmcv is not installed ({e}); run `make test-mmseg`"
    try:
        install_mmcv_ops_stub()
        with warnings.catch_warnings():  # mmcv-lite's transformer.py: "Fail to import MultiScaleDeformableAttention"
            warnings.filterwarnings("ignore", message=".*MultiScaleDeformableAttention", category=UserWarning)
            import mmseg
            import mmseg.models  # noqa: F401
            from mmseg.utils import register_all_modules

            register_all_modules(init_default_scope=True)
    except Exception as e:  # an incompatible mmseg/mmengine/torch combination: skip with the reason
        return f"mmseg does not import: {type(e).__name__}: {e}"
    return None


def available() -> bool:
    """True if mmseg (with mmcv-lite and mmengine) imports here."""
    return _import_mmseg() is None


def unavailable_reason() -> str | None:
    """Why ``available()`` is False (None when it is True)."""
    return _import_mmseg()


@cache
def _import_mmpretrain() -> str | None:
    if not available():
        return unavailable_reason()
    try:
        import mmpretrain.models
        import mmpretrain.registry  # noqa: F401
    except Exception as e:
        return f"mmpretrain does not import: {type(e).__name__}: {e}"
    return None


def mmpretrain_available() -> bool:
    """True if mmpretrain imports (for ``type='mmpretrain.ConvNeXt'``, mmseg's upernet_convnext.py)."""
    return _import_mmpretrain() is None


def mmpretrain_unavailable_reason() -> str | None:
    return _import_mmpretrain()


def _require() -> None:
    reason = unavailable_reason()
    if reason is not None:
        raise RuntimeError(reason)


def source_path(relative: str) -> Path:
    """The installed file of an mmseg module, e.g. ``source_path("models/backbones/hrnet.py")``."""
    _require()
    import mmseg

    return Path(mmseg.__file__).resolve().parent / relative


def config_path(name: str) -> Path:
    """mmseg's config ``name`` (with or without ``.py``): a ``_base_`` model config (``upernet_swin``:
    ``mmseg/.mim/configs/_base_/models/``) or, with a folder, any config (``swin/swin-tiny-...-512x512``)."""
    name = name.removesuffix(".py")
    rel = name if "/" in name else f"_base_/models/{name}"
    path = source_path(f".mim/configs/{rel}.py")
    if not path.is_file():
        raise FileNotFoundError(f"no mmseg config {name!r} at {path}")
    return path


def _to_plain(obj: Any) -> Any:
    """ConfigDicts / lists / tuples to plain dicts / lists / tuples (deep copy)."""
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_plain(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_to_plain(v) for v in obj)
    return copy.deepcopy(obj)


def _sync_bn_to_bn(obj: Any) -> Any:
    if isinstance(obj, dict):
        out = {k: _sync_bn_to_bn(v) for k, v in obj.items()}
        if out.get("type") in ("SyncBN", "MMSyncBN"):
            out["type"] = "BN"
        return out
    if isinstance(obj, list):
        return [_sync_bn_to_bn(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_sync_bn_to_bn(v) for v in obj)
    return obj


def _drop_pretrained(model: dict) -> None:
    """No checkpoint downloads: ``pretrained`` to None and ``init_cfg=dict(type='Pretrained', ...)`` removed."""
    if model.get("pretrained") is not None:
        model["pretrained"] = None

    def walk(obj: Any) -> None:
        if isinstance(obj, dict):
            init_cfg = obj.get("init_cfg")
            if isinstance(init_cfg, dict) and init_cfg.get("type") == "Pretrained":
                del obj["init_cfg"]
            for v in obj.values():
                walk(v)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                walk(v)

    walk(model)


def base_model_config(name: str) -> dict:
    """The ``model`` dict of mmseg's ``_base_/models/<name>.py`` as plain (deep-copied) dicts, ready for edits and
    ``build``: every ``SyncBN`` norm_cfg is ``BN`` (also ``Feature2Pyramid``'s, whose SyncBN is a class default, not in
    the config); ``data_preprocessor`` dropped (mmengine's BaseDataPreprocessor then, which only moves tensors:
    ``model.predict``/``encode_decode`` take normalised tensors directly); ``pretrained`` None and
    ``init_cfg=Pretrained`` dropped (weights stay at their random init; nothing is downloaded)."""
    _require()
    from mmengine.config import Config

    if "convnext" in name and not mmpretrain_available():
        raise RuntimeError(mmpretrain_unavailable_reason())
    cfg = Config.fromfile(str(config_path(name)))  # upernet_convnext: custom_imports imports mmpretrain.models
    model = _sync_bn_to_bn(_to_plain(cfg.model))
    model.pop("data_preprocessor", None)
    _drop_pretrained(model)
    neck = model.get("neck")
    for n in neck if isinstance(neck, list) else [neck]:
        if isinstance(n, dict) and n.get("type") == "Feature2Pyramid":
            n.setdefault("norm_cfg", dict(type="BN", requires_grad=True))
    return model


def build(cfg: dict):
    """``mmseg.registry.MODELS.build(cfg)`` in the mmseg default scope (registered by ``register_all_modules``).

    ``cfg`` may hold plain dicts (converted to an mmengine ConfigDict: mmseg reads e.g. ``test_cfg.mode`` as an
    attribute). Any ``SyncBatchNorm`` a class default left in the built model becomes a plain batch norm
    (mmengine's ``revert_sync_batchnorm``), so training-mode forwards work without a process group."""
    _require()
    import torch
    from mmengine.config import ConfigDict
    from mmengine.model.utils import revert_sync_batchnorm
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS

    cfg = ConfigDict(copy.deepcopy(cfg))
    with DefaultScope.overwrite_default_scope("mmseg"), warnings.catch_warnings():
        # two notices mmseg 1.2.2 prints for every decode head it builds from its own configs
        warnings.filterwarnings("ignore", message=".*build_loss.. would be deprecated", category=UserWarning)
        warnings.filterwarnings("ignore", message="Default ..avg_non_ignore.. is False", category=UserWarning)
        model = MODELS.build(cfg)
    if any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules()):
        model = revert_sync_batchnorm(model)
    return model


def predict_logits(model, inputs):
    """``model.predict(inputs)`` (test_cfg's whole/slide inference, logits resized to the input size) stacked back
    into one ``[N, num_classes, H, W]`` tensor: the ``seg_logits`` of each SegDataSample (no softmax; with one
    output channel mmseg's postprocess applies a sigmoid)."""
    import torch

    samples = model.predict(inputs)
    return torch.stack([s.seg_logits.data for s in samples])


_try_install_stub()


def config_dict(d: dict):
    """An mmengine ConfigDict (attribute access, as mmseg reads ``test_cfg``)."""
    _require()
    from mmengine.config import ConfigDict

    return ConfigDict(d)
