"""The combined "check this border" mark of dermoscopy-flag-combined.md: compute the signals of every
out-of-fold image of the recipe's fold runs, then the leave-one-fold-out evaluation fixed in that record.

    PYTHONPATH=. python docs/experiments/dermoscopy_flag_combined.py signals ROWS.json /work/notes/lead/cvs/fold-{0,1,2,3,4}
    PYTHONPATH=. python docs/experiments/dermoscopy_flag_combined.py evaluate ROWS.json

``signals`` appends to ROWS.json the rows of the folds not yet there (one fold model at a time), each image
cleaned under the decision of ``models/dermoscopy.json``'s ``crossval`` record; ``evaluate`` prints the
tables of the record from that file.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage, optimize, stats
from skimage.color import rgb2lab
from skimage.measure import label, perimeter

from moleseg.core.cleanup import CLEANUP_VARIANTS
from moleseg.core.config import CLEANUP_MAX_SIDE_PX, UNDECIDED_PROBABILITY_RANGE
from moleseg.core.edgecontact import edge_contact_ratio
from moleseg.core.metrics import scores
from moleseg.core.resize import rescale_image, resize_mask_to, resize_probabilities
from moleseg.engine.calibrate import (BAD_IMAGE_FM, PROMISED_MAX_SHARE, PROMISED_WORST_FM, cross_fitted_marks,
                                      risk_coverage, share_rule, worst_fm_rule)

RECORD = Path(__file__).parents[2] / "models" / "dermoscopy.json"
SIGNALS = ("confidence", "cleanup_dice", "kept_share", "border_undecided", "contrast", "area_share",
           "edge_contact", "irregularity", "dark_frame")
BORDER_BAND_SHARE, CONTRAST_BAND_SHARE, DARK_L = 0.02, 0.03, 25.0
C_PENALTY = 0.1


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def signals(image: np.ndarray, probabilities: np.ndarray, lesion: np.ndarray, confidence: float) -> dict:
    """The nine signals of one image (dermoscopy-flag-combined.md), at a working size of at most
    CLEANUP_MAX_SIDE_PX on the longer side."""
    factor = min(1.0, CLEANUP_MAX_SIDE_PX / max(lesion.shape))
    if factor < 1.0:
        image = rescale_image(image, factor)
        height, width = image.shape[:2]
        probabilities = resize_probabilities(probabilities, height, width)
        lesion = resize_mask_to(lesion, height, width)
    p = 1.0 - probabilities[..., 0]
    raw = p > 0.5
    parts, count = label(raw, return_num=True, connectivity=2)
    kept = 1.0 if count <= 1 else float(np.bincount(parts.ravel())[1:].max() / raw.sum())
    side = max(lesion.shape)
    inside_px, outside_px = ndimage.distance_transform_edt(lesion), ndimage.distance_transform_edt(~lesion)
    band = (lesion & (inside_px <= BORDER_BAND_SHARE * side)) | (~lesion & (outside_px <= BORDER_BAND_SHARE * side))
    low, high = UNDECIDED_PROBABILITY_RANGE
    lab = rgb2lab(image)
    inner = lesion & (inside_px <= CONTRAST_BAND_SHARE * side)
    outer = ~lesion & (outside_px <= CONTRAST_BAND_SHARE * side)
    contrast = (float(np.linalg.norm(lab[inner].mean(axis=0) - lab[outer].mean(axis=0)))
                if inner.any() and outer.any() else 0.0)
    area = int(lesion.sum())
    return {"confidence": confidence, "cleanup_dice": dice(raw, lesion), "kept_share": kept,
            "border_undecided": float(((p[band] > low) & (p[band] < high)).mean()) if band.any() else 1.0,
            "contrast": contrast, "area_share": area / lesion.size, "edge_contact": edge_contact_ratio(lesion),
            "irregularity": float(perimeter(lesion) ** 2 / (4 * np.pi * area)) if area else 0.0,
            "dark_frame": float((lab[..., 0] < DARK_L).mean())}


def compute(rows_path: Path, run_dirs: list[Path]) -> None:
    from moleseg.engine.evaluate import read_pair
    from moleseg.engine.runs import RunFiles, read_json
    from moleseg.engine.segmenter import clean, cleanup_for_image
    from moleseg.network.loading import load_segmenter
    from moleseg.core.trainconfig import TrainConfig
    from moleseg.network.trainsetup import split_of

    decision = json.loads(RECORD.read_text())["crossval"]["decision"]
    rows = json.loads(rows_path.read_text()) if rows_path.exists() else []
    done = {row["fold"] for row in rows}
    for run_dir in run_dirs:
        if run_dir.name in done:
            continue
        segmenter = load_segmenter(RunFiles(run_dir).model, test_time_augmentation=False)
        change = CLEANUP_VARIANTS[segmenter.n_classes][decision["cleanup_variant"]]
        for pair in split_of(TrainConfig.from_dict(read_json(RunFiles(run_dir).config)))[1]:
            image, mask = read_pair(pair)
            probabilities = segmenter.predict_probabilities([image])[0]
            settings = dataclasses.replace(cleanup_for_image(segmenter, mask.shape), **change)
            segmentation = clean(segmenter, probabilities, settings, lesion_threshold=decision["lesion_threshold"])
            row = {"decision": f"{decision['cleanup_variant']}, {decision['lesion_threshold'] or 'arg-max'}", "image": Path(pair.image).name, "source": Path(pair.image).parent.parent.name,
                   "fold": run_dir.name, "fm": float(scores(segmentation.lesion, mask)["fm"]),
                   **signals(image, probabilities, segmentation.lesion, segmentation.confidence)}
            rows.append(row)
            print(json.dumps(row), flush=True)
        rows_path.write_text(json.dumps(rows, indent=1) + "\n")


def features(rows: list[dict]) -> np.ndarray:
    """The nine signals, transformed as the record fixes (log of irregularity and contrast, logit of area)."""
    table = np.array([[row[name] for name in SIGNALS] for row in rows], dtype=float)
    table[:, SIGNALS.index("contrast")] = np.log(np.maximum(table[:, SIGNALS.index("contrast")], 1e-3))
    table[:, SIGNALS.index("irregularity")] = np.log(np.maximum(table[:, SIGNALS.index("irregularity")], 1e-3))
    share = np.clip(table[:, SIGNALS.index("area_share")], 0.001, 0.999)
    table[:, SIGNALS.index("area_share")] = np.log(share / (1 - share))
    return table


@dataclasses.dataclass
class Combiner:
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    intercept: float

    def trust(self, rows: list[dict]) -> np.ndarray:
        """1 - P(FM < 0.90), 0..1."""
        z = (features(rows) - self.mean) / self.scale @ self.weights + self.intercept
        return 1.0 - 1.0 / (1.0 + np.exp(-z))


def fit(rows: list[dict]) -> Combiner:
    x = features(rows)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    x = (x - mean) / scale
    y = np.array([row["fm"] < PROMISED_WORST_FM for row in rows], dtype=float)
    sample = np.where(y == 1, len(y) / (2 * y.sum()), len(y) / (2 * (len(y) - y.sum())))

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:-1], theta[-1]
        z = x @ w + b
        loss = np.logaddexp(0, z) - y * z
        residual = sample * (1 / (1 + np.exp(-z)) - y)
        return (0.5 * w @ w + C_PENALTY * sample @ loss,
                np.append(w + C_PENALTY * x.T @ residual, C_PENALTY * residual.sum()))

    theta = optimize.minimize(objective, np.zeros(x.shape[1] + 1), jac=True, method="L-BFGS-B").x
    return Combiner(mean, scale, theta[:-1], float(theta[-1]))


def combined_marks(rows: list[dict], rule) -> dict:
    """Leave one fold out: the combiner and the rule's threshold from the other folds, marking the fold."""
    folds = list(dict.fromkeys(row["fold"] for row in rows))
    unmarked, thresholds = [], {}
    for fold in folds:
        train = [row for row in rows if row["fold"] != fold]
        held = [row for row in rows if row["fold"] == fold]
        combiner = fit(train)
        threshold = rule([dict(row, confidence=value) for row, value in zip(train, combiner.trust(train))])
        thresholds[fold] = threshold
        unmarked += [row for row, value in zip(held, combiner.trust(held)) if value >= threshold]
    fms = [row["fm"] for row in unmarked]
    return {"thresholds": thresholds, "n_marked": len(rows) - len(unmarked), "n_images": len(rows),
            "unmarked_mean_fm": float(np.mean(fms)), "unmarked_worst_fm": float(min(fms)),
            "n_unmarked_under_promise": sum(value < PROMISED_WORST_FM for value in fms),
            "n_unmarked_bad": sum(value < BAD_IMAGE_FM for value in fms),
            "worst_unmarked": sorted((round(row["fm"], 4), row["image"], row["fold"]) for row in unmarked)[:3]}


def evaluate(rows_path: Path) -> None:
    rows = json.loads(rows_path.read_text())
    folds = sorted({row["fold"] for row in rows})
    print(f"{len(rows)} images, folds {', '.join(folds)}; under 0.90: "
          f"{sum(row['fm'] < PROMISED_WORST_FM for row in rows)}, under 0.85: {sum(row['fm'] < BAD_IMAGE_FM for row in rows)}")
    print("\n| signal | Spearman ρ with FM | in-sample unmarked worst FM at 15 % marked |\n|---|---|---|")
    fms = [row["fm"] for row in rows]
    table = features(rows)
    for index, name in enumerate(SIGNALS):
        rho = stats.spearmanr(table[:, index], fms).statistic
        oriented = table[:, index] if rho >= 0 else -table[:, index]
        curve = risk_coverage(fms, list(oriented))
        count = int(np.ceil(PROMISED_MAX_SHARE * len(rows) - 1e-9))
        print(f"| {name} | {rho:+.2f} | {curve[count].unflagged_worst_fm:.4f} |")
    combiner = fit(rows)
    trust = combiner.trust(rows)
    curve = risk_coverage(fms, list(trust))
    count = int(np.ceil(PROMISED_MAX_SHARE * len(rows) - 1e-9))
    print(f"| combined (fitted on all, in sample) | {stats.spearmanr(trust, fms).statistic:+.2f} | "
          f"{curve[count].unflagged_worst_fm:.4f} |")
    print("\nCoefficients (standardised features, fitted on all rows; positive: more likely FM < 0.90):",
          ", ".join(f"{name} {value:+.2f}" for name, value in zip(SIGNALS, combiner.weights)),
          f"intercept {combiner.intercept:+.2f}")
    print("\n| mark | rule | thresholds chosen on the other folds | marked | unmarked mean FM | unmarked worst FM "
          "| unmarked under 0.90 | unmarked under 0.85 | promise |\n|---|---|---|---|---|---|---|---|---|")
    for rule_name, rule in (("share", share_rule), ("worst_fm", worst_fm_rule)):
        alone = cross_fitted_marks(rows, rule_name)
        print(f"| confidence alone | {rule_name} | {', '.join(f'{v:.3f}' for v in alone.thresholds.values())} | "
              f"{alone.n_marked} ({alone.marked_share:.0%}) | {alone.unmarked_mean_fm:.4f} | "
              f"{alone.unmarked_worst_fm:.4f} | {alone.n_unmarked_under_promise} | {alone.n_unmarked_bad} | "
              f"{'met' if alone.promise_met else 'not met'} |")
        both = combined_marks(rows, rule)
        share = both["n_marked"] / both["n_images"]
        met = share <= PROMISED_MAX_SHARE and both["n_unmarked_under_promise"] == 0
        print(f"| combined | {rule_name} | {', '.join(f'{v:.3f}' for v in both['thresholds'].values())} | "
              f"{both['n_marked']} ({share:.0%}) | {both['unmarked_mean_fm']:.4f} | {both['unmarked_worst_fm']:.4f} | "
              f"{both['n_unmarked_under_promise']} | {both['n_unmarked_bad']} | {'met' if met else 'not met'} |")
        print(f"  combined worst unmarked: {both['worst_unmarked']}")


if __name__ == "__main__":
    if sys.argv[1] == "signals":
        compute(Path(sys.argv[2]), [Path(arg) for arg in sys.argv[3:]])
    else:
        evaluate(Path(sys.argv[2]))
