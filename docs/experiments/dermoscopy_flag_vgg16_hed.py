"""The VGG16-HED candidate as an independent second opinion for the "check this border" mark, read from the two
committed records only (no prediction): the shipped recipe's out-of-fold rows (``models/dermoscopy.json``,
``crossval.per_image``) and the candidate's (all five folds: ``dermoscopy-vgg16-hed-kfold-5.json``; or the first
reading's folds 0-1, ``dermoscopy-vgg16-hed-kfold-5-folds-0-1.json``, given as the argument), on the images both
scored.

    PYTHONPATH=. python docs/experiments/dermoscopy_flag_vgg16_hed.py [CANDIDATE_RECORD]

Prints how often the two models fail on the same images, their FM rank correlation, and the risk-coverage of the
mark by the shipped model's confidence, the candidate's, and the two combined (the lower of the two ranks, the
mean of the two ranks), each at the shares of the card's table.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from scipy import stats

from moleseg.engine.calibrate import PROMISED_WORST_FM, risk_coverage

HERE = Path(__file__).parent
SHIPPED = HERE.parents[1] / "models" / "dermoscopy.json"
CANDIDATE = HERE / "dermoscopy-vgg16-hed-kfold-5.json"
SHARES = (0.0, 0.05, 0.10, 0.15, 0.20, 0.30)
FAILED_FM = 0.85


def per_image(path: Path, folds: set[str]) -> dict[str, dict]:
    """The per-image out-of-fold rows of a record, by image name, for the given fold names."""
    rows = json.loads(path.read_text())["crossval"]["per_image"]
    return {row["image"]: row for row in rows if row["fold"] in folds}


def ranks(values: np.ndarray) -> np.ndarray:
    """Each value's rank scaled to 0..1 (0: the least trustworthy), ties averaged."""
    return (stats.rankdata(values) - 1.0) / max(len(values) - 1, 1)


def shipped_fold(run_name: str) -> str:
    """The shipped recipe's fold that holds the same images as the candidate's fold run ``crossval-...-<i>``."""
    return f"fold-{run_name.rsplit('-', 1)[1]}"


def main(argv: list[str]) -> None:
    record = Path(argv[0]) if argv else CANDIDATE
    runs = set(json.loads(record.read_text())["folds"])
    shipped = per_image(SHIPPED, {shipped_fold(run) for run in runs})
    candidate = per_image(record, runs)
    names = sorted(set(shipped) & set(candidate))
    fm = np.array([shipped[name]["fm"] for name in names])
    fm_candidate = np.array([candidate[name]["fm"] for name in names])
    confidence = np.array([shipped[name]["confidence"] for name in names])
    confidence_candidate = np.array([candidate[name]["confidence"] for name in names])
    print(f"{len(names)} images scored by both (the candidate's {len(runs)} folds and the shipped recipe's same folds)")
    rho = stats.spearmanr(fm, fm_candidate).statistic
    print(f"per-image FM, Spearman rho between the two models: {rho:.2f}")
    for limit in (PROMISED_WORST_FM, FAILED_FM):
        both = int(np.sum((fm < limit) & (fm_candidate < limit)))
        print(f"under {limit}: shipped {int(np.sum(fm < limit))}, candidate {int(np.sum(fm_candidate < limit))}, "
              f"both {both}")
    print("\nthe shipped model's images under the promised FM, with the candidate's:")
    print("| image | shipped FM | shipped confidence | candidate FM | candidate confidence |\n|---|---|---|---|---|")
    for index in np.argsort(fm):
        if fm[index] < PROMISED_WORST_FM:
            print(f"| `{names[index]}` | {fm[index]:.3f} | {confidence[index]:.3f} | {fm_candidate[index]:.3f} | "
                  f"{confidence_candidate[index]:.3f} |")
    signals = {"shipped confidence": confidence, "candidate confidence": confidence_candidate,
               "lower of the two ranks": np.minimum(ranks(confidence), ranks(confidence_candidate)),
               "mean of the two ranks": (ranks(confidence) + ranks(confidence_candidate)) / 2.0}
    counts = [round(share * len(names)) for share in SHARES]
    print("\nthe shipped model's border, marked by each signal: unmarked worst FM / unmarked under "
          f"{PROMISED_WORST_FM}")
    print("| signal | " + " | ".join(f"{count} ({share:.0%})" for count, share in zip(counts, SHARES)) + " |")
    print("|---|" + "---|" * len(SHARES))
    for name, signal in signals.items():
        curve = risk_coverage(list(fm), list(signal))
        cells = []
        for count in counts:
            point = curve[count]
            kept = np.argsort(np.lexsort((fm, signal)))  # rank of each image in the marking order
            under = int(np.sum(fm[kept >= count] < PROMISED_WORST_FM))
            cells.append(f"{point.unflagged_worst_fm:.3f} / {under}")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
