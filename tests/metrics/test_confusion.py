"""ConfusionMatrix / SegMetrics against a naive per-pixel reference, torchmetrics and hand-computed values."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from rrseg.metrics import ConfusionMatrix, SegMetrics

C = 7
IGNORE = 255
# Roles of the classes in the random data below:
#   0..3 appear in labels and predictions;
#   4 appears in labels but is never predicted (IoU 0, acc 0, precision NaN);
#   5 is only predicted, never a label (IoU 0, acc NaN, precision 0);
#   6 is absent everywhere except as a prediction on ignored pixels, which must not count (all NaN).
ONLY_LABELLED, ONLY_PREDICTED, ABSENT = 4, 5, 6


def random_batches(seed: int = 0, shapes=((2, 12, 16), (3, 12, 16), (1, 9, 11))) -> list[tuple[torch.Tensor, ...]]:
    rng = np.random.default_rng(seed)
    out = []
    for shape in shapes:
        label = rng.integers(0, 5, shape)
        pred = np.where(rng.random(shape) < 0.6, label, rng.integers(0, 6, shape))
        pred[pred == ONLY_LABELLED] = 0
        ignored = rng.random(shape) < 0.15
        label[ignored] = IGNORE
        pred[ignored & (rng.random(shape) < 0.5)] = ABSENT
        out.append((torch.from_numpy(pred), torch.from_numpy(label)))
    return out


def naive_figures(batches, num_classes: int, ignore: int = IGNORE) -> dict:
    """Every figure from explicit loops over pixels and classes; no matrix, no vectorised division."""
    tp = [0] * num_classes
    fp = [0] * num_classes
    fn = [0] * num_classes
    total = 0
    for pred, label in batches:
        for p, l in zip(pred.reshape(-1).tolist(), label.reshape(-1).tolist()):
            if l == ignore:
                continue
            total += 1
            if p == l:
                tp[l] += 1
            else:
                fp[p] += 1
                fn[l] += 1

    def ratio(a, b):
        return a / b if b else math.nan

    per = {k: [] for k in ("iou", "acc", "precision", "dice", "fp_rate", "fdr")}
    for c in range(num_classes):
        per["iou"].append(ratio(tp[c], tp[c] + fp[c] + fn[c]))
        per["acc"].append(ratio(tp[c], tp[c] + fn[c]))
        per["precision"].append(ratio(tp[c], tp[c] + fp[c]))
        per["dice"].append(ratio(2 * tp[c], 2 * tp[c] + fp[c] + fn[c]))
        negatives = total - (tp[c] + fn[c])  # labelled pixels of the other classes: FP + TN
        per["fp_rate"].append(ratio(fp[c], negatives))
        per["fdr"].append(ratio(fp[c], tp[c] + fp[c]))

    def mean_defined(values):
        kept = [v for v in values if not math.isnan(v)]
        return sum(kept) / len(kept) if kept else math.nan

    return {
        "tp": tp, "fp": fp, "fn": fn, **per,
        "aAcc": ratio(sum(tp), total),
        "mIoU": mean_defined(per["iou"]), "mAcc": mean_defined(per["acc"]), "mDice": mean_defined(per["dice"]),
    }


def accumulate(batches, num_classes: int = C) -> ConfusionMatrix:
    cm = ConfusionMatrix(num_classes, IGNORE)
    for pred, label in batches:
        cm.update(pred, label)
    return cm


def test_figures_match_naive_reference():
    batches = random_batches()
    m = accumulate(batches).compute()
    ref = naive_figures(batches, C)
    assert m.tp.tolist() == ref["tp"]
    assert m.fp.tolist() == ref["fp"]
    assert m.fn.tolist() == ref["fn"]
    for key in ("iou", "acc", "precision", "dice", "fp_rate", "fdr"):
        np.testing.assert_allclose(getattr(m, key), ref[key], rtol=1e-12, equal_nan=True, err_msg=key)
    for key in ("aAcc", "mIoU", "mAcc", "mDice"):
        assert getattr(m, key) == pytest.approx(ref[key], rel=1e-12), key


def test_absent_and_one_sided_classes():
    m = accumulate(random_batches()).compute()
    # never predicted: IoU and accuracy 0, precision undefined
    assert m.iou[ONLY_LABELLED] == 0 and m.acc[ONLY_LABELLED] == 0 and math.isnan(m.precision[ONLY_LABELLED])
    # only predicted: IoU 0, accuracy undefined, precision 0
    assert m.iou[ONLY_PREDICTED] == 0 and math.isnan(m.acc[ONLY_PREDICTED]) and m.precision[ONLY_PREDICTED] == 0
    # absent (its predictions on ignored pixels do not count): NaN and left out of every mean
    assert m.mat[ABSENT].sum() == 0 and m.mat[:, ABSENT].sum() == 0
    assert all(math.isnan(getattr(m, k)[ABSENT]) for k in ("iou", "acc", "precision", "dice", "fdr"))
    assert m.mIoU == pytest.approx(np.mean(m.iou[:ABSENT]))
    assert m.mAcc == pytest.approx(np.mean([m.acc[c] for c in range(C) if c not in (ONLY_PREDICTED, ABSENT)]))


def test_dataset_level_sums_by_hand():
    # mmsegmentation sums the matrix over the dataset; the per-image mean IoU would be different.
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 0, 0, 1]))  # image 1
    cm.update(torch.tensor([1, 1, 1, 0]), torch.tensor([1, 1, 1, 1]))  # image 2
    m = cm.compute()
    assert m.mat.tolist() == [[2, 1], [1, 4]]
    np.testing.assert_allclose(m.iou, [2 / 4, 4 / 6])
    np.testing.assert_allclose(m.acc, [2 / 3, 4 / 5])
    np.testing.assert_allclose(m.dice, [4 / 6, 8 / 10])
    np.testing.assert_allclose(m.fp_rate, [1 / 5, 1 / 3])
    assert m.aAcc == pytest.approx(6 / 8)
    assert m.mIoU == pytest.approx((1 / 2 + 2 / 3) / 2)
    per_image_mean = ((2 / 3 + 1 / 2) / 2 + (0 / 1 + 3 / 4) / 2) / 2
    assert m.mIoU != pytest.approx(per_image_mean)


def test_against_torchmetrics():
    from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex, MulticlassPrecision

    batches = random_batches(seed=3)
    m = accumulate(batches).compute()
    jac = MulticlassJaccardIndex(num_classes=C, ignore_index=IGNORE, average=None)
    acc = MulticlassAccuracy(num_classes=C, ignore_index=IGNORE, average=None)
    prec = MulticlassPrecision(num_classes=C, ignore_index=IGNORE, average=None)
    overall = MulticlassAccuracy(num_classes=C, ignore_index=IGNORE, average="micro")
    for pred, label in batches:  # torchmetrics also accumulates state over batches (dataset-level)
        for metric in (jac, acc, prec, overall):
            metric.update(pred, label)
    # torchmetrics gives 0 (its zero_division) where the denominator is zero; mmseg semantics give NaN and drop
    # the class from the means. So compare where the denominator is nonzero, and the means over those classes.
    union = m.label_area + m.pred_area - m.tp
    has_union, has_label, has_pred = union > 0, m.label_area > 0, m.pred_area > 0
    assert not has_union.all()  # the data does contain an absent class
    np.testing.assert_allclose(m.iou[has_union], jac.compute().numpy()[has_union], rtol=1e-6)
    np.testing.assert_allclose(m.acc[has_label], acc.compute().numpy()[has_label], rtol=1e-6)
    np.testing.assert_allclose(m.precision[has_pred], prec.compute().numpy()[has_pred], rtol=1e-6)
    assert np.isnan(m.iou[~has_union]).all() and (jac.compute().numpy()[~has_union] == 0).all()
    assert m.mIoU == pytest.approx(float(jac.compute().numpy()[has_union].mean()), rel=1e-6)
    assert m.mAcc == pytest.approx(float(acc.compute().numpy()[has_label].mean()), rel=1e-6)
    assert m.aAcc == pytest.approx(float(overall.compute()), rel=1e-6)


def test_merge_equals_one_update():
    batches = random_batches(seed=1)
    parts = [accumulate(batches[:1]), accumulate(batches[1:2]), accumulate(batches[2:])]
    merged = parts[0].merge(parts[1]).merge(parts[2])
    assert merged is parts[0]
    # one update over all pixels at once (flattened, since the batches have different image sizes)
    pred = torch.cat([p.reshape(-1) for p, _ in batches])
    label = torch.cat([l.reshape(-1) for _, l in batches])
    one = ConfusionMatrix(C, IGNORE)
    one.update(pred, label)
    assert torch.equal(merged.mat, one.mat)
    assert merged.mat.dtype == torch.int64
    with pytest.raises(ValueError, match="merge"):
        merged.merge(ConfusionMatrix(C + 1))


def test_update_shapes_dtypes_and_reset():
    pred, label = random_batches(seed=2)[0]
    a = ConfusionMatrix(C)
    a.update(pred, label)  # [B, H, W]
    b = ConfusionMatrix(C)
    for i in range(pred.shape[0]):
        b.update(pred[i].to(torch.uint8), label[i].to(torch.uint8))  # [H, W], uint8 as read from PNG
    assert torch.equal(a.mat, b.mat)
    with pytest.raises(ValueError, match="shape"):
        a.update(pred[0], label)
    a.reset()
    assert int(a.mat.sum()) == 0
    a.update(torch.zeros(3, 3, dtype=torch.long), torch.full((3, 3), IGNORE))  # all ignored: no-op
    m = a.compute()
    assert int(m.mat.sum()) == 0 and math.isnan(m.aAcc) and math.isnan(m.mIoU)
    with pytest.raises(ValueError):
        ConfusionMatrix(0)


@pytest.mark.parametrize(
    ("pred", "label", "what"),
    [
        ([0, 1, 3], [0, 1, 2], "prediction"),  # prediction == C
        ([0, 1, 255], [0, 1, 2], "prediction"),  # ignore value predicted on a labelled pixel
        ([0, 1, -1], [0, 1, 2], "prediction"),
        ([0, 1, 2], [0, 1, 3], "label"),  # label == C and not ignore
        ([0, 1, 2], [0, 1, -1], "label"),
    ],
)
def test_bad_values_raise(pred, label, what):
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match=what):
        cm.update(torch.tensor(pred), torch.tensor(label))
    assert int(cm.mat.sum()) == 0  # nothing half-counted


def test_out_of_range_prediction_on_ignored_pixel_is_not_an_error():
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([0, 9]), torch.tensor([0, IGNORE]))
    assert cm.mat.tolist() == [[1, 0, 0], [0, 0, 0], [0, 0, 0]]


def test_summary_and_per_class_json():
    batches = random_batches(seed=4)
    m = accumulate(batches).compute()
    ref = naive_figures(batches, C)
    classes = [0, ONLY_PREDICTED, ABSENT]
    s = m.summary(classes)
    assert s["mIoU"] == pytest.approx(np.nanmean([ref["iou"][c] for c in classes]))
    assert s["mAcc"] == pytest.approx(ref["acc"][0])  # the other two have no accuracy
    assert s["mFPR"] == pytest.approx(np.mean([ref["fp_rate"][c] for c in classes]))
    assert math.isnan(m.summary([ABSENT])["mIoU"])
    per = m.per_class()
    text = json.dumps(per, allow_nan=False)  # strict JSON: NaN became null
    back = json.loads(text)
    assert back["iou"][ABSENT] is None and back["acc"][ONLY_PREDICTED] is None
    assert back["iou"][0] == pytest.approx(ref["iou"][0])
    assert back["fp"] == ref["fp"] and back["fn"] == ref["fn"]
    assert back["label_pixels"] == m.label_area.tolist()


def test_segmetrics_from_matrix():
    m = SegMetrics(np.array([[5, 1], [0, 0]]))
    assert m.num_classes == 2
    assert m.iou[0] == pytest.approx(5 / 6) and m.iou[1] == 0.0 and math.isnan(m.acc[1])


def test_all_reduce_without_process_group_is_a_no_op():
    cm = accumulate(random_batches())
    before = cm.mat.clone()
    assert cm.all_reduce() is cm
    assert torch.equal(cm.mat, before)


_WORKER = textwrap.dedent(
    """
    import sys
    import numpy as np
    import torch
    import torch.distributed as dist
    from rrseg.metrics import ConfusionMatrix

    rank, world, init_file, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    dist.init_process_group("gloo", init_method="file://" + init_file, rank=rank, world_size=world)
    data = np.load(sys.argv[5])
    cm = ConfusionMatrix(int(data["num_classes"]))
    for i in range(rank, int(data["n"]), world):  # each rank scores its own share of the images
        cm.update(torch.from_numpy(data[f"pred{i}"]), torch.from_numpy(data[f"label{i}"]))
    cm.all_reduce()
    np.save(out, cm.mat.numpy())
    dist.barrier()
    dist.destroy_process_group()
    """
)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_all_reduce_in_two_process_gloo_group(tmp_path, subprocess_env):
    # Two real processes in a gloo group (started as plain interpreters so that the worker does not depend on
    # how pytest imports this module); each scores half of the images, then all_reduce sums the matrices.
    batches = random_batches(seed=5, shapes=[(1, 10, 13)] * 5)
    arrays = {"num_classes": np.array(C), "n": np.array(len(batches))}
    for i, (pred, label) in enumerate(batches):
        arrays[f"pred{i}"], arrays[f"label{i}"] = pred.numpy(), label.numpy()
    np.savez(tmp_path / "data.npz", **arrays)
    (tmp_path / "worker.py").write_text(_WORKER)
    procs = [
        subprocess.Popen(
            [sys.executable, str(tmp_path / "worker.py"), str(rank), "2", str(tmp_path / "init"),
             str(tmp_path / f"rank{rank}.npy"), str(tmp_path / "data.npz")],
            env=subprocess_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for rank in range(2)
    ]
    try:
        outputs = [p.communicate(timeout=120)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], outputs
    single = accumulate(batches).mat.numpy()
    for rank in range(2):
        np.testing.assert_array_equal(np.load(tmp_path / f"rank{rank}.npy"), single)
    # the ranks really had different shares: neither share alone equals the total
    assert not np.array_equal(accumulate(batches[0::2]).mat.numpy(), single)


# --- the sync-free path (validate_args=False, the default off the CPU) ----------------------------------

# ATen ops that make the host wait for the device: reading a value (.item(), bool(), int(), .tolist()), or an
# output whose size depends on the data. bincount is listed because on CUDA it reads its input's maximum.
_SYNCING_OPS = {"_local_scalar_dense", "item", "is_nonzero", "nonzero", "masked_select", "bincount", "unique",
                "_unique", "_unique2", "unique_dim", "unique_consecutive", "repeat_interleave", "equal"}


class _HostSyncSpy(TorchDispatchMode):
    """Records every ATen op that would synchronise the host with a GPU (works on the CPU)."""

    def __init__(self) -> None:
        super().__init__()
        self.syncs: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name.split("::")[-1]
        bool_index = name in ("index", "index_put", "index_put_") and any(
            isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in args[1] if i is not None
        )
        if name in _SYNCING_OPS or bool_index:
            self.syncs.append(str(func))
        return func(*args, **(kwargs or {}))


def _spy_updates(cm: ConfusionMatrix, batches) -> list[str]:
    with _HostSyncSpy() as spy:
        for pred, label in batches:
            cm.update(pred, label)
    return spy.syncs


def test_default_validation_follows_the_device():
    assert ConfusionMatrix(3).validate_args is True  # CPU: the synchronous check with the named error
    assert ConfusionMatrix(3, device="meta").validate_args is False  # any other device: asynchronous
    assert ConfusionMatrix(3, validate_args=False).validate_args is False


def test_async_update_makes_no_host_sync():
    batches = random_batches(seed=6)
    batches.append((batches[0][0].to(torch.uint8), batches[0][1].to(torch.uint8)))  # as read from PNG
    assert _spy_updates(ConfusionMatrix(C, IGNORE, validate_args=False), batches) == []
    # the spy does catch the checked path's syncs (bool(valid.all()), the boolean index, int(min), bincount)
    syncs = _spy_updates(ConfusionMatrix(C, IGNORE, validate_args=True), batches)
    assert any("_local_scalar_dense" in s for s in syncs) and any("bincount" in s for s in syncs)


def test_async_update_traces_as_one_graph_without_recompiling():
    # fullgraph=True fails on any graph break, and a host sync or a data-dependent shape is one
    import torch._dynamo

    torch._dynamo.reset()
    cm = ConfusionMatrix(C, IGNORE, validate_args=False)
    compiled = torch.compile(cm.update, fullgraph=True, backend="eager", dynamic=False)
    batches = random_batches(seed=7, shapes=[(2, 12, 16)] * 3)
    batches[1][1][:, :6] = IGNORE  # batches differ in their classes and ignored pixels, not in shape
    with torch._dynamo.config.patch(error_on_recompile=True):
        for pred, label in batches:
            compiled(pred, label)
    assert torch.equal(cm.mat, accumulate(batches).mat)
    torch._dynamo.reset()


@pytest.mark.parametrize("ignore", [IGNORE, 0, -1])
def test_async_update_equals_checked_update(ignore):
    batches = random_batches(seed=8)
    if ignore != IGNORE:  # move the ignored pixels to another ignore value; class `ignore` is then never counted
        batches = [(p, torch.where(l == IGNORE, ignore, l)) for p, l in batches]
    batches.append((torch.tensor([[0, 9]]), torch.tensor([[1, ignore]])))  # out-of-range prediction, ignored
    batches.append((torch.zeros(2, 3, dtype=torch.long), torch.full((2, 3), ignore)))  # all ignored
    batches.append((torch.zeros(0, 3, dtype=torch.long), torch.zeros(0, 3, dtype=torch.long)))  # empty
    checked = ConfusionMatrix(C, ignore, validate_args=True)
    fast = ConfusionMatrix(C, ignore, validate_args=False)
    for pred, label in batches:
        checked.update(pred, label)
        fast.update(pred, label)
    assert checked.mat.sum() > 0 and fast.mat.dtype == torch.int64
    assert torch.equal(fast.mat, checked.mat)


@pytest.mark.parametrize(("pred", "label"), [([0, 1, 3], [0, 1, 2]), ([0, 1, -1], [0, 1, 2]),
                                             ([0, 1, 2], [0, 1, 3]), ([0, 1, 2], [0, 1, -1])])
def test_async_update_asserts_on_bad_values(pred, label):
    # on the CPU the asynchronous assertion raises at once; on a GPU it is a device-side assert
    cm = ConfusionMatrix(3, validate_args=False)
    with pytest.raises(RuntimeError, match=r"outside \[0, 3\).*validate_args=True"):
        cm.update(torch.tensor(pred), torch.tensor(label))
    assert int(cm.mat.sum()) == 0
