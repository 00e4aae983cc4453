"""``moleseg evaluate``, ``moleseg score`` and ``moleseg compare``: models and predictions scored against true
masks, and two visits compared.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from moleseg.cli.common import (EXIT_OK, CommandError, ProgressBar, checked_output, checked_outputs,
                                failures_exit, open_model, paired_files, print_mask_warnings, print_summary,
                                write_outputs)
from moleseg.core.config import CLASSICAL_MODELS, default_model_spec


def cmd_evaluate(args: argparse.Namespace) -> int:
    from moleseg.engine.evaluate import evaluate_pairs, results_table
    from moleseg.engine.overlap import training_overlap

    outputs = checked_outputs(args)
    pairs = paired_files(args.images, args.masks, args)
    segmenter = open_model(args.model, args.tta)
    overlap = training_overlap(segmenter.info, [pair.image for pair in pairs])
    bar = ProgressBar(len(pairs), f"evaluating {segmenter.name}", args.quiet)
    try:
        summary, results, failures = evaluate_pairs(segmenter, pairs, batch_size=args.batch_size,
                                                    progress=lambda done, total, name: bar.update_to(done))
    finally:
        bar.close()
    baseline = None
    if not args.no_baseline and segmenter.name not in CLASSICAL_MODELS.values():
        baseline, _, _ = evaluate_pairs(open_model(CLASSICAL_MODELS[segmenter.n_classes]), pairs)
        summary["baseline"] = {k: v for k, v in baseline.items() if k != "per_image"}
    summary["model"] = segmenter.name
    summary["training_overlap"] = overlap.to_json()
    print_summary(summary, baseline)
    print_mask_warnings(failures)
    if overlap.known:
        print(f"evaluated images the model was trained on: {overlap.count} of {overlap.total}")
    if overlap.warning():
        print(f"warning: {overlap.warning()}", file=sys.stderr)
    written = write_outputs(outputs, summary, results_table(results))
    return max(written, failures_exit(failures.items))


def cmd_score(args: argparse.Namespace) -> int:
    from moleseg.engine.evaluate import results_table, score_pairs

    outputs = checked_outputs(args)
    pairs = paired_files(args.pred, args.masks, args)
    bar = ProgressBar(len(pairs), "scoring", args.quiet)
    try:
        summary, results, failures = score_pairs(pairs, progress=lambda done, total, name: bar.update_to(done))
    finally:
        bar.close()
    if summary["n"]:
        print_summary(summary)
    print_mask_warnings(failures)
    written = write_outputs(outputs, summary, results_table(results))
    return max(written, failures_exit(failures.items))


def cmd_compare(args: argparse.Namespace) -> int:
    from moleseg.core.atomic import atomic_write
    from moleseg.core.imageio import ImageReadError, read_image
    from moleseg.engine.compare import compare_visits
    from moleseg.engine.runs import write_json

    json_path = checked_output("--json", args.json)
    pdf_path = checked_output("--pdf", args.pdf) if args.pdf else None
    try:
        before, after = read_image(args.before), read_image(args.after)
    except ImageReadError as error:
        raise CommandError(str(error)) from error
    segmenter = open_model(args.model or default_model_spec())
    comparison = compare_visits(segmenter, before, after, pixel_size_mm=args.pixel_size_mm,
                                allow_scale=args.allow_scale, noise_passes=args.noise_passes)
    summary = {"before": str(args.before), "after": str(args.after), **comparison.to_json()}
    write_json(json_path, summary)
    if pdf_path is not None:
        atomic_write(pdf_path, comparison.pdf(Path(args.before).name, Path(args.after).name))
    for warning in comparison.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    registration = comparison.registration
    print(f"rotation {registration.rotation_deg:+.2f} deg (counter-clockwise positive), lesion centre moved "
          f"{comparison.shift_text()}, registration quality {registration.quality:.2f}")
    if not comparison.comparable:
        print("no change is reported: the two visits are not comparable (see the warning)")
        return EXIT_OK
    beyond = [c.label + (f" ({c.unit})" if c.unit else "") for c in comparison.changes if c.beyond_noise]
    print(f"area change {comparison.area_change_percent:+.2f} %; beyond measurement noise: "
          + (", ".join(dict.fromkeys(beyond)) or "nothing"))
    return EXIT_OK
