"""A study's report: the plotly figures (FM per test image by setting, FM of each test image, validation FM
curves) and ``study.html``, one self-contained page with the verdicts; for ``moleseg study`` and the Study page.

The engine computes the results (:mod:`moleseg.engine.studystats`); plotly lives here, above it.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Sequence

from moleseg.core.atomic import atomic_write
from moleseg.engine.runs import RunFiles, RunRecordError, read_history
from moleseg.engine.studyplan import Study
from moleseg.engine.studystats import RUNS_SUBDIR, collect, cross_validation, groups, setting_means, verdicts

#: The report's file in a study folder.
STUDY_HTML = "study.html"


def study_figures(study: Study, out: str | Path, rows: Sequence[dict[str, Any]]) -> list[Any]:
    """Plotly figures: FM distribution per setting, FM per test image per setting, validation FM curves (a run
    whose ``history.csv`` cannot be read is left out, its file and reason under the curves' title)."""
    import plotly.graph_objects as go

    out = Path(out)
    distribution = go.Figure()
    for (factor, setting), group in groups(rows).items():
        values = [v for row in group for v in row["per_image_fm"].values()]
        distribution.add_trace(go.Box(y=values, name=f"{factor}: {setting}", boxmean=True))
    distribution.update_layout(title="FM per test image, by setting (all seeds)", yaxis_title="FM",
                               showlegend=False)
    per_image = go.Figure()
    for (factor, setting), values in setting_means(rows).items():
        images = sorted(values)
        per_image.add_trace(go.Scatter(x=images, y=[values[i] for i in images], mode="lines+markers",
                                       name=f"{factor}: {setting}"))
    per_image.update_layout(title="FM of each test image (mean over seeds)", xaxis_title="test image",
                            yaxis_title="FM")
    curves = go.Figure()
    unreadable: list[str] = []  # a run's damaged history.csv (the study folder is the user's): its curve left out
    for row in rows:
        try:
            history = read_history(RunFiles(out / RUNS_SUBDIR / row["run"]).history)
        except RunRecordError as error:
            unreadable.append(str(error))
            continue
        curves.add_trace(go.Scatter(x=[h.get("epoch") for h in history], y=[h.get("val_fm") for h in history],
                                    mode="lines", name=row["run"]))
    title = "Validation FM per epoch (every run)"
    if unreadable:
        title += f"<br><sub>not shown: {html.escape('; '.join(unreadable), quote=False)}</sub>"
    curves.update_layout(title=title, xaxis_title="epoch", yaxis_title="FM")
    return [distribution, per_image, curves]


def study_html(study: Study, out: str | Path, rows: Sequence[dict[str, Any]] | None = None) -> str:
    """One self-contained HTML page: the verdicts, the cross-validation and the three figures (plotly.js
    inlined once). ``rows``: :func:`moleseg.engine.studystats.collect`'s, read from ``out`` when not given."""
    rows = collect(study, out) if rows is None else rows
    parts = [f"<html><head><meta charset='utf-8'><title>Study {html.escape(study.name)}</title></head><body>",
             f"<h1>Study {html.escape(study.name)}</h1><ul>"]
    parts += [f"<li>{html.escape(v['sentence'])}</li>" for v in verdicts(study, rows)]
    parts.append("</ul>")
    folds = cross_validation(study, rows)
    if folds:
        parts.append("<h2>Cross-validation</h2><ul>")
        parts += [f"<li>{html.escape(summary['sentence'])}</li>" for summary in folds]
        parts.append("</ul>")
    for index, figure in enumerate(study_figures(study, out, rows)):
        parts.append(figure.to_html(full_html=False, include_plotlyjs=index == 0))
    parts.append("</body></html>")
    return "\n".join(parts)


def write_html(study: Study, out: str | Path, rows: Sequence[dict[str, Any]] | None = None) -> Path:
    """Write ``study.html`` into the study folder ``out`` atomically; returns its path."""
    return atomic_write(Path(out) / STUDY_HTML, study_html(study, out, rows).encode())


def folder_report(out: str | Path) -> tuple[list[Any], str]:
    """The figures and the HTML page of the study folder ``out``, from its finished runs (its plan names the
    study file); nothing when that file cannot be read any more."""
    from moleseg.engine.studyrun import study_of_folder

    study = study_of_folder(out)
    if study is None:
        return [], ""
    rows = collect(study, out)
    return study_figures(study, out, rows), study_html(study, out, rows)
