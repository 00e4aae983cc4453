"""The Evaluate page's computing: a model scored on a dataset (beside the classical baseline or another
model) as a background task of the server's :func:`moleseg.app.ui.task_registry` (per server, keyed by
everything the result depends on), its summary tables, its worst images drawn, and the runs' comparison
table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from moleseg.app.models import ModelChoice, classical_choice
from moleseg.app.preparation import degenerate_mask_warnings
from moleseg.core.config import BASELINE_NAME
from moleseg.core.imageio import ImageReadError, read_image, read_mask
from moleseg.engine.overlap import training_overlap
from moleseg.engine.segmenter import Segmenter
from moleseg.engine.tasks import Progress

METRIC_LABELS: dict[str, str] = {"fm": "FM (F-measure, Dice)", "cm": "CM (completeness, recall)",
                                 "cr": "CR (correctness, precision)", "jaccard": "Jaccard (IoU)",
                                 "hd95": "HD95 (px)", "border_fm": "border band FM"}
#: What the border band FM measures, in one line for the page.
BORDER_FM_TEXT: str = ("**Border band FM**: FM of the predicted border ring (the BORDER class, a band of the model's "
                       "border width along the lesion's edge) against the same band drawn along the true lesion's "
                       "edge; it shows how closely the outline follows the true one.")
#: How many worst images an evaluation draws unless asked for another count.
WORST_SHOWN: int = 4
#: The most worst images the Evaluate page offers to draw.
WORST_SHOWN_MAX: int = 20
#: Colour (RGB) of the true lesion's outline on the worst images, and what the page says of the pictures.
TRUTH_COLOR: tuple[int, int, int] = (255, 0, 255)
WORST_CAPTION: str = "**Worst images** (prediction filled, true lesion outlined in magenta)"


def comparable_models(evaluated: ModelChoice, choices: Iterable[ModelChoice]) -> dict[str, ModelChoice]:
    """The network models that may stand beside ``evaluated`` on the same images ("Compare with"): those of
    the same kind (number of classes, i.e. dermoscopy or cells), by spec, the evaluated one left out."""
    return {c.spec: c for c in choices
            if c.spec != evaluated.spec and c.kind != "classical" and c.n_classes == evaluated.n_classes}


def baseline_choice(evaluated: ModelChoice, n_classes: int, *, compare: ModelChoice | None,
                    with_baseline: bool) -> tuple[ModelChoice | None, str]:
    """The model scored beside ``evaluated`` (of ``n_classes`` classes) and its name in the tables: ``compare``
    when one was chosen, else, when asked for, the classical baseline of the same number of classes (never beside
    a classical model), else none (named :data:`~moleseg.core.config.BASELINE_NAME`)."""
    if compare is not None:
        return compare, compare.label
    if with_baseline and evaluated.kind != "classical":
        return classical_choice(n_classes), BASELINE_NAME
    return None, BASELINE_NAME


def summary_rows(summary: dict, baseline: dict | None = None, model_name: str = "model",
                 baseline_name: str = BASELINE_NAME) -> list[dict[str, Any]]:
    """Rows ``metric, mean, std, min, max`` of an evaluation summary, with the baseline's mean/min/max beside."""
    rows = []
    for key, label in METRIC_LABELS.items():
        values = summary.get(key)
        if not isinstance(values, dict):
            continue
        row: dict[str, Any] = {"metric": label}
        for stat in ("mean", "std", "min", "max"):
            row[f"{model_name} {stat}"] = values.get(stat)
        if baseline and isinstance(baseline.get(key), dict):
            for stat in ("mean", "std", "min", "max"):
                row[f"{baseline_name} {stat}"] = baseline[key].get(stat)
        rows.append(row)
    return rows


def per_image_fm(summary: dict) -> list[tuple[str, float]]:
    """``(image, FM)`` of every evaluated image, in evaluation order."""
    return [(row["image"], float(row["fm"])) for row in summary.get("per_image", [])]


def worst_images(summary: dict, count: int = WORST_SHOWN) -> list[tuple[str, float]]:
    """The ``count`` images with the lowest FM, worst first."""
    return sorted(per_image_fm(summary), key=lambda item: item[1])[:count]


def worst_overlays(segmenter: Segmenter, pairs: Sequence[Any], names: Sequence[str]
                   ) -> list[tuple[str, np.ndarray]]:
    """For each named pair: the image with the predicted lesion and border overlaid and the true
    lesion's outline in magenta (the pairs are predicted again: only a few), shrunk to at most
    :data:`moleseg.core.render.DISPLAY_SIDE_PX` px on its longer side (held with the result, shown on each rerun)."""
    from moleseg.core.resize import resize_mask_to
    from moleseg.core.render import contour_overlay, overlay, shrunk
    from moleseg.engine.segmenter import segment

    by_name = {Path(p.image).name: p for p in pairs}
    pictures = []
    for name in names:
        pair = by_name.get(name)
        if pair is None:
            continue
        try:
            image = read_image(pair.image)
            truth = read_mask(pair.mask, allow_empty=True)
        except ImageReadError:
            continue
        truth = resize_mask_to(truth, image.shape[0], image.shape[1])
        segmentation = segment(segmenter, image)
        picture = overlay(image, segmentation.lesion, segmentation.border)
        thickness = max(1, round(max(image.shape[:2]) / 300))
        pictures.append((name, shrunk(contour_overlay(picture, truth, color=TRUTH_COLOR, thickness_px=thickness))))
    return pictures


def evaluate_with_baseline(segmenter: Segmenter, pairs: Sequence[Any], *, baseline: Segmenter | None = None,
                           with_hd95: bool = True, worst_count: int = WORST_SHOWN,
                           progress: Callable[[int, int, str], None] | None = None) -> dict[str, Any]:
    """Evaluate ``segmenter`` (and ``baseline`` on the same pairs) and draw its worst images.

    Returns ``{"name", "summary", "baseline" (summary or None), "failures" [(file, reason)],
    "mask_warnings" (empty and full true masks, :func:`degenerate_mask_warnings`), "worst" [(image, FM)], "pictures" [(image, overlay)]}``; ``progress(done, total, what)``.
    """
    from moleseg.engine.evaluate import evaluate_pairs

    def report(what: str) -> Callable[[int, int, str], None] | None:
        return (lambda done, total, name: progress(done, total, what)) if progress else None

    summary, _, failures = evaluate_pairs(segmenter, pairs, with_hd95=with_hd95, progress=report(segmenter.name))
    baseline_summary = None
    if baseline is not None:
        baseline_summary, _, _ = evaluate_pairs(baseline, pairs, with_hd95=with_hd95,
                                                progress=report(f"baseline {baseline.name}"))
    worst = worst_images(summary, worst_count) if summary.get("n") and worst_count > 0 else []
    return {"name": segmenter.name, "summary": summary, "baseline": baseline_summary, "failures": failures.items,
            "mask_warnings": degenerate_mask_warnings(failures.empty, failures.full), "worst": worst, "pictures": worst_overlays(segmenter, pairs, [name for name, _ in worst])}


def evaluation_key(choice: ModelChoice, images_dir: str | Path, masks_dir: str | Path, *, with_baseline: bool,
                   with_hd95: bool, worst_count: int, compare: ModelChoice | None = None) -> tuple:
    """The key of an evaluation in the app's task registry: everything its result depends on (``compare``:
    the model scored beside it instead of the classical baseline)."""
    return ("evaluate", choice.key, str(Path(images_dir).resolve()), str(Path(masks_dir).resolve()),
            bool(with_baseline), bool(with_hd95), int(worst_count), compare.key if compare else None)


def evaluation_task(segmenter: Segmenter, report: Any, *, baseline: Segmenter | None, with_hd95: bool,
                    worst_count: int, model: str, folder: str, baseline_name: str = BASELINE_NAME
                    ) -> Callable[[Progress], dict[str, Any]]:
    """The work of an evaluation for :meth:`moleseg.engine.tasks.TaskRegistry.submit`: the
    :func:`evaluate_with_baseline` result of ``report``'s pairs (a :class:`moleseg.core.pairing.PairingReport`)
    with ``model``, ``folder``, ``baseline_name`` (the classical baseline, or the model compared with)
    and the pairing summary added."""
    def work(progress: Progress) -> dict[str, Any]:
        result = evaluate_with_baseline(segmenter, report.pairs, baseline=baseline, with_hd95=with_hd95,
                                        worst_count=worst_count,
                                        progress=lambda done, total, what: progress(done, total,
                                                                                    f"{what}: {done}/{total}"))
        overlap = training_overlap(segmenter.info, [pair.image for pair in report.pairs])
        return {**result, "model": model, "folder": folder, "baseline_name": baseline_name, "pairing": report.summary(),
                "training_overlap": overlap.warning()}

    return work


def runs_table(run_dirs: Iterable[str | Path]) -> list[dict[str, Any]]:
    """The article's comparison table: one :func:`moleseg.engine.runs.run_summary` row per run; the status
    of a run started by the app is its job's (:func:`moleseg.engine.jobs.read_job`: ``failed`` or ``died``,
    not the ``running`` a killed process leaves in ``state.json``); a run with a damaged record has its
    message as status."""
    from moleseg.engine.jobs import read_job
    from moleseg.engine.runs import RunFiles, RunRecordError, run_summary

    rows = []
    for run in run_dirs:
        try:
            row = run_summary(run)
        except RunRecordError as error:
            rows.append({"run": Path(run).name, "status": str(error)})
            continue
        if RunFiles(Path(run)).job.is_file():
            row["status"] = read_job(run).status
        rows.append(row)
    return rows
