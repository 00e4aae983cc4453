"""Streamlit glue shared by the app's pages: start-up housekeeping, the per-session folder, the
server's analysis cache and background tasks, cached segmenters, the model picker and small notices.
The computing lives in the other :mod:`moleseg.app` modules, :mod:`moleseg.engine.jobs`, :mod:`moleseg.engine.tasks`
and the engine modules; no TensorFlow is imported here.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st

from moleseg.app import models
from moleseg.app.analysis import AnalysisStore, Upload
from moleseg.app.heldmemory import HeldAnalyses, Holding, pixel_bytes
from moleseg.app.models import ModelChoice
from moleseg.core.config import (BASELINE_NAME, DERMOSCOPY_MODEL, SESSION_HEARTBEAT_S, analysis_bytes_per_user,
                                 default_model_spec, installed_dermoscopy_model)
from moleseg.core.settings import load_settings
from moleseg.core.errors import first_line
from moleseg.core.markup import plain_markdown
from moleseg.core.words import capitalised
from moleseg.engine.recordtypes import SavedAnalysis
from moleseg.engine.segmenter import Segmenter
from moleseg.engine import launch
from moleseg.engine.tasks import Task, TaskRegistry, TooManyTasks
from moleseg.engine.session import FolderSweeper, SessionFolder, dataset_text

@dataclass(frozen=True)
class PageEntry:
    """One page of the app's navigation: ``key`` (its file ``app_pages/<key>.py`` and url path), the
    navigation's ``title`` and ``icon``, and what it is for (the home page's line)."""

    key: str
    title: str
    icon: str
    purpose: str


#: The app's pages after the home page, in the navigation's order: ``app.py`` builds the navigation and the
#: home page's list from it.
PAGES: tuple[PageEntry, ...] = (
    PageEntry("analyse", "Analyse", ":material/image_search:",
              "upload mole (or cell) images, see and export their borders"),
    PageEntry("prepare", "Prepare targets", ":material/layers:",
              "pair images with masks, preview BACK/BORDER/INSIDE"),
    PageEntry("train", "Train", ":material/model_training:", "train the network on your dataset, with live progress"),
    PageEntry("evaluate", "Evaluate", ":material/analytics:", "score models against true masks, compare runs"),
    PageEntry("history", "History", ":material/history:", "reopen the analyses you saved to records"),
    PageEntry("compare", "Compare visits", ":material/compare:", "put two visits of one lesion side by side"),
    PageEntry("study", "Study", ":material/science:", "run or open a study of the models over whole datasets"),
)
#: Page files, relative to ``app.py``, by page key.
PAGE_FILES: dict[str, str] = {page.key: f"app_pages/{page.key}.py" for page in PAGES}
#: Page icons by page key (a link to a page shows its navigation icon).
PAGE_ICONS: dict[str, str] = {page.key: page.icon for page in PAGES}
#: Session-state key of the model chosen on any page (shared by the pickers).
MODEL_KEY = "moleseg_model"
#: Seconds between two looks at a running background task (:func:`follow_task`).
TASK_POLL_SECONDS: float = 1.0
#: Session-state key of the dataset chosen on the Prepare page (``{"images", "masks", "source"}``).
DATASET_KEY = "moleseg_dataset"


#: Session-state key of this browser session's :class:`SessionFolder`.
SESSION_FOLDER_KEY = "_moleseg_session_folder"


@st.cache_resource(show_spinner=False)
def startup() -> FolderSweeper:
    """Once per server process: start the sweep that removes idle session folders (closed tabs, or left
    by a crashed server: the first sweep runs now), and load the default model in the background, so that
    the first image after the server starts does not wait for it. ``moleseg serve`` runs it once the server
    listens (:mod:`moleseg.app.server`); otherwise the first page does."""
    default = default_model_spec()
    for choice in models.shipped_choices():  # the default is a shipped model or a classical one, never a user's
        if choice.spec == default:
            segmenter_preloads().start(choice.spec, choice.stamp)
    return FolderSweeper(in_use=launch.folder_in_use).start()


class SegmenterPreloads:
    """Segmenters loaded in a background thread before a page asks for them, by ``(spec, stamp)``; the first
    :func:`load_segmenter` of one takes it (waiting for the load to end) instead of loading it again."""

    def __init__(self) -> None:
        self._loads: dict[tuple[str, int], Future] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="moleseg-preload")

    def start(self, spec: str, stamp: int) -> None:
        """Start loading the model ``spec`` (its file's ``stamp``) unless it is loading already."""
        from moleseg.network.loading import preload

        with self._lock:
            if (spec, stamp) not in self._loads:
                self._loads[spec, stamp] = self._pool.submit(preload, spec)

    def take(self, spec: str, stamp: int) -> Segmenter | None:
        """The preloaded segmenter of ``(spec, stamp)`` (its loading error raised), or None when none was
        started; a segmenter is handed out once."""
        with self._lock:
            load = self._loads.pop((spec, stamp), None)
        return None if load is None else load.result()


@st.cache_resource(show_spinner=False)
def segmenter_preloads() -> SegmenterPreloads:
    """The server's background model loads (:class:`SegmenterPreloads`)."""
    return SegmenterPreloads()


def session_folder() -> SessionFolder:
    """This browser session's temporary folder (created on first use, removed with the session or by the
    sweep of :func:`startup` once its tab has been closed for a while), marked as its user's (their quota)."""
    folder = st.session_state.get(SESSION_FOLDER_KEY)
    if not isinstance(folder, SessionFolder) or folder.removed:
        folder = SessionFolder(in_use=launch.folder_in_use, owner=_user_name() or "")
        st.session_state[SESSION_FOLDER_KEY] = folder
    folder.touch()
    return folder


def session_heartbeat() -> None:
    """While this tab is open, touch its session folder every :data:`SESSION_HEARTBEAT_S` (a fragment that
    draws nothing), so the idle sweep keeps it; nothing when the session has no folder."""
    folder = st.session_state.get(SESSION_FOLDER_KEY)
    if not isinstance(folder, SessionFolder) or folder.removed:
        return

    @st.fragment(run_every=SESSION_HEARTBEAT_S)
    def beat() -> None:
        current = st.session_state.get(SESSION_FOLDER_KEY)
        if isinstance(current, SessionFolder) and not current.removed:
            current.touch()

    beat()


@st.cache_resource(show_spinner=False)
def analysis_store() -> AnalysisStore:
    """The server's one cache of predictions, shared by every session and bounded by
    :data:`moleseg.app.analysis.ANALYSIS_CACHE_BYTES` (so a slider change re-runs only the cleanup)."""
    return AnalysisStore()


@st.cache_resource(show_spinner=False)
def held_analyses() -> HeldAnalyses:
    """The server's record of the analyses each user's open pages hold (:class:`moleseg.app.heldmemory.HeldAnalyses`),
    each user's share :func:`moleseg.core.config.analysis_bytes_per_user`."""
    return HeldAnalyses(analysis_bytes_per_user())


#: Session-state key of this session's :class:`moleseg.app.heldmemory.Holding` of a page (its name follows).
HOLDING_KEY = "_moleseg_held_analyses"


def held_analyses_refusal(uploads: Sequence[Upload], page: str) -> str | None:
    """On a shared server, why this session's ``page`` (each page its own holding: the Analyse page's analyses stay
    in the session while the Compare page shows two visits) may not analyse ``uploads``
    (:meth:`HeldAnalyses.refusal`: its user's open pages would hold more than their share of the server's memory),
    else None (also in personal mode, and without a user, whom the page refuses on its own)."""
    holding = _page_holding(page)
    return None if holding is None else held_analyses().refusal(holding, uploads)


def held_visits_refusal(saved: Sequence[SavedAnalysis], page: str) -> str | None:
    """:func:`held_analyses_refusal` of saved visits (their pictures opened from the records, each counted as an
    analysis of its size)."""
    holding = _page_holding(page)
    if holding is None:
        return None
    pixels = sum(visit.image.shape[0] * visit.image.shape[1] for visit in saved)
    return held_analyses().refusal_of(holding, tuple(f"record {visit.record.uid}" for visit in saved),
                                      pixel_bytes(pixels))


def _page_holding(page: str) -> Holding | None:
    """This session's :class:`Holding` of ``page`` on a shared server (made on first use); None in personal mode
    and without a user."""
    owner = _user_name() if load_settings().shared else None
    if owner is None:
        return None
    key = f"{HOLDING_KEY}_{page}"
    holding = st.session_state.get(key)
    if not isinstance(holding, Holding) or holding.owner != owner:
        holding = st.session_state[key] = held_analyses().holding(owner)
    return holding


@st.cache_resource(show_spinner=False)
def task_registry() -> TaskRegistry:
    """The server's background tasks (evaluations, dataset scans, model preparations), keyed by their inputs."""
    return TaskRegistry()


@st.cache_resource(show_spinner=False)
def device_summary() -> str:
    """What the machine offers (GPU or CPU), looked up once per server."""
    return models.device_summary()


def submit_task(key: Hashable, work: Callable[[Any], Any], *, restart: bool = True) -> Task:
    """Start ``work`` as a background task of :func:`task_registry` under ``key`` (again when it has finished,
    unless not ``restart``), owned by this session's user; returns the task.

    Raises
    ------
    moleseg.engine.tasks.TooManyTasks
        When the user already has :data:`~moleseg.core.config.MAX_TASKS_PER_USER` tasks running or waiting.
    """
    return task_registry().submit(key, work, restart=restart, owner=_user_name())


def _user_name() -> str | None:
    """The name of this session's user (:func:`moleseg.app.identity.current_user`), None when none is believed."""
    from moleseg.app.identity import current_user
    from moleseg.engine.recordtypes import User

    user = current_user()
    return user.name if isinstance(user, User) else None


def follow_task(key: Hashable, show_result: Callable[[Any], None], *, failure: str = "The task failed") -> None:
    """Show the background task ``key`` of :func:`task_registry`: a progress bar polled every
    ``TASK_POLL_SECONDS`` while it runs (a fragment: the rest of the page is not rerun), then
    ``show_result(result)``, or ``failure`` with the error's first line. Nothing when there is no such task."""
    task = task_registry().get(key)
    if task is None:
        return
    polling = not task.finished

    @st.fragment(run_every=TASK_POLL_SECONDS if polling else None)
    def panel() -> None:
        current = task_registry().get(key)
        if current is None:
            return
        if not current.finished:
            st.progress(current.fraction, text=current.text or "Starting...")
        elif polling:  # it has just finished: a full run draws the result and stops the polling
            st.rerun()
        elif current.error is not None:
            st.error(f"{failure}: {first_line(current.error)}")
        else:
            show_result(current.result)

    panel()


def preparation_failure(choice: ModelChoice) -> str:
    """What a page says when a model's inference preparation failed (the error's first line follows)."""
    return (f"Could not prepare {plain_markdown(choice.label)} for fast analysis, so TensorFlow analyses its "
            "images, more slowly")


#: What the Analyse page does once a model is prepared (the closing sentence of :func:`model_prepared`'s notice).
ANALYSED_WHEN_READY = "The images you drop are analysed when it is ready"


def model_prepared(choice: ModelChoice, when_ready: str = ANALYSED_WHEN_READY) -> bool:
    """Start making a user's own model's inference form in the background when it has none
    (:func:`moleseg.app.models.needs_preparation`; one task per model file on the server, whichever session
    asks first) and show its progress, polled, while the rest of the page stays usable. True when the page can
    analyse with the model now: nothing to prepare, prepared, or the preparation failed (said in one sentence;
    TensorFlow then predicts). ``when_ready``: what the page does with the model once it is ready, a clause
    without a full stop."""
    key = models.preparation_key(choice)
    task = task_registry().get(key)
    if task is None:
        if not models.needs_preparation(choice):
            return True
        try:  # the user's task: it counts in their share of the server's background work
            task = submit_task(key, models.preparation_task(choice), restart=False)
        except TooManyTasks as error:
            st.warning(str(error), icon=":material/hourglass_top:")
            return False
    if task.finished and task.error is None:
        return True
    if not task.finished:
        st.info(f"Preparing {plain_markdown(choice.label)} for fast analysis: once per model on this server, a few "
                f"minutes. {when_ready}; the other models can be used meanwhile.",
                icon=":material/hourglass_top:")
    follow_task(key, lambda runtime: None, failure=preparation_failure(choice))
    return task.finished


def upload_limit_mb() -> int:
    """The server's upload limit per file, in MB (``server.maxUploadSize``)."""
    try:
        return int(st.get_option("server.maxUploadSize"))
    except Exception:
        return 200


@st.cache_resource(max_entries=4, show_spinner="Loading the model...")
def _cached_segmenter(spec: str, stamp: int) -> Segmenter:
    from moleseg.network.loading import load_segmenter

    preloaded = segmenter_preloads().take(spec, stamp)
    return preloaded if preloaded is not None else load_segmenter(spec)


def load_segmenter(choice: ModelChoice) -> Segmenter | None:
    """The segmenter of ``choice``, loaded once per server (``st.cache_resource``); shows an error and
    returns None when it cannot be loaded."""
    try:
        return _cached_segmenter(choice.spec, choice.stamp)
    except Exception as error:  # a corrupt or foreign file: say so, no stack trace
        st.error(f"Cannot load the model {plain_markdown(choice.label)}: {first_line(error)}")
        return None


#: What a browser user is told when the inference cache was not used (the server path stays in the server's log).
CACHE_REBUILT_WARNING = ("This model's prepared inference files on the server were damaged or out of date: they "
                         "were not used and are being rebuilt; the result shown was computed from the model file.")


def show_cache_notes(segmenter: Segmenter) -> None:
    """Show with ``st.warning`` what went wrong with the per-machine inference cache while ``segmenter``
    predicted (:attr:`moleseg.network.predict.KerasSegmenter.cache_notes`: an entry rebuilt, TensorFlow used
    instead), once and without the entry's server path (browser users are untrusted; the server's log has the
    full note): the notes are taken from the segmenter, so a rerun does not show them again."""
    notes = getattr(segmenter, "cache_notes", None)
    if notes:
        notes.clear()  # the full notes, with the entry's server path, went to the server's log as warnings
        st.warning(CACHE_REBUILT_WARNING)


def remembered_model(choices: Sequence[ModelChoice] | None = None) -> ModelChoice:
    """Of ``choices`` (default: every model on offer, :func:`moleseg.app.models.model_choices`), the model this
    session chose last on any page, else the default model (:func:`moleseg.core.config.default_model_spec`),
    else the first."""
    offered = list(models.model_choices() if choices is None else choices)
    by_spec = {c.spec: c for c in offered}
    for spec in (st.session_state.get(MODEL_KEY), default_model_spec()):
        if spec in by_spec:
            return by_spec[spec]
    return offered[0]


def model_picker(key: str, *, label: str = "Model", n_classes: int | None = None,
                 help: str | None = None) -> ModelChoice:
    """A select box of the shipped models, the classical baselines and the trained runs. The choice is
    shared between pages."""
    choices = models.model_choices()
    if n_classes is not None:
        choices = [c for c in choices if c.n_classes in (None, n_classes)] or choices
    by_spec = {c.spec: c for c in choices}
    specs = list(by_spec)
    remembered = remembered_model(choices).spec
    if st.session_state.get(key) not in by_spec:
        st.session_state.pop(key, None)
        index = specs.index(remembered)
    else:
        index = specs.index(st.session_state[key])
    spec = st.selectbox(label, specs, index=index, key=key, format_func=lambda s: by_spec[s].label,
                        help=help or "Shipped models (models/*.keras), the classical baselines (no network) "
                                     "and the models of your training runs.")
    st.session_state[MODEL_KEY] = spec
    return by_spec[spec]


def model_in_use(choice: ModelChoice) -> tuple[str, str]:
    """``(name, version)`` of a model: its picker label without the details in brackets, and the version its file
    gives (read without TensorFlow; '' when unknown)."""
    details = {row["property"]: row["value"] for row in models.model_details(choice)}
    return choice.label.split(" (")[0], details.get("version", "")


def show_model_info(choice: ModelChoice, expanded: bool = False) -> None:
    """An expander with what the model is (read from its file without TensorFlow)."""
    with st.expander(f"About this model: {plain_markdown(choice.label)}", expanded=expanded):
        rows = models.model_details(choice)
        st.dataframe(rows, hide_index=True, width="stretch")


def no_model_notice() -> None:
    """An info box when no trained model is installed (the classical baseline is used), with a link
    to the Train page."""
    if installed_dermoscopy_model():
        return
    st.info(f"No trained model is installed (models/{DERMOSCOPY_MODEL} is absent), so the app uses the "
            f"**{BASELINE_NAME}** (thresholding, no network). Train a network on your data on the Train page.")
    st.page_link(PAGE_FILES["train"], label="Train a model", icon=PAGE_ICONS["train"])


def remember_dataset(images: str | Path, masks: str | Path, source: str) -> None:
    """Remember the dataset chosen on the Prepare page (its two folders, and ``source``: how it was given) for
    the session's other pages (:func:`prepared_dataset_text`)."""
    st.session_state[DATASET_KEY] = {"images": str(images), "masks": str(masks), "source": source}


def prepared_dataset_text(source: str | None = None) -> str:
    """The dataset chosen on the Prepare page as a dataset text box starts with it
    (:func:`moleseg.engine.session.dataset_text`); ``""`` when none was chosen, or, with ``source``, when it was
    given another way."""
    prepared = st.session_state.get(DATASET_KEY)
    if not prepared or source is not None and prepared.get("source") != source:
        return ""
    return dataset_text(prepared["images"], prepared["masks"])


def init_state(key: str, value: Any) -> None:
    """Give a widget's session-state key a starting value, once."""
    if key not in st.session_state:
        st.session_state[key] = value


def sentence(note: str) -> str:
    """A note of the exports (a lower-case clause, as :attr:`moleseg.engine.pipeline.Analysis.notes` joins
    them) written as a sentence for a page: capital first letter, full stop at the end."""
    text = note.strip()
    if not text:
        return text
    return capitalised(text) + ("" if text.endswith((".", "!", "?")) else ".")



#: The browser side of :func:`available_width`: it reports the width of the element it is mounted in, in
#: steps of 10 CSS px, whenever that changes (a turned phone, a sidebar opened or closed). It also hides the
#: own toolbar (undo, redo, clear) of every drawing canvas in the same container, so the page's one set of
#: controls (add, remove, undo, reset) is the only one.
_WIDTH_PROBE_JS = """
export default function(component) {
    const { setStateValue, parentElement } = component;
    let last = null;
    const hideCanvasToolbars = () => {
        const box = parentElement.closest('[data-testid="stVerticalBlock"]') || document;
        box.querySelectorAll('*').forEach((element) => {
            const root = element.shadowRoot;  // styled before the canvas fills it: the rule waits for it
            if (root && !root.querySelector('style[data-moleseg]')) {
                const style = document.createElement('style');
                style.setAttribute('data-moleseg', '');
                style.textContent = '.dc-toolbar { display: none !important; }';
                root.appendChild(style);
            }
        });
    };
    const report = () => {
        const width = Math.floor(parentElement.getBoundingClientRect().width / 10) * 10;
        if (width > 0 && width !== last) {
            last = width;
            setStateValue('width', width);
        }
        hideCanvasToolbars();
    };
    const observer = new ResizeObserver(report);
    observer.observe(parentElement);
    const mutations = new MutationObserver(hideCanvasToolbars);
    mutations.observe(parentElement.closest('[data-testid="stVerticalBlock"]') || document.body,
                      { childList: true, subtree: true });
    report();
    const retries = [500, 2000].map((delay) => setTimeout(hideCanvasToolbars, delay));  // a late canvas
    return () => { observer.disconnect(); mutations.disconnect(); retries.forEach(clearTimeout); };
}
"""
_width_probe = st.components.v2.component("moleseg.width_probe", html="<div></div>", js=_WIDTH_PROBE_JS,
                                          isolate_styles=False)


def available_width(key: str) -> int | None:
    """The width, in CSS px (steps of 10), of the container this is called in, as the browser measured it; None
    on the first run, before the browser has said. A change of width reruns the script (or the fragment)."""
    result = _width_probe(key=key, on_width_change=lambda: None, width="stretch", height="content")
    width = result.get("width") if result is not None else None
    number = isinstance(width, (int, float)) and not isinstance(width, bool) and math.isfinite(width)
    return int(width) if number and width > 0 else None  # the browser's word: JSON's 1e400 reads as infinity
