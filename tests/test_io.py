"""Atomic writers: complete files or the old file, never a partial one, and no temporary files left behind."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch

from rrseg.errors import RRSegError
from rrseg.io import (
    atomic_open,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    ensure_writable_dir,
    jsonable,
    read_safetensors,
    remove_stale_temps,
    write_safetensors,
)


def listing(folder) -> list[str]:
    return sorted(os.listdir(folder))


def test_writes_and_leaves_no_temp_files(tmp_path):
    atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01\x02")
    atomic_write_text(tmp_path / "b.txt", "héllo\n")
    atomic_write_json(tmp_path / "c.json", {"x": [1, 2]})
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01\x02"
    assert (tmp_path / "b.txt").read_bytes() == "héllo\n".encode()
    assert json.loads((tmp_path / "c.json").read_text()) == {"x": [1, 2]}
    atomic_write_text(tmp_path / "b.txt", "replaced")
    assert (tmp_path / "b.txt").read_text() == "replaced"
    assert listing(tmp_path) == ["a.bin", "b.txt", "c.json"]


def test_creates_missing_folders(tmp_path):
    target = tmp_path / "x" / "y" / "z.txt"
    atomic_write_text(target, "ok")
    assert target.read_text() == "ok"
    assert listing(target.parent) == ["z.txt"]


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_writer_failing_half_way_keeps_the_old_file(tmp_path, exc):
    target = tmp_path / "report.json"
    target.write_text("old content")
    with pytest.raises(exc), atomic_open(target, "w") as f:
        f.write("new content, half")
        f.flush()
        raise exc("disk full, say")
    assert target.read_text() == "old content"
    assert listing(tmp_path) == ["report.json"]


def test_writer_failing_on_a_new_file_creates_nothing(tmp_path):
    with pytest.raises(ValueError), atomic_open(tmp_path / "new.bin") as f:
        f.write(b"partial")
        raise ValueError("boom")
    assert listing(tmp_path) == []


def test_json_unserialisable_keeps_the_old_file(tmp_path):
    target = tmp_path / "c.json"
    atomic_write_json(target, {"ok": 1})
    with pytest.raises(TypeError):
        atomic_write_json(target, {"bad": object()})
    assert json.loads(target.read_text()) == {"ok": 1}
    assert listing(tmp_path) == ["c.json"]


def test_json_is_strict_and_converts_arrays(tmp_path):
    obj = {
        "nan": float("nan"), "inf": -math.inf, "np_float": np.float32(0.5), "np_int": np.int64(3),
        "array": np.array([[1, 2], [3, 4]]), "with_nan": np.array([1.0, np.nan]), "tensor": torch.tensor([1.5, 2.5]),
        "nested": ({"k": np.bool_(True)},), 7: "int key",
    }
    atomic_write_json(tmp_path / "s.json", obj)

    def reject(name):
        raise AssertionError(f"non-standard JSON constant {name}")

    data = json.loads((tmp_path / "s.json").read_text(), parse_constant=reject)
    assert data == {
        "nan": None, "inf": None, "np_float": 0.5, "np_int": 3, "array": [[1, 2], [3, 4]], "with_nan": [1.0, None],
        "tensor": [1.5, 2.5], "nested": [{"k": True}], "7": "int key",
    }
    assert jsonable((1, [2.0, float("nan")])) == [1, [2.0, None]]


def test_ensure_writable_dir(tmp_path):
    assert ensure_writable_dir(tmp_path / "new" / "dir").is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(RRSegError, match="file"):
        ensure_writable_dir(tmp_path / "file")
    with pytest.raises(RRSegError):
        atomic_write_text(tmp_path / "file" / "below.txt", "x")  # parent is a file


def test_target_that_is_a_directory_is_an_rrseg_error(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(RRSegError, match="out"):
        atomic_write_text(tmp_path / "out", "x")
    assert listing(tmp_path) == ["out"]


def test_safetensors_round_trip_with_metadata_and_shared_storage(tmp_path):
    base = torch.arange(6.0)
    state = {"a": base, "b": base.view(2, 3), "c": torch.zeros(0)}  # aliasing: written as separate tensors
    write_safetensors(tmp_path / "w.safetensors", state, {"text": "x", "config": {"k": [1, 2]}})
    loaded, meta = read_safetensors(tmp_path / "w.safetensors")
    assert set(loaded) == {"a", "b", "c"} and torch.equal(loaded["b"], base.view(2, 3))
    assert meta == {"text": "x", "config": {"k": [1, 2]}}
    assert listing(tmp_path) == ["w.safetensors"]


def test_safetensors_metadata_is_strict_json(tmp_path):
    """Metadata values are stored as strict JSON: NaN / inf as null (as every JSON file rrseg writes)."""
    from safetensors import safe_open

    def reject(constant):
        raise AssertionError(constant)

    write_safetensors(tmp_path / "m.safetensors", {"a": torch.zeros(1)}, {"best": {"mIoU": float("nan"), "it": 3}})
    with safe_open(str(tmp_path / "m.safetensors"), framework="pt") as f:
        raw = f.metadata()["best"]
    assert json.loads(raw, parse_constant=reject) == {"mIoU": None, "it": 3}


def test_every_weights_reader_says_the_same_about_a_corrupt_file(tmp_path):
    from rrseg.engine.checkpoint import read_weights
    from rrseg.integrations.common import load_rr
    from rrseg.models import build_model
    from rrseg.models.weights import load_pretrained
    from rrseg.rebalance import RegionRebalance

    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 16)
    readers = [lambda: read_weights(bad), lambda: load_pretrained(build_model("deeplabv3plus_tiny", 4), bad),
               lambda: load_rr(RegionRebalance(8, 3, [3, 2, 1]), bad)]
    messages = set()
    for read in readers:
        with pytest.raises(RRSegError) as e:
            read()
        messages.add(str(e.value))
    assert len(messages) == 1 and messages.pop().startswith(f"{bad}: truncated or corrupt safetensors file (")


def test_stale_temps_of_atomic_writes_are_removed(tmp_path):
    (tmp_path / ".a.json.0123abcd.tmp").write_text("half")
    (tmp_path / "a.json").write_text("{}")
    remove_stale_temps(tmp_path)
    remove_stale_temps(tmp_path / "absent")
    assert listing(tmp_path) == ["a.json"]
