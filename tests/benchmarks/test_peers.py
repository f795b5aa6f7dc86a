"""benchmarks/peers.py: its statistics on hand-made numbers, the interleaving order, the same-model check, and
``--quick`` end to end: in the main venv (marked slow; the mmseg rows reported as not run) and in make
test-mmseg's venv (marked mmseg: every row, mmseg's included, measured)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"


@pytest.fixture(scope="module")
def peers():
    sys.path.insert(0, str(BENCH))
    try:
        import peers
    finally:
        sys.path.remove(str(BENCH))
    return peers


def test_summarize_on_hand_made_numbers(peers):
    # sorted 1..6, 100: median 4; numpy's linear quartiles at positions 1.5 and 4.5: 2.5 and 5.5
    s = peers.summarize([4, 100, 1, 6, 2, 5, 3])
    assert s["n"] == 7 and s["median"] == 4.0 and s["min"] == 1.0 and s["max"] == 100.0
    assert math.isclose(s["iqr_rel"], 3.0 / 4.0) and math.isclose(s["range_rel"], 99.0 / 4.0)
    even = peers.summarize([10.0, 12.0])  # median of an even count: the mean of the middle two
    assert even["median"] == 11.0 and math.isclose(even["iqr_rel"], 1.0 / 11.0)
    assert peers.summarize([5.0, 5.0, 5.0])["iqr_rel"] == 0.0
    with pytest.raises(ValueError):
        peers.summarize([])


def test_paired_ratio_is_per_repetition(peers):
    # rrseg 1, 2, 4 s and the peer 2, 4, 4 s in the same repetitions: ratios 2, 2, 1 -> median 2, quartiles 1.5
    # and 2; the ratio of the medians is 4 / 2
    r = peers.paired_ratio([2.0, 4.0, 4.0], [1.0, 2.0, 4.0])
    assert r["median"] == 2.0 and r["of_medians"] == 2.0
    assert math.isclose(r["iqr_rel"], (2.0 - 1.5) / 2.0) and math.isclose(r["range_rel"], 0.5)
    r = peers.paired_ratio([3.0, 1.0, 9.0], [1.0, 2.0, 3.0])  # ratios 3, 0.5, 3; medians 3 / 2
    assert r["median"] == 3.0 and r["of_medians"] == 1.5
    # a load that slows both sides alike: each side's own spread is large, the paired ratio's none
    peer, ref = [1.1, 2.2, 4.4, 8.8], [1.0, 2.0, 4.0, 8.0]
    drift = peers.paired_ratio(peer, ref)
    assert math.isclose(drift["median"], 1.1) and drift["iqr_rel"] < 1e-12 and drift["range_rel"] < 1e-12
    assert peers.summarize(peer)["iqr_rel"] > 0.5 and peers.summarize(ref)["iqr_rel"] > 0.5
    with pytest.raises(ValueError):
        peers.paired_ratio([1.0, 2.0], [1.0])


def test_interleaved_rotates_the_order_and_times_every_call(peers):
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in ("a", "b", "c")}
    syncs = []
    times = peers.interleaved(fns, warmup=1, reps=4, sync=lambda: syncs.append(1))
    assert "".join(calls) == "abc" + "abc" + "bca" + "cab" + "abc"  # warm-up, then one rotation per repetition
    assert {k: len(v) for k, v in times.items()} == {"a": 4, "b": 4, "c": 4}
    assert all(t >= 0.0 for v in times.values() for t in v)
    assert len(syncs) == 2 * 12  # before and after every timed call


def test_parameter_counts_beyond_one_percent_are_flagged(peers):
    same = peers.Impl("x", "smp", build=lambda: None)
    assert peers._param_note(same, 1_009_999, 1_000_000) == ""
    assert peers._param_note(same, 990_001, 1_000_000) == ""
    assert "not the same model" in peers._param_note(same, 1_010_001, 1_000_000)
    assert "not the same model" in peers._param_note(same, 989_999, 1_000_000)
    nearest = peers.Impl("y", "smp", build=lambda: None, same=False, note="nearest model")
    assert peers._param_note(nearest, 750_000, 1_000_000) == "nearest model; parameters -25.0% of rrseg's"


def _quick(tmp_path: Path, *extra: str) -> tuple[str, dict]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    out, js = tmp_path / "peers.md", tmp_path / "peers.json"
    cmd = [sys.executable, str(BENCH / "peers.py"), "--quick", "--threads", "1", "--out", str(out), "--json",
           str(js), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=540)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert text == proc.stdout
    return text, json.loads(js.read_text())


def _check_measured(rows: list[dict], measured: set[str]) -> None:
    """Every implementation in ``measured`` has times and a summary, every peer a ratio to rrseg, and a peer
    that claims the same model has rrseg's parameter count within 1 %."""
    ref_params = {(r["case"], r["kind"]): r["params"] for r in rows if r["impl"] == "rrseg" and "params" in r}
    for r in rows:
        if r["library"] not in measured:
            continue
        assert r["status"] == "ok", r
        assert len(r["times_s"]) == 3 and r["stats"]["median"] > 0, r
        if r["impl"] != "rrseg":
            assert r["ratio"]["median"] > 0, r
        if "params" in r:
            rel = abs(r["params"] / ref_params[(r["case"], r["kind"])] - 1)
            assert (rel <= 0.01) == r["same_model"], r
            assert ("**not the same model**" in r["note"]) == (rel > 0.01 and r["same_model"]), r


@pytest.mark.slow
def test_quick_runs_without_mmseg(tmp_path, peers):
    from tests.reference import mmseg_env

    if mmseg_env.available():
        pytest.skip("mmseg imports here: test_quick_runs_with_mmseg covers this venv")
    # three rows (the full-size models at 64^2 take minutes): every peer kind, the nearest model and the loader;
    # test_quick_runs_with_mmseg (make test-mmseg) runs every row
    cases = ("upernet_swin_t", "deeplabv3plus_r50", "loader")
    text, results = _quick(tmp_path, "--rows", *cases)
    rows = results["rows"]
    assert {r["case"] for r in rows} == set(cases)
    _check_measured(rows, {"rrseg", "transformers", "smp"})
    mm = [r for r in rows if r["library"] == "mmseg"]
    assert len(mm) == 2 * 2 + 1 and all(r["status"] == peers.NOT_MMSEG for r in mm)
    assert text.count(f"| {peers.NOT_MMSEG} |") == len(mm)
    # the four peers of UPerNet Swin-T, the same model; smp's DeepLabV3+ the nearest one
    swin = {r["impl"]: r for r in rows if r["case"] == "upernet_swin_t" and r["kind"] == "train"}
    assert set(swin) == {"rrseg", "mmseg", "HF transformers", "smp"}
    smp_dlv3 = next(r for r in rows if r["case"] == "deeplabv3plus_r50" and r["library"] == "smp")
    assert not smp_dlv3["same_model"] and "nearest model" in smp_dlv3["note"]
    loader = next(r for r in rows if r["case"] == "loader" and r["impl"] == "rrseg")
    assert loader["images_per_s_per_worker"] > 0
    assert results["machine"]["threads"] == 1 and "--quick" in results["machine"]["command"]
    assert "batch 2 x 64^2, fp32" in text and "spread = IQR / median" in text


@pytest.mark.mmseg
@pytest.mark.slow
def test_quick_runs_with_mmseg(tmp_path, peers):
    from tests.reference import mmseg_env

    if not mmseg_env.available():
        pytest.skip(f"needs mmsegmentation (make test-mmseg): {mmseg_env.unavailable_reason()}")
    text, results = _quick(tmp_path)
    rows = results["rows"]
    _check_measured(rows, {"rrseg", "mmseg", "transformers", "smp"})
    mm = [r for r in rows if r["library"] == "mmseg"]
    assert len(mm) == 4 * 2 + 2 and peers.NOT_MMSEG not in text
    # mmseg's models are rrseg's, parameter for parameter (auxiliary heads left out of both)
    ref = {(r["case"], r["kind"]): r["params"] for r in rows if r["impl"] == "rrseg" and "params" in r}
    assert all(r["params"] == ref[(r["case"], r["kind"])] for r in mm if "params" in r)


def test_compile_switch_adds_rrseg_compiled_after_rrseg_in_every_model_row(peers):
    plain, with_compiled = peers.model_cases(64), peers.model_cases(64, compile=True)
    for a, b in zip(plain, with_compiled):
        names = [i.name for i in a.impls]
        assert [i.name for i in b.impls] == [names[0], "rrseg compiled", *names[1:]]
        assert b.impls[1].library == "rrseg" and b.impls[1].same


@pytest.mark.slow  # inductor compiles a tiny model's training and eval graphs
def test_compiled_rrseg_is_timed_in_the_same_repetitions(peers):
    import torch

    from rrseg.engine.components import cpp_compiler
    from rrseg.models import build_model

    if cpp_compiler() is None:
        pytest.skip("torch.compile's inductor backend needs a C++ compiler on the CPU ($CXX or g++); none found")
    rr = peers.Impl("rrseg", "rrseg", lambda: build_model("deeplabv3plus_tiny", peers.NUM_CLASSES),
                    loss=peers._plain_loss, infer=peers._plain_infer)
    case = peers.Case("tiny", "DeepLabV3+ tiny", [rr, peers.compiled(rr)])
    s = peers.settings(peers.parse_args(["--quick", "--size", "32"]))
    torch._dynamo.reset()
    rows = peers.run_model_case(case, s)
    by = {(r["impl"], r["kind"]): r for r in rows}
    assert set(by) == {(i, k) for i in ("rrseg", "rrseg compiled") for k in ("train", "inference")}
    for kind in ("train", "inference"):
        row = by[("rrseg compiled", kind)]
        assert row["status"] == "ok" and len(row["times_s"]) == s.reps and row["ratio"]["median"] > 0
        assert row["params"] == by[("rrseg", kind)]["params"]
