"""Checkpoints: safetensors weights + weights_only state, atomic folders, pruning, refusal of bad files."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
from torch import nn

from rrseg.engine import checkpoint as ckpt
from rrseg.errors import RRSegError


def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))


def test_weights_round_trip_with_metadata(tmp_path):
    m = model()
    ckpt.save_weights(tmp_path / "w.safetensors", m.state_dict(), {"num_classes": 2, "config": {"a": [1, 2]}})
    state, meta = ckpt.read_weights(tmp_path / "w.safetensors")
    assert meta == {"num_classes": 2, "config": {"a": [1, 2]}}
    m2 = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))
    ckpt.load_weights(m2, state, "w")
    for (k, a), b in zip(m.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(a, b), k


def test_other_architecture_and_shape_mismatch_are_refused(tmp_path):
    state = model().state_dict()
    other = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Conv2d(4, 3, 1))
    with pytest.raises(RRSegError, match=r"2.weight has shape \(2, 4, 1, 1\) in the checkpoint, \(3, 4, 1, 1\)"):
        ckpt.load_weights(other, state, "ck")
    with pytest.raises(RRSegError, match="another architecture: 2 missing keys"):
        ckpt.load_weights(nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1), nn.Conv2d(2, 2, 1)),
                          state, "ck")


def test_truncated_safetensors_is_a_clear_error(tmp_path):
    p = tmp_path / "w.safetensors"
    ckpt.save_weights(p, model().state_dict())
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(RRSegError, match="truncated or corrupt"):
        ckpt.read_weights(p)


class Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED_BY_PICKLE",))


def test_state_with_code_is_refused_without_running_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open(tmp_path / "state.pt", "wb") as f:
        pickle.dump({"iteration": 1, "evil": Payload()}, f)
    with pytest.raises(RRSegError, match="refused to load"):
        ckpt.load_state(tmp_path / "state.pt")
    assert not (tmp_path / "PWNED_BY_PICKLE").exists()


def test_training_checkpoints_rotate_and_latest_points_to_complete_folder(tmp_path):
    m = model()
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    m(torch.randn(2, 3, 4, 4)).sum().backward()
    opt.step()
    for it in (10, 20, 30):
        state = {"optimizer": opt.state_dict(), "iteration": it, "rng": ckpt.capture_rng()}
        ckpt.save_training_checkpoint(tmp_path, it, m.state_dict(), state, {"format": "rrseg"}, keep_last=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["iter_0000020", "iter_0000030", "latest"]
    latest = ckpt.latest_checkpoint(tmp_path)
    assert latest.name == "iter_0000030"
    state = ckpt.load_state(latest / "state.pt")
    assert state["iteration"] == 30
    opt2 = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    opt2.load_state_dict(state["optimizer"])
    assert ckpt.find_checkpoint(tmp_path) == latest / "model.safetensors"


def test_failed_write_leaves_previous_checkpoint(tmp_path, monkeypatch):
    m = model()
    ckpt.save_training_checkpoint(tmp_path, 10, m.state_dict(), {"iteration": 10}, {}, keep_last=2)

    def boom(obj):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt, "_torch_bytes", boom)
    with pytest.raises(OSError):
        ckpt.save_training_checkpoint(tmp_path, 20, m.state_dict(), {"iteration": 20}, {}, keep_last=2)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(("iter", "."))] == [
        "iter_0000010"
    ]
    assert ckpt.load_state(ckpt.latest_checkpoint(tmp_path) / "state.pt")["iteration"] == 10


def test_rng_round_trip_through_weights_only_state(tmp_path):
    import random

    import numpy as np

    state = ckpt.capture_rng()
    torch.save({"rng": state}, tmp_path / "s.pt")
    a = (torch.rand(3), np.random.rand(3), random.random())
    ckpt.restore_rng(ckpt.load_state(tmp_path / "s.pt")["rng"])
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
