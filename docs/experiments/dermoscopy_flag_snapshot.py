"""The last-snapshot second opinion of dermoscopy-flag-snapshot.md: predict every out-of-fold image with its fold's
two snapshots (``model.keras`` and ``last.keras``), then the accuracy comparison and the leave-one-fold-out marks
fixed in that record.

    PYTHONPATH=. python docs/experiments/dermoscopy_flag_snapshot.py signals ROWS.json /work/notes/lead/cvs/fold-{0,1,2,3,4}
    PYTHONPATH=. python docs/experiments/dermoscopy_flag_snapshot.py evaluate ROWS.json [OUT.json]

``signals`` appends to ROWS.json the rows of the folds not yet there (one fold at a time) and keeps the three
cleaned lesions of each image (bit-packed) in ``LESIONS_DIR``; ``evaluate`` prints the record's tables and writes
the per-image rows (in a model record's ``crossval`` form) with the comparisons and estimates to OUT.json.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

from dermoscopy_flag_tta import ESTIMATE_HEADER, RECORD, TABLE_SHARES, dice, estimate_row, fold_pairs, marks, read_rows
from moleseg.core.cleanup import CLEANUP_VARIANTS
from moleseg.engine.calibrate import PROMISED_WORST_FM, risk_coverage
from moleseg.engine.segmenter import border_confidence
from moleseg.tools.candidate import paired_comparison

LESIONS_DIR = Path("/tmp/flag-snapshot-lesions")
#: Candidate marks: name -> (the FM of the border the user sees, the score marked when low).
CANDIDATES = {"A. confidence alone": ("best_fm", "confidence"),
              "B. snapshot_agreement": ("best_fm", "snapshot_agreement"),
              "C. snapshot_confidence": ("best_fm", "snapshot_confidence"),
              "D. averaged border, snapshot_confidence": ("mean_fm", "snapshot_confidence"),
              "E. averaged border, snapshot_agreement": ("mean_fm", "snapshot_agreement")}


def snapshot_signals(best, last, image: np.ndarray, mask: np.ndarray, settings, lesion_threshold) -> dict:
    """One image's row: the three borders' FM, the signals of the record and the CPU ms of the two parts."""
    from moleseg.core.metrics import scores
    from moleseg.engine.segmenter import clean

    def lesion_of(probabilities: np.ndarray) -> np.ndarray:
        return clean(best, probabilities, settings, lesion_threshold=lesion_threshold).lesion

    start = time.process_time()
    p_best = best.predict_probabilities([image])[0]
    lesion_best = lesion_of(p_best)
    confidence = border_confidence(p_best, p_best[..., 0] < 0.5)
    middle = time.process_time()
    p_last = last.predict_probabilities([image])[0]
    lesion_last = lesion_of(p_last)
    p_mean = (p_best + p_last) / 2
    lesion_mean = lesion_of(p_mean)
    agreement = dice(lesion_best, lesion_last)
    snapshot_confidence = border_confidence(p_mean, p_mean[..., 0] < 0.5)
    end = time.process_time()
    return {"best_confidence": confidence, "last_confidence": border_confidence(p_last, p_last[..., 0] < 0.5),
            "snapshot_agreement": agreement, "snapshot_confidence": snapshot_confidence,
            "best_fm": float(scores(lesion_best, mask)["fm"]), "last_fm": float(scores(lesion_last, mask)["fm"]),
            "mean_fm": float(scores(lesion_mean, mask)["fm"]),
            "single_ms": 1000 * (middle - start), "extra_ms": 1000 * (end - middle), "pixels": int(mask.size),
            "lesions": (lesion_best, lesion_last, lesion_mean)}


def compute(rows_path: Path, run_dirs: list[Path]) -> None:
    from moleseg.engine.evaluate import read_pair
    from moleseg.engine.runs import RunFiles
    from moleseg.engine.segmenter import cleanup_for_image
    from moleseg.network.loading import load_segmenter

    crossval = json.loads(RECORD.read_text())["crossval"]
    decision = crossval["decision"]
    recorded = {(row["fold"], row["image"]): row for row in crossval["per_image"]}
    rows = json.loads(rows_path.read_text()) if rows_path.exists() else []
    LESIONS_DIR.mkdir(parents=True, exist_ok=True)
    print(f"load average at start: {os.getloadavg()}", flush=True)
    for run_dir in [run_dir for run_dir in run_dirs if run_dir.name not in {row["fold"] for row in rows}]:
        files = RunFiles(run_dir)
        best = load_segmenter(files.model, test_time_augmentation=False)
        last = load_segmenter(files.last, test_time_augmentation=False)
        change = CLEANUP_VARIANTS[best.n_classes][decision["cleanup_variant"]]
        for pair in fold_pairs(run_dir):
            image, mask = read_pair(pair)
            settings = dataclasses.replace(cleanup_for_image(best, mask.shape), **change)
            values = snapshot_signals(best, last, image, mask, settings, decision["lesion_threshold"])
            name = Path(pair.image).name
            np.savez_compressed(LESIONS_DIR / f"{run_dir.name}-{Path(name).stem}.npz", shape=np.array(mask.shape),
                                **{key: np.packbits(lesion) for key, lesion
                                   in zip(("best", "last", "mean"), values.pop("lesions"))})
            record = recorded[run_dir.name, name]
            row = {"image": name, "source": Path(pair.image).parent.parent.name, "fold": run_dir.name,
                   "fm": record["fm"], "confidence": record["confidence"], **values}
            rows.append(row)
            print(json.dumps(row), flush=True)
        rows_path.write_text(json.dumps(rows, indent=1) + "\n")
    print(f"load average at end: {os.getloadavg()}", flush=True)


def with_border(rows: list[dict], fm_key: str) -> list[dict]:
    """The rows with ``fm`` the FM of the border named by ``fm_key`` (what the marks are scored on)."""
    return [{**row, "fm": row[fm_key]} for row in rows]


def accuracy(rows: list[dict], fm_key: str) -> dict:
    """The record's comparison of one border with the recipe's, per image, and its per-fold means."""
    names = [row["image"] for row in rows]  # each image is out of fold in one fold only
    comparison = paired_comparison(dict(zip(names, (row[fm_key] for row in rows))),
                                   dict(zip(names, (row["fm"] for row in rows))))
    comparison["per_fold"] = {fold: float(np.mean([row[fm_key] for row in rows if row["fold"] == fold]))
                              for fold in dict.fromkeys(row["fold"] for row in rows)}
    return comparison


def evaluate(rows_path: Path, out_path: Path | None) -> None:
    rows = read_rows(rows_path, "best", "model.keras")
    agreement = np.array([row["snapshot_agreement"] for row in rows])
    print(f"snapshot agreement (Dice): mean {agreement.mean():.4f}, min {agreement.min():.4f}; per fold "
          + ", ".join(f"{fold} {np.mean([r['snapshot_agreement'] for r in rows if r['fold'] == fold]):.4f}"
                      for fold in sorted({row['fold'] for row in rows})))
    comparisons = {key: accuracy(rows, key) for key in ("mean_fm", "last_fm")}
    for key, comparison in comparisons.items():
        print(f"\n{key} against the recipe: " + json.dumps(comparison, indent=1))
    estimates = {}
    print("\n| candidate | Spearman ρ with FM | " + " | ".join(f"{share:.0%}" for share in TABLE_SHARES)
          + " |\n|---|---|" + "---|" * len(TABLE_SHARES))
    for name, (fm_key, signal) in CANDIDATES.items():
        border_fms = [row[fm_key] for row in rows]
        values = [row[signal] for row in rows]
        curve = risk_coverage(border_fms, values)
        cells = []
        for share in TABLE_SHARES:
            point = curve[min(len(rows) - 1, int(np.ceil(share * len(rows) - 1e-9)))]
            cells.append(f"{point.n_flagged}: {point.unflagged_mean_fm:.4f} / {point.unflagged_worst_fm:.4f}")
        clear = next(point for point in curve if point.unflagged_worst_fm >= PROMISED_WORST_FM)
        print(f"| {name} | {stats.spearmanr(values, border_fms).statistic:+.2f} | " + " | ".join(cells)
              + f" | none under 0.90 from {clear.n_flagged} ({clear.n_flagged / len(rows):.0%}) |")
    print("\n" + ESTIMATE_HEADER)
    for name, (fm_key, signal) in CANDIDATES.items():
        for rule in ("share", "worst_fm"):
            estimate = marks(with_border(rows, fm_key), rule, signal, two_stage=False)
            estimates[f"{name}, {rule}"] = estimate
            print(estimate_row(name, estimate) + " |")
    warm = [row for index, row in enumerate(rows) if index and row["fold"] == rows[index - 1]["fold"]]
    single, extra = np.array([row["single_ms"] for row in warm]), np.array([row["extra_ms"] for row in warm])
    largest = int(np.argmax([row["pixels"] for row in warm]))
    price = {"n_images": len(warm), "left_out": "each fold's first image (the runtimes' warm-up)",
             "single_ms_median": float(np.median(single)), "single_ms_max": float(single.max()),
             "extra_ms_median": float(np.median(extra)), "extra_ms_max": float(extra.max()),
             "largest_image": warm[largest]["image"], "largest_pixels": warm[largest]["pixels"],
             "largest_single_ms": float(single[largest]), "largest_extra_ms": float(extra[largest])}
    print("\nprice (CPU ms): " + json.dumps(price))
    if out_path is not None:  # in a record's form, so that `python -m moleseg.tools.riskcoverage --score` reads it
        out_path.write_text(json.dumps({"crossval": {"n_folds": len({row["fold"] for row in rows}), "per_image": rows},
                                        "against_recipe": comparisons, "estimates": estimates, "price": price},
                                       indent=1) + "\n")


if __name__ == "__main__":
    if sys.argv[1] == "signals":
        compute(Path(sys.argv[2]), [Path(arg) for arg in sys.argv[3:]])
    else:
        evaluate(Path(sys.argv[2]), Path(sys.argv[3]) if len(sys.argv) > 3 else None)
