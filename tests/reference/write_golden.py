"""Write the mmseg golden files (make test-mmseg): per family of :mod:`tests.reference.families`, mmseg's own
outputs (float64, stored as float32) for the family's inputs, with the key table of its checkpoint, the mmseg
version and the config it came from, as ``tests/models/golden/<family>.safetensors``. The fast tier
(tests/models/test_mmseg_golden.py) rebuilds the checkpoint from the key table and checks rrseg against them.

    .venv-mmseg/bin/python -m tests.reference.write_golden [FAMILY ...]
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from tests.reference import families, mmseg_env


def write(name: str, out_dir: Path) -> Path:
    import mmseg

    family = families.FAMILIES[name]
    from tests.reference import mmseg_outputs

    ref, keys = mmseg_outputs.outputs(family)
    meta = {
        "family": name,
        "mmseg_version": mmseg.__version__,
        "mmseg_config": family.config,
        "overrides": json.dumps(family.tiny),
        "rrseg_model": family.rrseg_tiny,
        "rrseg_options": json.dumps(family.rrseg_options),
        "keys": json.dumps({k: [list(shape), dtype] for k, (shape, dtype) in keys.items()}),
        "note": "mmseg outputs in float64, stored as float32; weights: tests.reference.families.fill_state_dict",
    }
    tensors = {k: v.to(torch.float32).contiguous() for k, v in ref.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.safetensors"
    if _same(path, tensors, meta):  # the file's layout bytes may vary between writes: keep an equal one
        return path
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return path


def _same(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> bool:
    if not path.is_file():
        return False
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        if f.metadata() != meta or set(f.keys()) != set(tensors):
            return False
        return all(torch.equal(f.get_tensor(k), v) for k, v in tensors.items())


def main(argv: list[str]) -> int:
    if not mmseg_env.available():
        print(f"mmseg is not importable: {mmseg_env.unavailable_reason()}", file=sys.stderr)
        return 2
    names = argv or list(families.FAMILIES)
    for name in names:
        family = families.FAMILIES[name]
        if family.needs == "mmpretrain" and not mmseg_env.mmpretrain_available():
            print(f"{name}: skipped (mmpretrain: {mmseg_env.mmpretrain_unavailable_reason()})", file=sys.stderr)
            continue
        path = write(name, Path(families.GOLDEN_DIR))
        print(f"{path}: {path.stat().st_size // 1024} kB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
