"""read_label, reduce_zero_label, find_files and the in-process class statistics, on real PNG files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from rrseg.data.labels import find_files, read_label, reduce_zero_label
from rrseg.data.stats import compute_stats, label_histogram, stats_files
from rrseg.errors import RRSegError

H, W = 32, 48


def random_label(seed: int, num_values: int, ignore_frac: float = 0.1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, num_values, (H, W)).astype(np.uint8)
    arr[rng.random((H, W)) < ignore_frac] = 255
    return arr


@pytest.mark.parametrize("mode", ["L", "P"])
def test_read_label_index_png(tmp_path, write_label, mode):
    arr = random_label(0, 150)
    path = write_label(tmp_path / f"x_{mode}.png", arr, mode)
    with Image.open(path) as im:
        assert im.mode == mode
    out = read_label(path)
    assert out.dtype == np.uint8 and out.shape == (H, W)
    np.testing.assert_array_equal(out, arr)


def test_read_label_16_bit(tmp_path, write_label):
    arr = np.arange(H * W, dtype=np.uint16).reshape(H, W) % 1000
    out = read_label(write_label(tmp_path / "x.png", arr, "I;16"))
    assert out.shape == (H, W) and out.max() == 999
    np.testing.assert_array_equal(out.astype(np.int64), arr)


def test_read_label_one_bit(tmp_path):
    arr = np.zeros((H, W), bool)
    arr[3:9, 5:20] = True
    Image.fromarray(arr).save(tmp_path / "mask.png")
    out = read_label(tmp_path / "mask.png")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, arr.astype(np.uint8))


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA"])
def test_read_label_rejects_colour(tmp_path, mode):
    path = tmp_path / f"colour_{mode}.png"
    Image.new(mode, (W, H)).save(path)
    with pytest.raises(RRSegError, match=f"colour_{mode}.png: label is a {mode} image") as info:
        read_label(path)
    assert "\n" not in str(info.value)


def test_read_label_corrupt_and_missing(tmp_path, write_label):
    good = write_label(tmp_path / "good.png", random_label(1, 10))
    data = good.read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.png").write_bytes(b"this is not a png at all")
    for name in ("truncated.png", "garbage.png"):
        with pytest.raises(RRSegError, match=name) as info:
            read_label(tmp_path / name)
        assert "\n" not in str(info.value)
    with pytest.raises(RRSegError, match=r"missing\.png: label file not found"):
        read_label(tmp_path / "missing.png")


def test_reduce_zero_label_against_loop():
    arr = random_label(2, 151)  # ADE20K style: 0 = other, 1..150 = classes, plus 255
    out = reduce_zero_label(arr)
    assert out.dtype == np.uint8
    for v_in, v_out in zip(arr.ravel().tolist(), out.ravel().tolist()):
        expected = 255 if v_in in (0, 255) else v_in - 1
        assert v_out == expected
    wide = reduce_zero_label(arr.astype(np.int32), ignore_index=-1)
    assert wide.dtype == np.int64
    # with another ignore value, 255 is an ordinary value (and shifts like any other)
    assert wide.ravel().tolist() == [-1 if v == 0 else v - 1 for v in arr.ravel().tolist()]
    assert reduce_zero_label(np.array([[0, 1, 2]], np.uint16)).tolist() == [[255, 0, 1]]


def test_reduce_zero_label_custom_ignore():
    out = reduce_zero_label(np.array([[0, 1, 5, 255]], np.int64), ignore_index=-1)
    assert out.tolist() == [[-1, 0, 4, 254]]


def test_find_files(tmp_path, write_label):
    for rel in ("b.png", "a/c.png", "a/deeper/d.png", "a/notes.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    (tmp_path / "dir.png").mkdir()  # a folder whose name ends in .png is not a file
    names = [p.relative_to(tmp_path).as_posix() for p in find_files(tmp_path)]
    assert names == ["a/c.png", "a/deeper/d.png", "b.png"]
    with pytest.raises(RRSegError, match="directory not found"):
        find_files(tmp_path / "missing")
    with pytest.raises(RRSegError, match="not a directory"):
        find_files(tmp_path / "b.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RRSegError, match=r"no \*\.png label files"):
        stats_files(tmp_path / "empty")


def naive_counts(arrays, num_classes):
    image = [0] * num_classes
    pixel = [0] * num_classes
    for arr in arrays:
        for c in range(num_classes):
            n = int((arr == c).sum())
            pixel[c] += n
            image[c] += n > 0
    return image, pixel


def test_label_histogram(tmp_path, write_label):
    arr = random_label(3, 6)
    arr[0, :3] = [9, 9, 7]
    hist, bad = label_histogram(write_label(tmp_path / "x.png", arr), 6)
    assert hist.tolist() == naive_counts([arr], 6)[1]
    assert bad == {7: 1, 9: 2}
    wide = arr.astype(np.uint16)
    wide[1, 0] = 300
    hist, bad = label_histogram(write_label(tmp_path / "w.png", wide, "I;16"), 6)
    assert hist.tolist() == naive_counts([wide], 6)[1]
    assert bad == {7: 1, 9: 2, 300: 1}


@pytest.mark.parametrize("shape", [(7, 9), (1, 1), (5, 6)])  # odd and even pixel counts
@pytest.mark.parametrize("reduce_zero", [False, True])
def test_label_histogram_any_size(tmp_path, write_label, shape, reduce_zero):
    rng = np.random.default_rng(shape[0] * 10 + shape[1])
    arr = rng.choice(np.array([0, 1, 2, 3, 4, 8, 255], np.uint8), size=shape)
    hist, bad = label_histogram(write_label(tmp_path / "x.png", arr), 4, reduce_zero=reduce_zero)
    expected_hist = [0] * 4
    expected_bad: dict[int, int] = {}
    for raw in arr.ravel().tolist():
        v = (255 if raw in (0, 255) else raw - 1) if reduce_zero else raw
        if v < 4:
            expected_hist[v] += 1
        elif v != 255:  # bad values are reported as they are in the file
            expected_bad[raw] = expected_bad.get(raw, 0) + 1
    assert hist.tolist() == expected_hist and bad == expected_bad


@pytest.mark.parametrize("workers", [1, 2])
def test_compute_stats_against_naive(tmp_path, write_label, workers):
    arrays = [random_label(10 + i, 5 if i % 2 else 3) for i in range(5)]  # classes 3, 4 only in some files
    arrays[0][:] = 255  # a fully ignored image still counts as an image
    files = [write_label(tmp_path / f"{i}.png", a, "LP"[i % 2]) for i, a in enumerate(arrays)]
    counts, info = compute_stats(files, 6, workers=workers)
    image, pixel = naive_counts(arrays, 6)
    assert counts.image_counts.tolist() == image and counts.pixel_counts.tolist() == pixel
    assert image[5] == 0 and counts.num_images == 5 and info["num_images"] == 5 and info["skipped"] == []


def test_compute_stats_reduce_zero(tmp_path, write_label):
    arrays = [random_label(20 + i, 5) for i in range(3)]
    files = [write_label(tmp_path / f"{i}.png", a) for i, a in enumerate(arrays)]
    counts, _ = compute_stats(files, 4, reduce_zero_label=True, workers=1)
    reduced = [np.where((a == 0) | (a == 255), 255, a.astype(np.int64) - 1) for a in arrays]
    image, pixel = naive_counts(reduced, 4)
    assert counts.image_counts.tolist() == image and counts.pixel_counts.tolist() == pixel


def test_compute_stats_bad_labels(tmp_path, write_label):
    good = write_label(tmp_path / "good.png", random_label(30, 4))
    bad_arr = random_label(31, 4)
    bad_arr[5, 5] = 4
    bad = write_label(tmp_path / "bad.png", bad_arr)
    rgb = tmp_path / "rgb.png"
    Image.new("RGB", (W, H)).save(rgb)
    with pytest.raises(RRSegError, match=r"bad\.png: label value 4 \(1 pixels\) is outside \[0, 4\)"):
        compute_stats([good, bad], 4, workers=1)
    with pytest.raises(RRSegError, match=r"rgb\.png"):
        compute_stats([good, rgb], 4, workers=1)
    counts, info = compute_stats([good, bad, rgb], 4, workers=1, on_bad_label="skip")
    assert counts.pixel_counts.tolist() == naive_counts([random_label(30, 4)], 4)[1]
    assert counts.num_images == 1
    skipped = {s["path"]: s for s in info["skipped"]}
    assert skipped[str(bad)]["bad_values"] == {4: 1} and skipped[str(bad)]["error"] is None
    assert "RGB" in skipped[str(rgb)]["error"]
    with pytest.raises(RRSegError, match="no label files"):
        compute_stats([], 4)
    with pytest.raises(ValueError, match="on_bad_label"):
        compute_stats([good], 4, on_bad_label="ignore")
