"""How well the "may extend beyond the picture" mark finds the lesions that the picture cuts.

A lesion is cut by the picture when its true mask touches the image's frame. For every pair of the shipped
dermoscopy model's training folders (never its test folder) the tool reads the true mask, segments the image
with the installed model and applies :func:`moleseg.core.edgecontact.extends_beyond_picture` to both, then prints
the rule's recall (cut lesions marked) and its false alarms (lesions clear of the frame marked), on the true
masks (the rule's geometry alone), on the model's validation images (which it did not train on) and on all
the training images (optimistic: the model saw most of them), with the thresholds of
:mod:`moleseg.core.config` or others to compare.

Usage::

    python -m moleseg.tools.edge_calibration [--data DIR] [--band-share 0.03] [--contact-ratio 0.05] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from moleseg.core.config import EDGE_BAND_SHARE, EDGE_CONTACT_RATIO, MODELS_DIR
from moleseg.core.edgecontact import edge_contact_ratio
from moleseg.core.pairing import pair_folders
from moleseg.engine.evaluate import read_pair
from moleseg.tools import SHARED_DATA_DIR


def touches_frame(mask: np.ndarray) -> bool:
    """True when a mask pixel lies on the image's first or last row or column."""
    return bool(mask[[0, -1], :].any() or mask[:, [0, -1]].any())


def recall_and_false_alarms(rows: Sequence[dict[str, Any]], key: str, ratio: float) -> dict[str, int]:
    """``cut``, ``cut_marked``, ``clear``, ``clear_marked`` of ``rows`` (``{"cut", key}``) for the mark
    ``row[key] >= ratio``."""
    cut = [row for row in rows if row["cut"]]
    clear = [row for row in rows if not row["cut"]]
    return {"cut": len(cut), "cut_marked": sum(bool(row[key] >= ratio) for row in cut),
            "clear": len(clear), "clear_marked": sum(bool(row[key] >= ratio) for row in clear)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m moleseg.tools.edge_calibration",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=SHARED_DATA_DIR, help="the shared data folder")
    parser.add_argument("--band-share", type=float, default=EDGE_BAND_SHARE)
    parser.add_argument("--contact-ratio", type=float, default=EDGE_CONTACT_RATIO)
    parser.add_argument("--json", type=Path, help="also write every image's figures here")
    args = parser.parse_args(argv)
    from moleseg.engine.segmenter import segment
    from moleseg.network.loading import load_segmenter
    from moleseg.tools.shipped_calibration import validation_pairs

    record = json.loads((MODELS_DIR / "dermoscopy.json").read_text(encoding="utf-8"))
    segmenter = load_segmenter(MODELS_DIR / "dermoscopy.keras")
    validation = {Path(pair.image).name for pair in validation_pairs("dermoscopy", args.data)}
    rows = []
    for folder in record["train_folders"]:
        for pair in pair_folders(args.data / folder / "images", args.data / folder / "masks").pairs:
            image, mask = read_pair(pair)
            predicted = segment(segmenter, image).lesion
            rows.append({"image": f"{folder}/{Path(pair.image).name}", "cut": touches_frame(mask),
                         "validation": Path(pair.image).name in validation,
                         "true_ratio": edge_contact_ratio(mask, args.band_share),
                         "predicted_ratio": edge_contact_ratio(predicted, args.band_share)})
    report = {"band_share": args.band_share, "contact_ratio": args.contact_ratio, "n_images": len(rows),
              "true_masks": recall_and_false_alarms(rows, "true_ratio", args.contact_ratio),
              "validation_predictions": recall_and_false_alarms([row for row in rows if row["validation"]],
                                                                "predicted_ratio", args.contact_ratio),
              "training_predictions": recall_and_false_alarms(rows, "predicted_ratio", args.contact_ratio)}
    for name in ("true_masks", "validation_predictions", "training_predictions"):
        counts = report[name]
        print(f"{name}: {counts['cut_marked']} of {counts['cut']} cut lesions marked "
              f"(recall {counts['cut_marked'] / max(counts['cut'], 1):.2f}), "
              f"{counts['clear_marked']} of {counts['clear']} clear lesions marked")
    missed = [row["image"] for row in rows if row["cut"] and row["predicted_ratio"] < args.contact_ratio]
    print("cut lesions the model's mark misses:", ", ".join(missed) or "none")
    if args.json:
        args.json.write_text(json.dumps(dict(report, per_image=rows), indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
