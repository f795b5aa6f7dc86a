"""Region rebalance for mask classification on the CPU (issue 26): mask2former_small on the demo's synthetic long
tail, 3 seeds each of plain, + RR branch, + rebalanced query classifier, + LTSS's frequency-based matcher, and one
combination of them, next to the per-pixel demo model's CE and RR rows of the long-tail study.

The real run (about 3.5 hours on one core; the lead runs it), one line:

  OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/m2f_rr_study.py --results-dir benchmarks/results/m2f_rr

Smoke test (5 iterations, seed 0, the combination on seed 1; a few minutes):

  PYTHONPATH=src python benchmarks/m2f_rr_study.py --out /tmp/m2f_smoke --iters 5 --seeds 0 --combo-seeds 1

Every run is the packaged demo config with benchmarks/mask2former_cpu.py's Mask2Former recipe (``m2f_overrides``:
mask2former_small, the set criterion at 441 points, AdamW lr 1e-3 with the release's optimizer rules) and one or
more switches:

- ``rr``: ``loss.region.type=rr`` (RR's released defaults on the mask features);
- ``query-prior``: ``loss.pixel.query_prior=region`` (every query's class logits + the log region prior in the loss);
- ``freq-matcher``: ``loss.pixel.matcher=frequency`` at s = 2 (LTSS's) and t = the image frequency of the most
  frequent class of the rare group (default split): LTSS's t = 3e-4 on ADE20K-Full sits likewise at its rare /
  common border (rare: at most 5 of its 25574 images, 2.0e-4; common from 6, 2.3e-4), so a class at the border
  takes 2 queries and the rarer ones more (here up to 6 of the 16 queries). ``--matcher-t`` overrides it.

The combination is chosen on seed 0 alone by a rule fixed before any run: every switch whose seed-0 run beats
plain's seed-0 rare mIoU without losing more than 1 point of overall mIoU; if fewer than two qualify, the two with
the best seed-0 rare mIoU. It is run and reported on ``--combo-seeds`` (1 and 2: seeds its choice never saw).
``query-prior-matched`` (the prior on the matched queries only) runs only when named (``--methods``); the
200-iteration scope experiment in docs/BENCHMARKS.md is ``--methods plain query-prior query-prior-matched --seeds 0
--iters 200``.

Each finished run writes its JSON to the results folder (method, seed, iterations, the summary row, wall time,
overrides, the recipe's SHA-256) and a run with a JSON is skipped, so an interrupted study continues where it
stopped (a run stopped mid-way resumes from its checkpoint when its work dir is still there). Results of another
recipe (demo config or Mask2Former overrides) are ignored and rerun. Writes RESULTS/results.md and results.json:
mean ± standard deviation per frequency group, rare precision and FPR, wall time, and the per-pixel rows.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import statistics
import sys
from pathlib import Path

import longtail_study
import torch
from longtail_study import aggregate, config_sha256, read_results, table
from mask2former_cpu import m2f_overrides

from rrseg.io import atomic_write_json, atomic_write_text
from rrseg.metrics.groups import frequency_groups
from rrseg.rebalance import ClassCounts
from rrseg.tools.demo import DEMO_CONFIG, prepare_dataset

SWITCHES = ("rr", "query-prior", "freq-matcher")
NAMED_ONLY = ("query-prior-matched",)
LTSS_S = 2.0
ROOT = Path(__file__).resolve().parents[1]
PER_PIXEL = ROOT / "benchmarks" / "results" / "longtail"  # the long-tail study's per-run JSONs


def border_t(counts: ClassCounts) -> float:
    """The frequency matcher's t for these counts: the image frequency of the most frequent rare-group class."""
    rare = frequency_groups(counts.image_counts)["rare"]
    return float(counts.image_counts[rare].max()) / float(counts.num_images)


def switch_overrides(name: str, t: float) -> list[str]:
    """The overrides of one switch (``plain``: none)."""
    known = {
        "plain": [],
        "rr": ["loss.region.type=rr"],
        "query-prior": ["loss.pixel.query_prior=region"],
        "query-prior-matched": ["loss.pixel.query_prior=region_matched"],
        "freq-matcher": ["loss.pixel.matcher=frequency", f"loss.pixel.matcher_t={t!r}",
                         f"loss.pixel.matcher_s={LTSS_S}"],
    }
    if name not in known:
        raise SystemExit(f"unknown method {name!r}: one of {', '.join(known)} or a combination a+b")
    return known[name]


def overrides_of(method: str, t: float) -> list[str]:
    """A method's overrides: one switch, or switches joined by ``+`` (``rr+query-prior``)."""
    return [o for part in method.split("+") for o in switch_overrides(part, t)]


def recipe_sha256(config: Path, lr: float) -> str:
    """The demo config's SHA-256 with the Mask2Former recipe's overrides: a result of another recipe is rerun."""
    return hashlib.sha256((config_sha256(config) + json.dumps(m2f_overrides(lr))).encode()).hexdigest()


def run_one(out: Path, results: Path, config: Path, sha: str, method: str, iters: int, seed: int, base: list[str],
            t: float) -> dict:
    """One run of ``method`` (the long-tail study's :func:`longtail_study.run_one`, with this study's switches, on
    the CPU): skipped when its JSON of this recipe exists, the JSON written as soon as it has finished."""
    return longtail_study.run_one(out, results, config, sha, method, iters, seed, base, overrides_of(method, t),
                                  device="cpu")


def choose_combination(seed0: dict[str, dict]) -> tuple[str, str]:
    """The combination by the module's rule from the seed-0 records of plain and the switches; and why."""
    plain = seed0["plain"]["row"]
    rows = {s: seed0[s]["row"] for s in SWITCHES}
    good = [s for s in SWITCHES if rows[s]["rare_mIoU"] > plain["rare_mIoU"]
            and rows[s]["overall_mIoU"] >= plain["overall_mIoU"] - 0.01]
    if len(good) >= 2:
        return "+".join(good), f"seed 0: {', '.join(good)} beat plain on rare mIoU within 1 point overall"
    best = sorted(SWITCHES, key=lambda s: -rows[s]["rare_mIoU"])[:2]
    best = [s for s in SWITCHES if s in best]  # in the switches' order
    return "+".join(best), (f"seed 0: {len(good)} switch(es) beat plain on rare mIoU within 1 point overall; the two "
                            f"best by rare mIoU taken")


def per_pixel_rows(iters: int) -> dict[str, list[dict]]:
    """The long-tail study's CE and RR runs of the demo model (deeplabv3plus_small), this demo config only."""
    if not PER_PIXEL.is_dir():
        return {}
    records, _ = read_results(PER_PIXEL, config_sha256(Path(DEMO_CONFIG)))
    rows = {}
    for method, label in (("ce", "per-pixel CE (deeplabv3plus_small)"), ("rr", "per-pixel + RR")):
        recs = sorted((r for r in records if r["method"] == method and r["iters"] == iters), key=lambda r: r["seed"])
        if recs:
            rows[label] = recs
    return rows


def _finite(stats: dict[str, tuple]) -> dict[str, list]:
    """aggregate's (mean, sd, runs) per key for JSON: an undefined mean (NaN) as null."""
    return {k: [None if isinstance(x, float) and math.isnan(x) else x for x in v] for k, v in stats.items()}


def report(records: list[dict], seeds: list[int], combo: str | None, why: str, t: float, iters: int,
           stale: int) -> tuple[str, dict]:
    order = ["plain", *SWITCHES, *NAMED_ONLY]
    recs = [r for r in records if r["iters"] == iters]
    methods = [m for m in order if any(r["method"] == m for r in recs)]
    methods += sorted({r["method"] for r in recs} - set(methods))
    by_method = {m: sorted((r for r in recs if r["method"] == m and (r["seed"] in seeds or m == combo)),
                           key=lambda r: r["seed"]) for m in methods}
    by_method = {m: rs for m, rs in by_method.items() if rs}
    pixel = per_pixel_rows(iters)
    text = [f"### mask2former_small, {iters} iterations per run", "", table(by_method) if by_method else "(no runs)",
            ""]
    if combo:
        seen = sorted(r["seed"] for r in by_method.get(combo, []))
        text.append(f"Combination: {combo} ({why}); its row: seeds {seen}.")
    text.append(f"Frequency matcher: t = {t:.4g} (the most frequent rare class's image frequency), s = {LTSS_S:g}.")
    if pixel:
        text += ["", f"The per-pixel demo model at the same schedule (benchmarks/results/longtail, "
                     f"{iters} iterations):", "", table(pixel)]
    text.append("")
    text.append("Mean ± standard deviation over seeds; figures in %, FPR per mille; wall: mean minutes per run."
                + (f" {stale} result files of another recipe ignored." if stale else ""))
    data = {"iters": iters, "combination": combo, "combination_rule": why, "matcher_t": t, "matcher_s": LTSS_S,
            "table": {m: _finite(aggregate(rs)) for m, rs in by_method.items()},
            "per_pixel": {m: _finite(aggregate(rs)) for m, rs in pixel.items()},
            "wall_minutes": {m: statistics.mean(r["wall_seconds"] for r in rs) / 60 for m, rs in by_method.items()}}
    return "\n".join(text) + "\n", data


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/m2f_rr", help="work dirs of the runs and the dataset")
    p.add_argument("--results-dir", help="per-run JSONs and the tables (default OUT/results); commit it")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--combo-seeds", type=int, nargs="*", default=[1, 2],
                   help="the seeds the combination runs on (chosen on seed 0)")
    p.add_argument("--iters", type=int, default=1000, help="iterations per run (the demo's schedule)")
    p.add_argument("--lr", type=float, default=1e-3, help="Mask2Former's base lr (benchmarks/mask2former_cpu.py's)")
    p.add_argument("--matcher-t", type=float, help="the frequency matcher's t (default: at the rare group's border)")
    p.add_argument("--methods", nargs="+", help="only these methods (plain, the switches, a+b combinations, "
                                                 "query-prior-matched); no combination is chosen then")
    p.add_argument("--data", help="the demo's synthetic dataset (default OUT/synthetic, generated if missing)")
    p.add_argument("--threads", type=int, help="PyTorch CPU threads (default: its own choice)")
    p.add_argument("--report-only", action="store_true", help="only the tables, from the result JSONs")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    results = Path(args.results_dir) if args.results_dir else out / "results"
    results.mkdir(parents=True, exist_ok=True)
    config = Path(DEMO_CONFIG)
    sha = recipe_sha256(config, args.lr)
    root = prepare_dataset(Path(args.data) if args.data else out / "synthetic")
    t = args.matcher_t or border_t(ClassCounts.load(root / "counts.json"))
    base = [f"data.train.root={root}", f"data.val.root={root}", f"loss.counts={root / 'counts.json'}",
            *m2f_overrides(args.lr)]
    methods = args.methods or ["plain", *SWITCHES]
    for method in methods:
        overrides_of(method, t)  # unknown names fail before anything runs
    combo, why = None, ""
    if not args.report_only:
        for method in methods:
            for seed in args.seeds:
                run_one(out, results, config, sha, method, args.iters, seed, base, t)
    records, stale = read_results(results, sha)
    seed0 = {r["method"]: r for r in records if r["seed"] == 0 and r["iters"] == args.iters}
    if not args.methods and all(m in seed0 for m in ("plain", *SWITCHES)):
        combo, why = choose_combination(seed0)
        if not args.report_only:
            for seed in args.combo_seeds:
                run_one(out, results, config, sha, combo, args.iters, seed, base, t)
        records, stale = read_results(results, sha)
    text, data = report(records, args.seeds, combo, why, t, args.iters, stale)
    atomic_write_json(results / "results.json", {"recipe_sha256": sha, "seeds": args.seeds,
                                                 "combo_seeds": args.combo_seeds, **data})
    atomic_write_text(results / "results.md", text)
    print(text)
    return data


if __name__ == "__main__":
    logging.basicConfig(format="%(message)s", stream=sys.stdout)  # rrseg's messages, as the CLI shows them
    logging.getLogger("rrseg").setLevel(logging.WARNING)
    main()
