"""A candidate recipe against a shipped one: its fold runs scored out of fold, image by image against the record.

The shipped recipe's k-fold cross-validation is recorded under ``crossval`` in ``models/<name>.json`` (one
out-of-fold FM per image, :func:`moleseg.tools.shipped_calibration.crossvalidate_shipped`). A candidate
(another backbone, input size, schedule...) trains its fold runs exactly as ``make crossval`` does
(``--validation-split 1/k --validation-fold i``); this tool scores each fold model on its own validation images
(:func:`moleseg.engine.crossval.cross_validate`), pairs the images with the shipped record and writes
``docs/experiments/<out>.json``: the recipe change (every option that differs from the shipped recipe), the
out-of-fold figures, the paired Wilcoxon test (zsplit), the images under :data:`BAD_FM`, and the same per
source (PH2, ISIC/HAM, seed). Folds may be scored as they finish: the comparison then covers their images only
(``n_images``) and says which folds it holds.

Usage::

    python -m moleseg.tools.candidate --shipped dermoscopy --out NAME RUN_DIR [RUN_DIR ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from moleseg.core import options
from moleseg.core.config import CLASSICAL_MODELS, DEFAULT_CHECK_SHARE, MODELS_DIR
from moleseg.tools import PROJECT_DIR
from moleseg.tools.shipped_recipes import read_recipe, recipe_options

#: Where candidate records are written.
EXPERIMENTS_DIR = PROJECT_DIR / "docs" / "experiments"
#: An image under this FM counts as a failure in the decision rules (docs/experiments/*-kfold-5.md).
BAD_FM = 0.85


def image_source(image_name: str) -> str:
    """The dataset an image of the shared moles comes from, by its file name's convention."""
    return "PH2" if image_name.startswith("IMD") else "ISIC/HAM" if image_name.startswith("ISIC_") else "seed"


def paired_comparison(candidate: dict[str, float], shipped: dict[str, float]) -> dict[str, Any]:
    """Candidate against shipped FM (0..1) on the images both scored out of fold.

    Returns the means, the paired Wilcoxon p-value (zsplit; 1.0 when every difference is 0), the counts under
    :data:`BAD_FM`, the minima, the images better or worse by more than 0.02, and the means per source.
    """
    from scipy.stats import wilcoxon

    common = sorted(set(candidate) & set(shipped))
    if not common:
        raise ValueError("the candidate's folds and the shipped record have no image in common")
    ours = np.array([candidate[name] for name in common])
    theirs = np.array([shipped[name] for name in common])
    sources = [image_source(name) for name in common]
    return {
        "n_images": len(common), "mean_fm": float(ours.mean()), "shipped_mean_fm": float(theirs.mean()),
        "wilcoxon_p": float(wilcoxon(ours, theirs, zero_method="zsplit").pvalue) if np.any(ours - theirs) else 1.0,
        f"under_{BAD_FM}": int(np.sum(ours < BAD_FM)), f"shipped_under_{BAD_FM}": int(np.sum(theirs < BAD_FM)),
        "min_fm": float(ours.min()), "shipped_min_fm": float(theirs.min()),
        "better_by_0.02": int(np.sum(ours - theirs > 0.02)), "worse_by_0.02": int(np.sum(theirs - ours > 0.02)),
        "per_source": {source: {"n": int(sum(s == source for s in sources)),
                                "mean_fm": float(np.mean([o for o, s in zip(ours, sources) if s == source])),
                                "shipped_mean_fm": float(np.mean([t for t, s in zip(theirs, sources) if s == source]))}
                       for source in ("PH2", "ISIC/HAM", "seed") if source in sources},
    }


def recipe_change(shipped: dict[str, Any], candidate: dict[str, Any]) -> dict[str, Any]:
    """The options (``model.x`` for model options) whose values differ between two training configurations,
    with the candidate's value; dataset folders, the name and the recipe section are left out (the folds
    read the same data through another root)."""
    left_out = {"name", "recipe", *(name for pair in options.FOLDER_PAIRS for name in pair)}

    def flat(config: dict[str, Any]) -> dict[str, Any]:
        complete = options.merged(options.defaults(), config)  # a recipe file leaves defaults out
        values = recipe_options({key: value for key, value in complete.items() if key not in left_out})
        model = values.pop("model", {}) or {}
        return {**values, **{f"model.{key}": value for key, value in model.items()}}

    shipped_values, candidate_values = flat(shipped), flat(candidate)
    return {key: value for key, value in sorted(candidate_values.items()) if shipped_values.get(key) != value}


def score_candidate(shipped_name: str, run_dirs: list[Path]) -> dict[str, Any]:
    """Score the fold runs ``run_dirs`` out of fold and compare them with ``models/<shipped_name>.json``."""
    from moleseg.core.trainconfig import TrainConfig
    from moleseg.engine.crossval import Fold, cross_validate
    from moleseg.engine.runs import RunFiles, read_config
    from moleseg.network.loading import load_segmenter
    from moleseg.network.trainsetup import split_of

    record = json.loads((MODELS_DIR / f"{shipped_name}.json").read_text())
    if "crossval" not in record:
        raise ValueError(f"models/{shipped_name}.json holds no cross-validation (make crossval)")
    folds, every_pair, configs = [], [], []
    for run_dir in run_dirs:
        config = TrainConfig.from_dict(read_config(run_dir) or {})
        configs.append(config.to_dict())
        train, validation, test = split_of(config)
        every_pair = every_pair or [*train, *validation, *test]
        folds.append(Fold(name=run_dir.name, pairs=validation,
                          segmenter=load_segmenter(RunFiles(run_dir).model, test_time_augmentation=False)))
    result = cross_validate(folds, baseline=load_segmenter(CLASSICAL_MODELS[folds[0].segmenter.n_classes]),
                            share=DEFAULT_CHECK_SHARE, all_pairs=every_pair, progress=print).to_dict()
    change = recipe_change(read_recipe(shipped_name), configs[0])
    shipped_fm = {row["image"]: row["fm"] for row in record["crossval"]["per_image"]}
    candidate_fm = {row["image"]: row["fm"] for row in result["per_image"]}
    return {"recipe_change": change, "folds": [run_dir.name for run_dir in run_dirs], "crossval": result,
            "against_shipped": paired_comparison(candidate_fm, shipped_fm)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m moleseg.tools.candidate", description=__doc__.split("\n")[0])
    parser.add_argument("--shipped", default="dermoscopy", help="the shipped recipe compared with")
    parser.add_argument("--out", required=True, help="record name: docs/experiments/OUT.json")
    parser.add_argument("runs", nargs="+", type=Path, help="the candidate's finished fold runs")
    args = parser.parse_args(argv)
    from moleseg.engine.runs import write_json

    try:
        scored = score_candidate(args.shipped, args.runs)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    command = (f"python -m moleseg.tools.candidate --shipped {args.shipped} --out {args.out} "
               + " ".join(str(run) for run in args.runs))
    write_json(EXPERIMENTS_DIR / f"{args.out}.json", {"name": args.out, "command": command, **scored})
    print(json.dumps(scored["against_shipped"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
