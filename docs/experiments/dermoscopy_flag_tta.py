"""The test-time-augmentation marks of dermoscopy-flag-tta.md: compute the signals of every out-of-fold image
of the recipe's fold runs, the leave-one-fold-out evaluation fixed in that record, and the price.

    PYTHONPATH=. python docs/experiments/dermoscopy_flag_tta.py signals ROWS.json /work/notes/lead/cvs/fold-{0,1,2,3,4}
    PYTHONPATH=. python docs/experiments/dermoscopy_flag_tta.py evaluate ROWS.json [OUT.json]
    PYTHONPATH=. python docs/experiments/dermoscopy_flag_tta.py price /work/notes/lead/cvs/fold-0

``signals`` appends to ROWS.json the rows of the folds not yet there (one fold model at a time), each image
cleaned under the decision of ``models/dermoscopy.json``'s ``crossval`` record; ``evaluate`` prints the tables
of the record and writes the per-image rows (in a model record's ``crossval`` form) with the estimates to OUT.json; ``price`` times the passes.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

from moleseg.core.cleanup import CLEANUP_VARIANTS
from moleseg.engine.calibrate import (BAD_IMAGE_FM, PROMISED_MAX_SHARE, PROMISED_WORST_FM, cross_fitted_marks,
                                      risk_coverage, share_rule, worst_fm_rule)
from moleseg.engine.segmenter import border_confidence

RECORD = Path(__file__).parents[2] / "models" / "dermoscopy.json"
TRANSFORMS = ("identity", "flip_lr", "flip_ud", "zoom_out", "zoom_in")
PAD_SHARE, CUT_SHARE = 0.125, 0.10
BAND = (0.05, 0.50)
SIGNALS = ("confidence", "tta_agreement", "tta_confidence")


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def views(image: np.ndarray) -> list[np.ndarray]:
    """The five transformed images of the record, in :data:`TRANSFORMS` order."""
    height, width = image.shape[:2]
    pad_y, pad_x = round(PAD_SHARE * height), round(PAD_SHARE * width)
    cut_y, cut_x = round(CUT_SHARE * height), round(CUT_SHARE * width)
    return [image, image[:, ::-1], image[::-1],
            np.pad(image, ((pad_y, pad_y), (pad_x, pad_x), (0, 0)), mode="reflect"),
            image[cut_y:height - cut_y, cut_x:width - cut_x]]


def mapped_back(probabilities: list[np.ndarray], shape: tuple[int, ...]) -> list[np.ndarray]:
    """Each view's probabilities in the original image's frame (the zoom-in's outer ring from the identity)."""
    height, width = shape[:2]
    pad_y, pad_x = round(PAD_SHARE * height), round(PAD_SHARE * width)
    cut_y, cut_x = round(CUT_SHARE * height), round(CUT_SHARE * width)
    identity, flip_lr, flip_ud, zoom_out, zoom_in = probabilities
    inner = identity.copy()
    inner[cut_y:height - cut_y, cut_x:width - cut_x] = zoom_in
    return [identity, flip_lr[:, ::-1], flip_ud[::-1], zoom_out[pad_y:pad_y + height, pad_x:pad_x + width], inner]


def tta_signals(segmenter, image: np.ndarray, settings, lesion_threshold) -> dict:
    """The two TTA signals of one image, and the identity pass's lesion and confidence."""
    from moleseg.engine.segmenter import clean

    back = mapped_back(segmenter.predict_probabilities(views(image)), image.shape)
    lesions = [clean(segmenter, p, settings, lesion_threshold=lesion_threshold).lesion for p in back]
    mean = np.mean(back, axis=0)
    return {"identity_confidence": border_confidence(back[0], back[0][..., 0] < 0.5),
            "tta_agreement": float(np.mean([dice(a, b) for a, b in itertools.combinations(lesions, 2)])),
            "tta_confidence": border_confidence(mean, mean[..., 0] < 0.5),
            "view_dice": [dice(lesions[0], other) for other in lesions[1:]], "lesion": lesions[0]}


def fold_pairs(run_dir: Path):
    """The validation pairs of a fold run: the images its model did not train on."""
    from moleseg.core.trainconfig import TrainConfig
    from moleseg.engine.runs import RunFiles, read_json
    from moleseg.network.trainsetup import split_of

    return split_of(TrainConfig.from_dict(read_json(RunFiles(run_dir).config)))[1]


def fold_models(run_dirs: list[Path], decision: dict):
    """Per fold run: its name, its model as a segmenter (no flips) and the cleanup change of ``decision``."""
    from moleseg.engine.runs import RunFiles
    from moleseg.network.loading import load_segmenter

    for run_dir in run_dirs:
        segmenter = load_segmenter(RunFiles(run_dir).model, test_time_augmentation=False)
        yield run_dir, segmenter, CLEANUP_VARIANTS[segmenter.n_classes][decision["cleanup_variant"]]


def compute(rows_path: Path, run_dirs: list[Path]) -> None:
    from moleseg.core.metrics import scores
    from moleseg.engine.evaluate import read_pair
    from moleseg.engine.segmenter import cleanup_for_image

    crossval = json.loads(RECORD.read_text())["crossval"]
    decision = crossval["decision"]
    recorded = {(row["fold"], row["image"]): row for row in crossval["per_image"]}
    rows = json.loads(rows_path.read_text()) if rows_path.exists() else []
    pending = [run_dir for run_dir in run_dirs if run_dir.name not in {row["fold"] for row in rows}]
    for run_dir, segmenter, change in fold_models(pending, decision):
        for pair in fold_pairs(run_dir):
            image, mask = read_pair(pair)
            settings = dataclasses.replace(cleanup_for_image(segmenter, mask.shape), **change)
            values = tta_signals(segmenter, image, settings, decision["lesion_threshold"])
            record = recorded[run_dir.name, Path(pair.image).name]
            row = {"image": Path(pair.image).name, "source": Path(pair.image).parent.parent.name,
                   "fold": run_dir.name, "fm": record["fm"], "confidence": record["confidence"],
                   "identity_fm": float(scores(values.pop("lesion"), mask)["fm"]), **values}
            rows.append(row)
            print(json.dumps(row), flush=True)
        rows_path.write_text(json.dumps(rows, indent=1) + "\n")


def band_scores(rows: list[dict], signal: str, calibration: list[dict]) -> list[float]:
    """Two-stage scores of ``rows``: -1 under the calibration rows' confidence band, 2 over it, else ``signal``."""
    low, high = np.quantile([row["confidence"] for row in calibration], BAND)
    return [-1.0 if row["confidence"] < low else 2.0 if row["confidence"] > high else float(row[signal])
            for row in rows]


def as_confidence(rows: list[dict], values) -> list[dict]:
    return [{"fold": row["fold"], "fm": row["fm"], "confidence": float(value), "image": row["image"]}
            for row, value in zip(rows, values)]


def marks(rows: list[dict], rule: str, signal: str, two_stage: bool) -> dict:
    """Leave one fold out (the record's procedure) for one candidate; the pooled figures."""
    if not two_stage:
        scored = as_confidence(rows, [row[signal] for row in rows])
        estimate = cross_fitted_marks(scored, rule).to_dict()
        thresholds = estimate["thresholds"]
        unmarked = [row for row in scored if row["confidence"] >= thresholds[row["fold"]]]
    else:
        choose = {"share": share_rule, "worst_fm": worst_fm_rule}[rule]
        thresholds, unmarked, passes = {}, [], 0
        for fold in dict.fromkeys(row["fold"] for row in rows):
            train = [row for row in rows if row["fold"] != fold]
            held = [row for row in rows if row["fold"] == fold]
            threshold = choose(as_confidence(train, band_scores(train, signal, train)))
            thresholds[fold] = threshold
            held_scores = band_scores(held, signal, train)
            passes += sum(-1.0 < value < 2.0 for value in held_scores)
            unmarked += [row for row, value in zip(held, held_scores) if value >= threshold]
        fms = [row["fm"] for row in unmarked]
        estimate = {"rule": rule, "thresholds": thresholds, "n_images": len(rows), "n_marked": len(rows) - len(fms),
                    "marked_share": (len(rows) - len(fms)) / len(rows), "unmarked_mean_fm": float(np.mean(fms)),
                    "unmarked_worst_fm": float(min(fms)),
                    "n_unmarked_under_promise": sum(value < PROMISED_WORST_FM for value in fms),
                    "n_unmarked_bad": sum(value < BAD_IMAGE_FM for value in fms), "extra_pass_share": passes / len(rows)}
        estimate["promise_met"] = (estimate["marked_share"] <= PROMISED_MAX_SHARE
                                   and estimate["n_unmarked_under_promise"] == 0)
    estimate["worst_unmarked"] = sorted((round(row["fm"], 4), row["image"], row["fold"]) for row in unmarked)[:3]
    return estimate


CANDIDATES = {"A. confidence alone": ("confidence", False), "B. tta_agreement": ("tta_agreement", False),
              "C. tta_confidence": ("tta_confidence", False), "D. two-stage tta_agreement": ("tta_agreement", True),
              "E. two-stage tta_confidence": ("tta_confidence", True)}
TABLE_SHARES = (0.0, 0.05, 0.10, 0.15, 0.20, 0.25, 0.30, 0.40)


def read_rows(rows_path: Path, prefix: str, what: str) -> list[dict]:
    """The cached rows; prints their counts and how closely the ``prefix`` pass (``what``) reproduces the record."""
    rows = json.loads(rows_path.read_text())
    fms = [row["fm"] for row in rows]
    print(f"{len(rows)} images, folds {', '.join(sorted({row['fold'] for row in rows}))}; under 0.90: "
          f"{sum(value < PROMISED_WORST_FM for value in fms)}, under 0.85: {sum(value < BAD_IMAGE_FM for value in fms)}")
    print(f"{what} reproduces the record: max |FM - record| "
          f"{max(abs(row[f'{prefix}_fm'] - row['fm']) for row in rows):.2e}, max |confidence - record| "
          f"{max(abs(row[f'{prefix}_confidence'] - row['confidence']) for row in rows):.2e}")
    return rows


def estimate_row(name: str, estimate: dict) -> str:
    """One line of the leave-one-fold-out table."""
    return (f"| {name} | {estimate['rule']} | {', '.join(f'{v:.3f}' for v in estimate['thresholds'].values())} | "
            f"{estimate['n_marked']} ({estimate['marked_share']:.0%}) | {estimate['unmarked_mean_fm']:.4f} | "
            f"{estimate['unmarked_worst_fm']:.4f} | {estimate['n_unmarked_under_promise']} | "
            f"{estimate['n_unmarked_bad']} | {'met' if estimate['promise_met'] else 'not met'} | "
            + ", ".join(f"{image} {fm}" for fm, image, _ in estimate["worst_unmarked"]))


ESTIMATE_HEADER = ("| candidate | rule | thresholds chosen on the other folds | marked | unmarked mean FM | unmarked worst "
                   "FM | unmarked under 0.90 | unmarked under 0.85 | promise | worst unmarked |\n" + "|---" * 10 + "|")


def evaluate(rows_path: Path, out_path: Path | None) -> None:
    rows = read_rows(rows_path, "identity", "identity pass")
    fms = [row["fm"] for row in rows]
    view_dice = np.array([row["view_dice"] for row in rows])
    print("mean Dice of each view with the identity's lesion: "
          + ", ".join(f"{name} {value:.4f}" for name, value in zip(TRANSFORMS[1:], view_dice.mean(axis=0))))
    estimates = {}
    print("\n| candidate | Spearman ρ with FM | " + " | ".join(f"{share:.0%}" for share in TABLE_SHARES)
          + " |\n|---|---|" + "---|" * len(TABLE_SHARES))
    for name, (signal, two_stage) in CANDIDATES.items():
        values = band_scores(rows, signal, rows) if two_stage else [row[signal] for row in rows]
        curve = risk_coverage(fms, values)
        cells = []
        for share in TABLE_SHARES:
            point = curve[min(len(rows) - 1, int(np.ceil(share * len(rows) - 1e-9)))]
            cells.append(f"{point.n_flagged}: {point.unflagged_mean_fm:.4f} / {point.unflagged_worst_fm:.4f}")
        print(f"| {name} | {stats.spearmanr(values, fms).statistic:+.2f} | " + " | ".join(cells) + " |")
    print("\n" + ESTIMATE_HEADER)
    for name, (signal, two_stage) in CANDIDATES.items():
        for rule in ("share", "worst_fm"):
            estimate = marks(rows, rule, signal, two_stage)
            estimates[f"{name}, {rule}"] = estimate
            print(estimate_row(name, estimate)
                  + (f" (extra passes on {estimate['extra_pass_share']:.0%})" if two_stage else "") + " |")
    if out_path is not None:  # in a record's form, so that `python -m moleseg.tools.riskcoverage --score` reads it
        for signal in SIGNALS[1:]:
            for row, value in zip(rows, band_scores(rows, signal, rows)):
                row[f"two_stage_{signal}"] = value
        out_path.write_text(json.dumps({"crossval": {"n_folds": len({row["fold"] for row in rows}), "per_image": rows},
                                        "estimates": estimates}, indent=1) + "\n")


def price(run_dir: Path, count: int = 20) -> None:
    from moleseg.engine.evaluate import read_pair
    from moleseg.engine.segmenter import clean, cleanup_for_image

    decision = json.loads(RECORD.read_text())["crossval"]["decision"]
    _, segmenter, change = next(fold_models([run_dir], decision))
    pairs = fold_pairs(run_dir)
    pairs = [pairs[index] for index in np.linspace(0, len(pairs) - 1, count).astype(int)]
    read = [read_pair(pair)[0] for pair in pairs]
    segmenter.predict_probabilities(read[:1])  # warm the runtime for one image and for a batch of five views
    segmenter.predict_probabilities(views(read[0]))
    single, full = [], []
    for image in read:
        settings = dataclasses.replace(cleanup_for_image(segmenter, image.shape), **change)
        start = time.process_time()
        probabilities = segmenter.predict_probabilities([image])[0]
        clean(segmenter, probabilities, settings, lesion_threshold=decision["lesion_threshold"])
        border_confidence(probabilities, probabilities[..., 0] < 0.5)
        single.append(time.process_time() - start)
        start = time.process_time()
        tta_signals(segmenter, image, settings, decision["lesion_threshold"])
        full.append(time.process_time() - start)
    single_ms, full_ms = 1000 * np.array(single), 1000 * np.array(full)
    extra = full_ms - single_ms
    largest = int(np.argmax([image.size for image in read]))
    print(f"largest image {read[largest].shape[1]} x {read[largest].shape[0]} px: single {single_ms[largest]:.0f} ms, "
          f"extra {extra[largest]:.0f} ms; PH2-size (about 767 x 576) extra median "
          f"{np.median([e for e, image in zip(extra, read) if image.shape[1] > 700 and image.shape[1] < 800]):.0f} ms")
    print(f"{count} images of {run_dir.name} ({segmenter.runtime()}): single pass + clean {np.median(single_ms):.0f} ms "
          f"CPU median (max {single_ms.max():.0f}); five views + cleans {np.median(full_ms):.0f} ms (max "
          f"{full_ms.max():.0f}); extra {np.median(extra):.0f} ms median, {extra.max():.0f} max")


if __name__ == "__main__":
    if sys.argv[1] == "signals":
        compute(Path(sys.argv[2]), [Path(arg) for arg in sys.argv[3:]])
    elif sys.argv[1] == "evaluate":
        evaluate(Path(sys.argv[2]), Path(sys.argv[3]) if len(sys.argv) > 3 else None)
    else:
        price(Path(sys.argv[2]))
