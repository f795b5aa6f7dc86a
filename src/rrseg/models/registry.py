"""Model registry: factory functions registered by name (timm style).

A family is one module (as a timm model file): its builder, the heads only it uses, and its variants in a
table, as timm's ``model_args``: per name a :class:`ModelVariant` (docstring, fixed architecture, user options
with defaults, the paper's pretrained weights) handed to the builder by :func:`register_variants`, which
registers a factory per name. ``register_model`` takes any other factory function ``fn(num_classes,
**options)``; its signature gives its options. The RR branch is not the factories' business: it is attached to
the built model (``model.set_rebalance``).
"""

from __future__ import annotations

import difflib
import inspect
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from inspect import Parameter
from typing import Any

from rrseg.errors import RRSegError, own_name_hint

__all__ = [
    "ModelVariant",
    "build_model",
    "get_model_factory",
    "list_models",
    "model_options",
    "paper_weights",
    "register_model",
    "register_variants",
]

_MODELS: dict[str, Callable[..., Any]] = {}
_VARIANTS: dict[str, ModelVariant] = {}  # the registered variants' tables, by name


def register_model(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Register a factory ``fn(num_classes, **options) -> Segmentor`` under its name."""
    if fn.__name__ in _MODELS:
        raise ValueError(f"model {fn.__name__!r} is registered twice")
    _MODELS[fn.__name__] = fn
    return fn


@dataclass(frozen=True)
class ModelVariant:
    """One model of a family: ``doc`` (its docstring), ``arch`` (builder arguments fixed for this variant:
    backbone, head widths), ``options`` (what users may set, with defaults, in ``model_options`` order) and
    ``pretrained`` (the paper's model: the ImageNet weights it starts from, ``timm:ARCH.TAG`` as
    ``build_model(pretrained=)`` takes it, the timm tag nearest to the checkpoint mmsegmentation's config loads,
    docs/FIDELITY.md "Backbone weights"; None for the other models)."""

    doc: str
    arch: Mapping[str, Any]
    options: Mapping[str, Any]
    pretrained: str | None = None


def register_variants(builder: Callable[..., Any], variants: Mapping[str, ModelVariant]) -> None:
    """Register a factory ``name(num_classes, *, <options>)`` per variant, which calls
    ``builder(name, num_classes, **variant.arch, **options)``. A builder with ``**options`` takes any option
    (a wrapped library's keyword arguments: the variant's ``options`` list them)."""
    params = inspect.signature(builder).parameters
    open_ended = any(p.kind is Parameter.VAR_KEYWORD for p in params.values())
    takes = {k for k, p in params.items() if p.kind is not Parameter.VAR_KEYWORD} - {"name", "num_classes"}
    needs = {k for k in takes if params[k].default is Parameter.empty}
    # checked at import (all before any is registered), so that a typo in a table fails at once rather than
    # when that variant, perhaps a full-size one no test builds, is first built
    for name, variant in variants.items():
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        given = set(variant.arch) | set(variant.options)
        for what, keys in (
            ("set twice (arch and options)", set(variant.arch) & set(variant.options)),
            (f"not taken by {builder.__name__}", set() if open_ended else given - takes),
            (f"missing for {builder.__name__}", needs - given),
        ):
            if keys:
                raise ValueError(f"model variant {name!r}: {', '.join(sorted(keys))} {what}")
    for name, variant in variants.items():
        register_model(_variant_factory(name, builder, variant))
        _VARIANTS[name] = variant


def _variant_factory(name: str, builder: Callable[..., Any], variant: ModelVariant) -> Callable[..., Any]:
    """A factory that looks like a hand-written one: its signature lists the options (``model_options`` and
    ``help()`` read it), its name and docstring are the variant's."""
    signature = inspect.Signature(
        [
            Parameter("num_classes", Parameter.POSITIONAL_OR_KEYWORD, annotation=int),
            *(Parameter(k, Parameter.KEYWORD_ONLY, default=v) for k, v in variant.options.items()),
        ]
    )

    def factory(num_classes: int, **options: Any) -> Any:
        bound = signature.bind(num_classes, **options)  # an unknown option: Python's own TypeError
        bound.apply_defaults()
        kwargs = dict(bound.arguments)
        return builder(name, kwargs.pop("num_classes"), **variant.arch, **kwargs)

    factory.__signature__ = signature
    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = variant.doc
    factory.__module__ = builder.__module__
    return factory


def list_models(pattern: str = "") -> list[str]:
    """Registered model names (containing ``pattern``), sorted."""
    return sorted(name for name in _MODELS if pattern in name)


def get_model_factory(name: str) -> Callable[..., Any]:
    """The factory registered as ``name``; an unknown name is an RRSegError naming close or known ones."""
    if name not in _MODELS:
        close = difflib.get_close_matches(name, _MODELS, n=3, cutoff=0.5)
        hint = (
            f"; did you mean {', '.join(close)}?" if close else f"; known models: {', '.join(list_models())}"
        )
        raise RRSegError(f"unknown model {name!r}{hint}; {own_name_hint('model')}")
    return _MODELS[name]


def model_options(name: str) -> dict[str, Any]:
    """The options a model accepts, with their defaults."""
    params = inspect.signature(get_model_factory(name)).parameters
    return {k: p.default for k, p in params.items() if k != "num_classes"}


def paper_weights() -> dict[str, str]:
    """{model name: the weights it starts from} for the paper's models (their variants' ``pretrained``)."""
    return {name: v.pretrained for name, v in _VARIANTS.items() if v.pretrained}


def build_model(
    name: str,
    num_classes: int,
    pretrained: str | os.PathLike | None = None,
    **options: Any,
):
    """Build a registered model; optionally load weights (see ``rrseg.models.weights``).

    The RR / CeCo branch is attached to the built model: ``model.set_rebalance(RegionRebalance(
    model.feature_channels, model.num_classes, counts, **options))``.
    ``pretrained``: a local file or folder (timm / safetensors / HF / mmseg / rrseg checkpoint), read as is;
    ``"rrseg:NAME"``, weights shipped with the package; ``"timm"`` / ``"timm:TAG"``, the backbone's timm
    weights, downloaded by timm into the Hugging Face hub cache (or read from it; ``HF_HUB_OFFLINE=1``);
    ``"none"`` (any case) or None, no weights (a file named ``none``: ``./none``).
    ``options``: the model's keyword options (``rrseg.models.model_options(name)``).
    """
    if "rebalance" in options:  # the spelling of earlier versions
        raise RRSegError(
            "build_model(rebalance=...) was removed: build the model, then attach the branch with "
            "model.set_rebalance(RegionRebalance(model.feature_channels, model.num_classes, counts, **options)) "
            "(from rrseg.rebalance; etf=True for ceco)"
        )
    factory = get_model_factory(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise RRSegError(f"{name}: num_classes must be a positive integer, got {num_classes!r}")
    accepted = model_options(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise RRSegError(f"{name}: unknown option {unknown[0]!r}; options: {', '.join(accepted) or '(none)'}")
    from rrseg.models.weights import check_weights_spec, load_weights

    check_weights_spec(pretrained, name)  # before a big model is built for nothing
    try:
        model = factory(num_classes, **options)
    except RRSegError:
        raise
    except (TypeError, ValueError) as e:  # a bad option value (e.g. output_stride=12)
        raise RRSegError(f"{name}: {e}") from None
    load_weights(model, pretrained, what=name)
    return model
