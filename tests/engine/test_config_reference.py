"""The config reference: docs/CONFIG.md is the generator's output (regenerate with ``rrseg config reference -o
docs/CONFIG.md``), every key of the schema (the loss options of every registered loss included) has a meaning and
is in it, and ``rrseg config reference`` prints or writes it."""

from __future__ import annotations

import dataclasses
import difflib
import typing
from pathlib import Path

from rrseg.cli.main import main
from rrseg.engine import config as C
from rrseg.engine.reference import REGENERATE, config_reference, schema_keys
from rrseg.rebalance.registry import PIXEL_LOSSES, REGION_LOSSES
from rrseg.schema import field_help

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "CONFIG.md"


def test_config_md_is_the_generated_reference():
    expected = config_reference()
    actual = DOC.read_text(encoding="utf-8") if DOC.is_file() else ""
    if actual != expected:
        diff = "".join(list(difflib.unified_diff(actual.splitlines(True), expected.splitlines(True),
                                                 "docs/CONFIG.md", "generated"))[:60])
        raise AssertionError(f"docs/CONFIG.md differs from the schema's reference; regenerate it: `{REGENERATE}` "
                             f"(from the repository root)\n{diff}")
    assert REGENERATE in actual.split("\n\n")[1]  # the top of the file says how


def _sections(cls: type):
    """(class, field) of every field of ``cls`` and of its sections, loss sections excepted (checked below)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        yield cls, f
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp) and not C._is_loss_section(tp):
            yield from _sections(tp)


def test_every_key_and_section_has_a_meaning():
    missing = [f"{cls.__name__}.{f.name}" for cls, f in _sections(C.Config) if not field_help(cls, f).strip()]
    for table in (PIXEL_LOSSES, REGION_LOSSES):
        missing += [f"{cls.__name__}.{f.name}" for cls in table.values() for f in dataclasses.fields(cls)
                    if not field_help(cls, f).strip()]
    assert not missing, f"config keys without a meaning (rrseg.schema.setting / OPTIONS_HELP): {missing}"


def test_every_key_is_in_the_reference_with_its_default():
    text = config_reference()
    keys = schema_keys()
    assert len({k for k, _, _ in keys}) > 80
    for loss in (*PIXEL_LOSSES.values(), *REGION_LOSSES.values()):  # every registered loss's options are walked
        assert any(cls is loss for _, cls, _ in keys), loss
    rows = {line.split("|")[1].strip(" `"): line for line in text.splitlines() if line.startswith("| `")}
    for key, _, _ in keys:
        if key.endswith(".type") and key.startswith("loss."):
            assert f"`{key}` (str, default `" in text
            continue
        assert key in rows, key
    # defaults as `rrseg config show` writes them
    assert "| `[512, 512]` |" in rows["data.crop_size"] and "| `6.0e-05` |" in rows["optim.lr"]
    assert "| `val` |" in rows["data.val.split"] and "| `null` |" in rows["model.pretrained"]
    assert "`sgd` \\| `adamw`" in rows["optim.type"] and "> 0" in rows["optim.lr"]
    # a loss option that two losses share is listed once per kind, the others under their loss
    assert "#### `loss.region.type: ceco`" in text and "`loss.region.logit_scale`" in text
    assert "#### `loss.pixel.type: focal`" in text and "`loss.pixel.gamma`" in text


def test_reference_command_prints_and_writes_it(tmp_path, capsys):
    assert main(["config", "reference"]) == 0
    assert capsys.readouterr().out == config_reference()
    out = tmp_path / "CONFIG.md"
    assert main(["config", "reference", "-o", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == config_reference()
