"""Model registry: plain factory functions registered by name (timm style)."""

from __future__ import annotations

import difflib
import inspect
import os
from collections.abc import Callable
from typing import Any

from rrseg.errors import RRSegError

__all__ = ["build_model", "get_model_factory", "list_models", "register_model"]

_MODELS: dict[str, Callable[..., Any]] = {}


def register_model(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Register a factory ``fn(num_classes, *, rebalance=None, **options) -> Segmentor`` under its name."""
    if fn.__name__ in _MODELS:
        raise ValueError(f"model {fn.__name__!r} is registered twice")
    _MODELS[fn.__name__] = fn
    return fn


def list_models(pattern: str = "") -> list[str]:
    """Registered model names (containing ``pattern``), sorted."""
    return sorted(name for name in _MODELS if pattern in name)


def get_model_factory(name: str) -> Callable[..., Any]:
    if name not in _MODELS:
        close = difflib.get_close_matches(name, _MODELS, n=3, cutoff=0.5)
        hint = (
            f"; did you mean {', '.join(close)}?" if close else f"; known models: {', '.join(list_models())}"
        )
        raise RRSegError(f"unknown model {name!r}{hint}")
    return _MODELS[name]


def model_options(name: str) -> dict[str, Any]:
    """The options a model accepts, with their defaults."""
    params = inspect.signature(get_model_factory(name)).parameters
    return {k: p.default for k, p in params.items() if k not in ("num_classes", "rebalance")}


def build_model(
    name: str,
    num_classes: int,
    rebalance: Any = None,
    pretrained: str | os.PathLike | None = None,
    **options: Any,
):
    """Build a registered model; optionally load weights (see ``rrseg.models.weights``).

    ``rebalance``: None / "none", or ``{"type": "rr" | "ceco", "counts": ..., **RegionRebalance options}``.
    ``pretrained``: a local file or folder (timm / safetensors / HF / mmseg / rrseg checkpoint), read as is;
    ``"rrseg:NAME"``, weights shipped with the package; ``"timm"`` / ``"timm:TAG"``, the backbone's timm
    weights, downloaded by timm into the Hugging Face hub cache (or read from it; ``HF_HUB_OFFLINE=1``).
    ``options``: the model's keyword options (``rrseg.models.model_options(name)``).
    """
    factory = get_model_factory(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise RRSegError(f"{name}: num_classes must be a positive integer, got {num_classes!r}")
    accepted = model_options(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise RRSegError(f"{name}: unknown option {unknown[0]!r}; options: {', '.join(accepted) or '(none)'}")
    if isinstance(pretrained, bool) or (
        isinstance(pretrained, str) and pretrained.lower() in ("true", "false", "imagenet")
    ):
        raise RRSegError(f"{name}: pretrained={pretrained!r}: give 'timm' (the backbone's timm weights), "
                         "'timm:TAG', 'rrseg:NAME' or a local weights file")
    try:
        model = factory(num_classes, rebalance=rebalance, **options)
    except RRSegError:
        raise
    except (TypeError, ValueError) as e:  # a bad option value (e.g. output_stride=12)
        raise RRSegError(f"{name}: {e}") from None
    if pretrained:
        from rrseg.models.weights import is_timm_spec, load_pretrained, load_timm_pretrained

        if is_timm_spec(pretrained):
            load_timm_pretrained(model, str(pretrained), what=name)
        else:
            load_pretrained(model, pretrained)
    return model
