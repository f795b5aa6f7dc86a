"""Nothing a user hands to rrseg can run code: no pickle is loaded except through ``torch.load(...,
weights_only=True)``, YAML only through safe loaders, and a malicious pickle is refused on every path
that reads user files, without its payload running (checked with a marker file the payload would create).
"""

from __future__ import annotations

import ast
import importlib
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from .conftest import changes, data_sections, snapshot

SRC = Path(__file__).resolve().parents[2] / "src"
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "marshal", "shelve", "jsonpickle"}
UNSAFE_YAML = {"unsafe_load", "unsafe_load_all", "full_load", "full_load_all"}
# torch's weights-only unpickler warns about the protocol of plain pickles before refusing them
pytestmark = pytest.mark.filterwarnings("ignore:Detected pickle protocol")


# ------------------------------------------------------------------------------------------ source scan


def _dotted(node: ast.AST) -> str:
    """``a.b.c`` of a Name/Attribute chain, else ""."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def _resolve(name: str, namespace: dict) -> object:
    head, *rest = name.split(".")
    obj = namespace.get(head)
    for part in rest:
        obj = getattr(obj, part, None)
    return obj


def unsafe_loads(source: str, namespace: dict, where: str = "<source>") -> list[str]:
    """Every call in ``source`` that could unpickle or construct arbitrary objects: torch.load without
    weights_only=True, pickle-family loads, numpy loads that allow pickles, and YAML loads whose Loader is
    not a SafeLoader (resolved in ``namespace``, the module's globals). Returns "where:line: why" strings."""
    tree = ast.parse(source)
    aliases: dict[str, str] = {}  # local name -> module it names, for "import pickle as p"
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                aliases[a.asname or a.name] = a.name
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                if node.module.split(".")[0] in PICKLE_MODULES or (node.module == "torch" and a.name == "load") or (
                        node.module == "yaml" and a.name in UNSAFE_YAML | {"load", "load_all"}):
                    found.append(f"{where}:{node.lineno}: imports {node.module}.{a.name}")
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        if not name:
            continue
        head, _, attr = name.rpartition(".")
        module = aliases.get(head, head)
        kwargs = {k.arg: k.value for k in node.keywords if k.arg}
        line = f"{where}:{node.lineno}"
        if module == "torch" and attr == "load":
            flag = kwargs.get("weights_only")
            if not (isinstance(flag, ast.Constant) and flag.value is True):
                found.append(f"{line}: torch.load without weights_only=True")
        elif module.split(".")[0] in PICKLE_MODULES and attr in ("load", "loads", "Unpickler", "open"):
            found.append(f"{line}: {module}.{attr} unpickles")
        elif module in ("numpy", "np") and attr == "load":
            flag = kwargs.get("allow_pickle")
            if flag is not None and not (isinstance(flag, ast.Constant) and flag.value is False):
                found.append(f"{line}: numpy.load with allow_pickle")
        elif module == "yaml" and attr in UNSAFE_YAML:
            found.append(f"{line}: yaml.{attr}")
        elif module == "yaml" and attr in ("load", "load_all"):
            loader = kwargs.get("Loader") or (node.args[1] if len(node.args) > 1 else None)
            cls = _resolve(_dotted(loader), namespace) if loader is not None else None
            if not (isinstance(cls, type) and issubclass(cls, yaml.SafeLoader)):
                found.append(f"{line}: yaml.{attr} with Loader={_dotted(loader) if loader is not None else None}")
    return found


def test_src_loads_nothing_that_can_run_code():
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 40
    found, torch_loads, yaml_loads = [], 0, 0
    for path in files:
        source = path.read_text()
        module = ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        namespace = vars(importlib.import_module(module)) if "yaml.load(" in source else {}
        found += unsafe_loads(source, namespace, str(path.relative_to(SRC)))
        torch_loads += source.count("torch.load(")
        yaml_loads += source.count("yaml.load(") + source.count("yaml.safe_load(")
    assert found == []
    # the scan did see the loading code (YAML: rrseg.schema's one reader, and check-data's look at a file)
    assert torch_loads >= 2 and yaml_loads >= 2


def test_the_scan_finds_unsafe_calls():
    """The scanner itself, on code that does each forbidden thing (and on the safe forms)."""

    class MyLoader(yaml.SafeLoader):
        pass

    bad = """
import torch, yaml, pickle, numpy as np
import pickle as pk
from dill import loads
torch.load(f)
torch.load(f, weights_only=False)
torch.load(f, weights_only=flag)
pickle.load(f)
pk.loads(b)
np.load(f, allow_pickle=True)
yaml.load(t)
yaml.load(t, Loader=yaml.Loader)
yaml.load(t, Loader=yaml.FullLoader)
yaml.load(t, yaml.UnsafeLoader)
yaml.unsafe_load(t)
yaml.full_load(t)
"""
    good = """
import torch, yaml, numpy as np
torch.load(f, map_location="cpu", weights_only=True)
yaml.safe_load(t)
yaml.load(t, Loader=yaml.SafeLoader)
yaml.load(t, Loader=MyLoader)
np.load(f)
"""
    namespace = {"yaml": yaml, "MyLoader": MyLoader}
    flagged = {int(f.split(":")[1]) for f in unsafe_loads(bad, namespace)}
    assert flagged == set(range(4, 17))  # every line after the two plain imports
    assert unsafe_loads(good, namespace) == []


# ------------------------------------------------------------------------------------------ malicious pickles


class Payload:
    """Unpickled, this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_evil(path: Path, marker: Path, fmt: str) -> Path:
    """A weights-looking file whose unpickling runs the payload: plain pickle or torch.save's zip format."""
    path.parent.mkdir(parents=True, exist_ok=True)
    obj = {"state_dict": {"conv.weight": torch.zeros(2)}, "extra": Payload(marker)}
    if fmt == "pickle":
        path.write_bytes(pickle.dumps(obj))
    else:
        torch.save(obj, path)
    return path


FORMATS = ["pickle", "torch_zip"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_payload_is_live(tmp_path, fmt):
    """Control: the same files do run their payload when unpickled the unsafe way."""
    marker = tmp_path / "ran"
    path = write_evil(tmp_path / "evil.pt", marker, fmt)
    if fmt == "pickle":
        pickle.loads(path.read_bytes())
    else:
        torch.load(path, weights_only=False)
    assert marker.exists()


def assert_refused(call_rrseg, root: Path, argv: list, message: str, marker: Path) -> None:
    """``rrseg *argv`` exits 2 with ``message`` and no traceback, changes nothing under ``root``, and the
    payload that would create ``marker`` never ran."""
    before = snapshot(root)
    proc = call_rrseg(*argv)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert message in proc.stderr
    assert changes(before, snapshot(root)) == []
    assert not marker.exists()


@pytest.mark.parametrize("fmt", FORMATS)
def test_resume_refuses_a_state_file_with_code(tmp_path, tiny_config, call_rrseg, fmt):
    from rrseg.engine import checkpoint as ckpt
    from rrseg.models import build_model

    marker = tmp_path / "ran"
    cfg = tiny_config("run", train={"tensorboard": False, "progress": False})
    work = tmp_path / "run"
    model = build_model("deeplabv3plus_tiny", num_classes=6)
    folder = ckpt.save_training_checkpoint(work, 2, model.state_dict(), {"iteration": 2}, {"format": "rrseg"})
    write_evil(folder / "state.pt", marker, fmt)
    proc = call_rrseg("train", cfg, "--resume")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"{folder / 'state.pt'}: refused to load: not plain tensors and data" in proc.stderr
    assert not marker.exists()


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin"])
def test_eval_and_predict_refuse_pickles(tmp_path, tiny_config, tiny_dataset, call_rrseg, fmt, suffix):
    marker = tmp_path / "ran"
    evil = write_evil(tmp_path / f"model{suffix}", marker, fmt)
    for argv in (["eval", tiny_config("run"), evil, "--out", tmp_path / "eval_out"],
                 ["predict", evil, tiny_dataset / "images" / "val" / "000000.jpg", "--out", tmp_path / "pred_out"]):
        assert_refused(call_rrseg, tmp_path, argv, f"{evil}: not a safetensors checkpoint", marker)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("layout", ["model.pt", "model.pth", "model.bin", "model.ckpt", "hf/pytorch_model.bin"])
def test_load_pretrained_refuses_pickles(tmp_path, fmt, layout):
    from rrseg.errors import RRSegError
    from rrseg.models import build_model
    from rrseg.models.weights import load_pretrained

    marker = tmp_path / "ran"
    evil = write_evil(tmp_path / layout, marker, fmt)
    model = build_model("deeplabv3plus_tiny", num_classes=6)
    target = evil.parent if layout.startswith("hf/") else evil
    with pytest.raises(RRSegError, match="cannot read as a weights-only PyTorch checkpoint"):
        load_pretrained(model, target)
    assert not marker.exists()


def test_training_with_pickled_pretrained_weights(tmp_path, tiny_config, call_rrseg):
    marker = tmp_path / "ran"
    evil = write_evil(tmp_path / "backbone.pth", marker, "torch_zip")
    cfg = tiny_config("run", model={"name": "deeplabv3plus_tiny", "pretrained": str(evil)})
    assert_refused(call_rrseg, tmp_path, ["train", cfg], f"{evil}: cannot read as a weights-only PyTorch checkpoint",
                   marker)


def test_dataset_yaml_with_a_python_tag(tmp_path, tiny_dataset, tiny_config, call_rrseg):
    marker = tmp_path / "ran"
    root = tmp_path / "data"
    shutil.copytree(tiny_dataset, root)
    spec = root / "dataset.yaml"
    # a key of its own (a second `name` would be refused as a duplicate key before the tag is seen)
    spec.write_text(spec.read_text() + f'payload: !!python/object/apply:os.system ["touch {marker}"]\n')
    cfg = tiny_config("run", data=data_sections(root))
    assert_refused(call_rrseg, tmp_path, ["train", cfg], f"{spec}: refused a YAML tag", marker)
