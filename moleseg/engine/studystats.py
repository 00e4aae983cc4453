"""A study's results: one row per finished run, the verdicts' statistics (paired Wilcoxon tests over the test
images, Holm-corrected), k-fold cross-validation per recipe, and the files ``study.csv`` and ``verdicts.md``.

No plots here (the figures and ``study.html``: :mod:`moleseg.studyreport`).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from moleseg.core import options
from moleseg.core.atomic import atomic_write
from moleseg.core.markup import plain_markdown, table_cell
from moleseg.core.words import count_of
from moleseg.engine.runs import RunRecordError, RunState, read_evaluation, read_state
from moleseg.engine.studyplan import BASE_LABEL, Study, StudyError, plan, setting_label, varied_options

#: Files of a study's results, and the sub-folder of its run folders.
STUDY_CSV, VERDICTS_MD, RUNS_SUBDIR = "study.csv", "verdicts.md", "runs"
#: Two-sided significance level of the verdicts (after Holm's correction over all comparisons).
SIGNIFICANCE_LEVEL: float = 0.05
#: The option whose values are cross-validation folds: a study that varies it gets a per-recipe summary.
FOLD_OPTION = "validation_fold"
#: Metrics of the test split copied into ``study.csv`` (mean, and for FM also max/min/std).
CSV_METRICS: tuple[str, ...] = ("fm", "cm", "cr", "jaccard")


def run_finished(run_dir: Path) -> bool:
    """True when the run folder holds its test evaluation (the study skips it); a damaged one is not finished
    (the run trains again)."""
    try:
        evaluation = read_evaluation(run_dir)
    except RunRecordError:
        return False
    return evaluation is not None and evaluation.tested


def collect(study: Study, out: str | Path) -> list[dict[str, Any]]:
    """One row per finished run: the varied options, seed, time, epochs, best validation FM, test
    FM/CM/CR/Jaccard, per-image FM.

    Raises
    ------
    StudyError
        A finished run's ``state.json`` is damaged (it is named).
    """
    out = Path(out)
    varied = varied_options(study)
    rows = []
    for run in plan(study):
        run_dir = out / RUNS_SUBDIR / run.run_id
        if not run_finished(run_dir):
            continue
        evaluation = read_evaluation(run_dir)
        try:
            state = read_state(run_dir) or RunState()
        except RunRecordError as error:
            raise StudyError(str(error)) from None
        flat = {name: options.get_value(run.config, name) for name in varied}
        row: dict[str, Any] = {"run": run.run_id, "factor": run.factor, "setting": run.setting, "seed": run.seed}
        row.update({name: setting_label(value) if isinstance(value, list) else value for name, value in flat.items()})
        row["training_s"] = state.job_seconds if state.job_seconds is not None else state.training_seconds
        row["epochs_run"] = state.epoch
        row["best_val_fm"] = evaluation.best_val_fm  # what k-fold cross-validation compares
        for metric in CSV_METRICS:
            summary = evaluation.metric(metric)
            row[f"{metric}_mean"] = _number(summary.mean)
            if metric == "fm":
                row.update(fm_max=_number(summary.max), fm_min=_number(summary.min), fm_std=_number(summary.std))
        row["per_image_fm"] = dict(evaluation.per_image_fm)
        rows.append(row)
    return rows


def _number(value: float) -> float | None:
    return None if value != value else value


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order)."""
    order = np.argsort(p_values)
    adjusted = [1.0] * len(p_values)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def setting_means(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, str], dict[str, float]]:
    """Per (factor, setting): FM per test image averaged over the seeds."""
    grouped: dict[tuple[str, str], dict[str, list[float]]] = {}
    for row in rows:
        per = grouped.setdefault((row["factor"], row["setting"]), {})
        for image, value in row["per_image_fm"].items():
            per.setdefault(image, []).append(float(value))
    return {key: {image: float(np.mean(v)) for image, v in per.items()} for key, per in grouped.items()}


def verdicts(study: Study, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each factor's setting against the base setting: mean FM of both, the difference, and a paired
    Wilcoxon signed-rank test over the test images (FM averaged over the seeds), Holm-corrected.
    On a grid, every setting is compared with the best one."""
    from scipy.stats import wilcoxon

    means = setting_means(rows)
    if study.design == "grid":
        ranked = sorted(means, key=lambda key: -np.mean(list(means[key].values())))
        reference = ranked[0] if ranked else None
        comparisons = [(key, reference) for key in ranked[1:]]
    else:
        reference = (BASE_LABEL, BASE_LABEL)
        comparisons = [(key, reference) for key in means if key != reference and reference in means]
    results = []
    for key, ref in comparisons:
        images = sorted(set(means[key]) & set(means[ref]))
        a = np.array([means[key][i] for i in images])
        b = np.array([means[ref][i] for i in images])
        differences = a - b
        if len(images) < 2 or not np.any(differences):
            p = 1.0
        else:
            p = float(wilcoxon(a, b, zero_method="zsplit").pvalue)
        seeds_a = [r["fm_mean"] for r in rows if (r["factor"], r["setting"]) == key]
        seeds_b = [r["fm_mean"] for r in rows if (r["factor"], r["setting"]) == ref]
        results.append({"factor": key[0], "setting": key[1], "reference": ref[1], "n_images": len(images),
                        "fm": float(a.mean()) if len(a) else float("nan"),
                        "reference_fm": float(b.mean()) if len(b) else float("nan"),
                        "difference": float(differences.mean()) if len(differences) else float("nan"),
                        "p": p, "seeds": len(seeds_a), "seed_spread": float(np.std(seeds_a)) if seeds_a else None,
                        "reference_seed_spread": float(np.std(seeds_b)) if seeds_b else None})
    for result, adjusted in zip(results, holm([r["p"] for r in results])):
        result["p_holm"] = adjusted
        result["significant"] = adjusted < SIGNIFICANCE_LEVEL
        direction = "raised" if result["difference"] > 0 else "lowered"
        what = f"{result['factor']} = {result['setting']}" if study.design != "grid" else result["setting"]
        result["sentence"] = (
            f"{what} {direction} mean FM from {result['reference_fm']:.4f} ({result['reference']}) to "
            f"{result['fm']:.4f} over {result['n_images']} test images, Wilcoxon p = {result['p']:.3g} "
            f"(Holm {result['p_holm']:.3g}); " + ("a real difference" if result["significant"] else "within noise"))
    return results


def _recipe_label(study: Study, row: dict[str, Any]) -> str:
    """A run's setting without its fold: ``recipe=plain`` of the grid cell ``recipe=plain, validation_fold=2``;
    the base for the base and the fold factor's own runs of a one-at-a-time study."""
    if study.design == "grid":
        parts = [part for part in row["setting"].split(", ") if not part.startswith(f"{FOLD_OPTION}=")]
        return ", ".join(parts) or BASE_LABEL
    return BASE_LABEL if row["factor"] in (BASE_LABEL, FOLD_OPTION) else f"{row['factor']}={row['setting']}"


def cross_validation(study: Study, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per recipe (the varied options other than :data:`FOLD_OPTION`), the best validation FM over its folds
    (and seeds), best recipe first, each compared with the best one fold by fold (mean difference and a
    paired Wilcoxon signed-rank test over the folds). Empty when the study does not vary the fold.

    Returns
    -------
    list of dict
        ``recipe``, ``folds`` (runs), ``val_fm`` / ``val_fm_std`` / ``val_fm_min`` (0..1), ``test_fm`` (mean
        FM of the test set, 0..1), and against the best recipe ``difference``, ``p`` and ``sentence``.
    """
    from scipy.stats import wilcoxon

    if FOLD_OPTION not in varied_options(study):
        return []
    default_fold = options.option(FOLD_OPTION).default
    recipes: dict[str, dict[tuple[Any, Any], dict[str, Any]]] = {}
    for row in rows:
        if row.get("best_val_fm") is None:
            continue
        label = _recipe_label(study, row)
        fold = row.get(FOLD_OPTION)
        recipes.setdefault(label, {})[(default_fold if fold is None else fold, row["seed"])] = row
    summaries = []
    for label, runs in recipes.items():
        values = [float(run["best_val_fm"]) for run in runs.values()]
        summaries.append({"recipe": label, "folds": len(values), "val_fm": float(np.mean(values)),
                          "val_fm_std": float(np.std(values)), "val_fm_min": float(np.min(values)),
                          "test_fm": float(np.mean([run["fm_mean"] for run in runs.values()]))})
    summaries.sort(key=lambda item: -item["val_fm"])
    best = summaries[0] if summaries else None
    for summary in summaries:
        keys = sorted(set(recipes[summary["recipe"]]) & set(recipes[best["recipe"]]), key=str)
        a = np.array([float(recipes[summary["recipe"]][key]["best_val_fm"]) for key in keys])
        b = np.array([float(recipes[best["recipe"]][key]["best_val_fm"]) for key in keys])
        summary["difference"] = float((a - b).mean()) if len(keys) else float("nan")
        summary["p"] = (float(wilcoxon(a, b, zero_method="zsplit").pvalue) if len(keys) >= 2 and np.any(a - b)
                        else 1.0)
        text = (f"{summary['recipe']}: validation FM {summary['val_fm']:.4f} ± {summary['val_fm_std']:.4f} over "
                f"{count_of(summary['folds'], 'fold')} (worst {summary['val_fm_min']:.4f}; test FM {summary['test_fm']:.4f})")
        if summary is not best:
            verdict = "a real difference" if summary["p"] < SIGNIFICANCE_LEVEL else "within noise"
            text += (f", {summary['difference']:+.4f} against {best['recipe']} fold by fold over "
                     f"{count_of(len(keys), 'fold')}, Wilcoxon p = {summary['p']:.3g}: {verdict}")
            if 2 * 0.5 ** len(keys) >= SIGNIFICANCE_LEVEL:  # the exact test's smallest two-sided p
                text += f" ({len(keys)} folds cannot reach p < {SIGNIFICANCE_LEVEL} with this test)"
        summary["sentence"] = text
    return summaries


def write_results(study: Study, out: str | Path) -> list[dict[str, Any]]:
    """Write ``study.csv`` and ``verdicts.md`` from the finished runs; returns the rows (the figures and
    ``study.html``: :mod:`moleseg.studyreport`)."""
    out = Path(out)
    rows = collect(study, out)
    columns = [key for key in (rows[0] if rows else {}) if key != "per_image_fm"]
    stream = io.StringIO()
    writer = csv.DictWriter(stream, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: (f"{value:.4f}" if isinstance(value, float) else value) for key, value in row.items()
                         if key in columns})
    atomic_write(out / STUDY_CSV, stream.getvalue().encode())
    found = verdicts(study, rows)
    atomic_write(out / VERDICTS_MD, verdicts_markdown(study, rows, found).encode())
    return rows


def verdicts_markdown(study: Study, rows: Sequence[dict[str, Any]], found: Sequence[dict[str, Any]]) -> str:
    """A Markdown page: the table of settings (mean/max/min/std FM, time) and one sentence per comparison; the
    study file's names in it (untrusted) draw no markup (:mod:`moleseg.core.markup`)."""
    lines = [f"# Study {plain_markdown(study.name)}", "", f"{count_of(len(rows), 'finished run')}; design {study.design}; "
             f"{count_of(study.repeats, 'seed')} per setting; significance level {SIGNIFICANCE_LEVEL} after Holm's correction.",
             "", "| factor | setting | runs | mean FM | max FM | min FM | std FM | training s |", "|---|---|---|---|---|---|---|---|"]
    for (factor, setting), group in groups(rows).items():
        fm = [r["fm_mean"] for r in group]
        lines.append(f"| {table_cell(factor)} | {table_cell(setting)} | {len(group)} | {np.mean(fm):.4f} | "
                     f"{np.mean([r['fm_max'] for r in group]):.4f} | {np.mean([r['fm_min'] for r in group]):.4f} | "
                     f"{np.mean([r['fm_std'] for r in group]):.4f} | "
                     f"{np.mean([r['training_s'] or 0 for r in group]):.0f} |")
    lines += ["", "## Verdicts", ""] + [f"- {plain_markdown(v['sentence'])}" for v in found]
    folds = cross_validation(study, rows)
    if folds:
        lines += ["", "## Cross-validation (best validation FM per fold; choose the recipe here, not on the test set)",
                  ""] + [f"- {plain_markdown(summary['sentence'])}" for summary in folds]
    if rows:
        best = max(groups(rows).items(), key=lambda item: np.mean([r["fm_mean"] for r in item[1]]))
        lines += ["", f"Highest mean FM: {plain_markdown(best[0][0])} = {plain_markdown(best[0][1])} "
                      f"({np.mean([r['fm_mean'] for r in best[1]]):.4f})."]
    return "\n".join(lines) + "\n"


def groups(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["factor"], row["setting"]), []).append(row)
    return groups



def table_for_display(rows: Sequence[dict[str, str]]) -> list[dict[str, Any]]:
    """``study.csv`` rows with numbers as numbers (so the app's table sorts them as numbers)."""
    def number(text: Any) -> Any:
        try:
            return float(text) if text not in ("", None) else None
        except (TypeError, ValueError):
            return text
    return [{key: (value if key in ("run", "factor", "setting") else number(value)) for key, value in row.items()}
            for row in rows]
