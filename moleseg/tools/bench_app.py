"""``moleseg bench --app`` (``make bench-app``): the app timed as a browser user sees it. A real ``moleseg
serve`` on a free local port with a temporary data folder, driven by the system Chromium through Playwright
(never a downloaded browser), one new browser session per measurement so that no analysis is cached for it.

What is measured (seconds, the median of ``repeats`` runs; each run's figures are kept too):

* ``cold_first_overlay_s``: a freshly started server (its health check answered, the Analyse page opened at
  once): upload of one image until its overlay is visible. One server start per repeat.
* ``cells_first_overlay_s``: a freshly started server, the Analyse page opened at once: the cells model chosen
  (the first in the model box whose name says cells: the shipped one when installed, else the classical
  baseline for cells, named in ``cells_model``) and one microscopy image (:data:`DEFAULT_CELL_IMAGES`' first,
  else the first image) uploaded, from the choice until its overlay is visible. One server start per repeat.
* ``warm_next_overlay_s``: the same server, an image it has not seen, in a new session: upload until visible.
* ``slider_overlay_s``: on that image, with "Set the cleanup by hand" on, three presses of the arrow key on
  the cleanup slider that shapes its border ("Closing radius (px)" for the article rule, "Border width (px)"
  for the others; a :mod:`moleseg.app.settled_slider`, which sends the value once the presses settle) until
  the cleanup caption names the new value and the overlay shown is a new picture, fully loaded; down three
  steps, then up, then down, ... ``slider_first_overlay_s`` is the first of these
  measurements alone: the only one whose values the page has not shown before (the next ones go back and
  forth over values the server's analysis cache keeps, :data:`moleseg.app.analysis.EARLIER_VARIANTS_KEPT`),
  so it is what a user feels on each new value.
* ``opacity_overlay_s``: on that image, three arrow presses on the "Lesion opacity" slider (down, then up, ...)
  until the overlay shown is a new picture, fully loaded.
* ``colour_overlay_s``: on that image, a new lesion colour typed into its colour picker, closed with Escape (when
  Streamlit sends it), until the overlay shown is a new picture, fully loaded.
* ``pixel_size_values_s``: on that image, a pixel size typed into the sidebar's box and Enter pressed until the
  measurements table is drawn again with other values, its area in mm² (one of
  :data:`moleseg.tools.bench_controls.TYPED_PIXEL_SIZES_MM`). These controls are timed by
  :mod:`moleseg.tools.bench_controls`.
* ``batch12_s``: ``batch`` new images dropped at once until every one's grid thumbnail is visible;
  ``engine_batch12_s``: the same files through the engine's batch entry
  :func:`moleseg.engine.batches.analyse_batches` in this process (decoded from their bytes, as the Analyse page
  does), model loaded and warmed up, the server stopped (the engine's own time for them).
* ``home_s``: a new session opening the home page until its "Pages" heading and links are drawn.

``python -m moleseg.tools.bench_app --slider N [--timeline]`` measures the slider alone, ``N`` times on one
server (:func:`run_slider_bench`), and ``--batch N`` the batch of 12 alone, ``N`` new batches on one server, then
the engine on the last one (:func:`run_batch_bench`). With ``--timeline`` each prints where each measurement's
time went, read in the browser (:class:`moleseg.tools.bench_browser.SliderTimeline`): the key presses, the files
uploaded, each rerun request the page sends (a websocket message), the bursts of the server's answers (a run), the
pictures the page fetches, when the overlay or the thumbnails were visible, and the CPU time the server and the
browser used.
``--home N`` loads the home page ``N`` times on one server (:func:`run_home_bench`); with ``--timeline`` each load's
milestones on the page's clock (:func:`home_timeline_line`).

"Visible" is read in the page: the picture whose caption starts with the file's name (an ``st.image``, or one
of an ``st.image`` list such as the batch grid) has its ``<img>`` complete with a natural width above 0 (a picture
decoded by the browser), polled every animation frame.
The load average and the other processes' share of the CPU are recorded beside the figures: on a busy
machine they are not the app's own speed. TensorFlow is not imported here at import time; the server, browser
and CPU helpers are :mod:`moleseg.tools.bench_browser`'s, which the browser tests share.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from moleseg.core.words import count_of
from moleseg.tools import SHARED_DATA_DIR
from moleseg.tools.bench_browser import (CHROMIUM_ARGS, CHROMIUM_PATH, SliderTimeline, after_closing, closed_counting,
                                        served_app, tree_cpu_s)
from moleseg.tools.bench_controls import (choose_model, colour_seconds, opacity_seconds, pixel_size_seconds,
                                         seconds_until, slider_seconds, wait_until_idle)

#: The real PH2-size images the benchmark uploads when no ``--images`` folder is given (synthetic ones stand
#: in when the shared data is absent).
DEFAULT_IMAGES: Path = SHARED_DATA_DIR / "moles" / "ph2" / "images"
#: The microscopy images ``cells_first_overlay_s`` takes its image from (the benchmark's other images stand in when
#: the shared data is absent).
DEFAULT_CELL_IMAGES: Path = SHARED_DATA_DIR / "cells" / "seed" / "images"
#: A control's target (docs/performance.md, issue 28): a cleanup or opacity slider's three presses to the new
#: overlay, a typed pixel size to the new values, in seconds.
SLIDER_TARGET_S: float = 0.3
#: The app's targets (docs/performance.md): key -> limit in seconds; ``batch12_s`` is compared with
#: ``BATCH_TARGET_FACTOR`` x the engine's time plus ``BATCH_TARGET_EXTRA_S``.
APP_TARGETS: dict[str, float] = {"cold_first_overlay_s": 5.0, "cells_first_overlay_s": 5.0,
                                 "warm_next_overlay_s": 1.0,
                                 "slider_overlay_s": SLIDER_TARGET_S, "slider_first_overlay_s": SLIDER_TARGET_S,
                                 "opacity_overlay_s": SLIDER_TARGET_S, "colour_overlay_s": SLIDER_TARGET_S,
                                 "pixel_size_values_s": SLIDER_TARGET_S,
                                 "home_s": 1.5}
#: What the browser times, in the order the report lists it (each a list of runs in the JSON's ``runs``).
MEASURED: tuple[str, ...] = ("cold_first_overlay_s", "cells_first_overlay_s", "warm_next_overlay_s",
                             "slider_overlay_s", "slider_first_overlay_s", "opacity_overlay_s",
                             "colour_overlay_s", "pixel_size_values_s", "batch12_s", "home_s", "server_start_s")
BATCH_TARGET_FACTOR: float = 1.5
BATCH_TARGET_EXTRA_S: float = 1.0

#: A picture of an ``st.image`` (one of its list) whose caption starts with ``name + ":"`` and which is decoded.
_SHOWN_JS = """
(names) => {
  const shown = new Set();
  for (const element of document.querySelectorAll('[data-testid=stImageContainer]')) {
    const img = element.querySelector('img');
    if (!img || !img.complete || img.naturalWidth === 0) continue;
    const caption = element.querySelector('[data-testid=stImageCaption]')?.innerText || '';
    // a flagged image's caption starts "TO CHECK (reasons): " (moleseg.app.results), then the name
    for (const name of names) if (caption.startsWith(name + ':') || caption.includes('): ' + name + ':')) shown.add(name);
  }
  return names.every(name => shown.has(name));
}
"""


@dataclass(frozen=True)
class AppBenchSettings:
    """How much the app benchmark does."""

    repeats: int = 3
    batch: int = 12
    timeout_s: float = 180.0
    quick: bool = False
    cold: bool = True  # False: no ``cold_first_overlay_s`` (one server start instead of ``repeats + 1``)

    @classmethod
    def quick_settings(cls) -> "AppBenchSettings":
        """One repeat and a batch of 2: checks that it runs, figures not representative."""
        return cls(repeats=1, batch=2, quick=True)

    @property
    def images_needed(self) -> int:
        """Distinct files: one per warm repeat (the cold ones reuse the first), a new batch per repeat and one
        that warms the server."""
        return self.repeats * (1 + self.batch) + 1


def _open_analyse(browser: Any, url: str, timeout_ms: float, watch: Callable[[Any], Any] | None = None) -> Any:
    """A new page on the Analyse page, its uploader there; ``watch(page)`` is called before it loads."""
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    if watch is not None:
        watch(page)
    page.goto(f"{url}/analyse", timeout=timeout_ms)
    page.locator("[data-testid=stFileUploaderDropzoneInput]").first.wait_for(state="attached", timeout=timeout_ms)
    return page


def _upload_seconds(page: Any, files: Sequence[Path], timeout_ms: float) -> float:
    """Seconds from dropping ``files`` on the Analyse page's uploader until each one's picture is visible."""
    names = [path.name for path in files]
    return seconds_until(
        lambda: page.locator("[data-testid=stFileUploaderDropzoneInput]").first.set_input_files(
            [str(path) for path in files]),
        lambda: page.wait_for_function(_SHOWN_JS, arg=names, polling="raf", timeout=timeout_ms))


#: Before a page loads: the times (ms on the page's clock) its websocket opens and each server message arrives.
_HOME_WATCH_JS = """
window.__molesegHome = {messages: []};
const NativeWebSocket = window.WebSocket;
window.WebSocket = class extends NativeWebSocket {
  constructor(...args) {
    super(...args);
    window.__molesegHome.open = performance.now();
    this.addEventListener('message', () => window.__molesegHome.messages.push(performance.now()));
  }
};
"""
#: Once the home page is drawn: its milestones in ms on the page's clock (:func:`home_timeline_line`).
_HOME_MARKS_JS = """
() => {
  const page = performance.getEntriesByType('navigation')[0];
  const files = performance.getEntriesByType('resource').filter(entry => entry.name.includes('/static/'));
  const seen = window.__molesegHome || {messages: []};
  return {html: page.responseEnd, loaded: page.domContentLoadedEventEnd, files: files.length,
          bytes: files.reduce((sum, entry) => sum + entry.encodedBodySize, 0),
          files_done: Math.max(0, ...files.map(entry => entry.responseEnd)), websocket: seen.open ?? -1,
          first_message: seen.messages[0] ?? -1, last_message: seen.messages.at(-1) ?? -1,
          messages: seen.messages.length};
}
"""


def _cells_seconds(page: Any, image: Path, timeout_ms: float) -> tuple[float, str]:
    """Seconds from choosing the cells model on a new Analyse page (:func:`moleseg.tools.bench_controls.choose_model`)
    until ``image``, uploaded once the page has run with it, shows its overlay; and the model's label."""
    start = time.perf_counter()
    label = choose_model(page, "cells", timeout_ms)
    wait_until_idle(page, timeout_ms)
    _upload_seconds(page, [image], timeout_ms)
    return time.perf_counter() - start, label


def _home_seconds(browser: Any, url: str, timeout_ms: float, marks: list[dict[str, float]] | None = None) -> float:
    """Seconds from opening the home page in a new browser context until its page links are drawn; with
    ``marks``, the page's milestones (``_HOME_MARKS_JS``) are appended to it."""
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    try:
        if marks is not None:
            page.add_init_script(_HOME_WATCH_JS)
        seconds = seconds_until(lambda: page.goto(url, timeout=timeout_ms),
                           lambda: page.locator("a:has-text('Evaluate: score models')").wait_for(
                               state="visible", timeout=timeout_ms))
        if marks is not None:
            marks.append(page.evaluate(_HOME_MARKS_JS))
        return seconds
    finally:
        page.close()


def home_timeline_line(seconds: float, marks: dict[str, float], cpu: dict[str, float]) -> str:
    """One home load as a line: its ``seconds`` until the page links are drawn, then the page's milestones from
    ``marks`` (ms on its clock: the HTML received, Streamlit's static files received with their count and
    bytes, DOMContentLoaded, the websocket opened, the server's first and last message and their count) and the
    CPU seconds ``cpu`` gives per process group."""
    used = "".join(f", {name} CPU {value:.2f} s" for name, value in cpu.items())
    return (f"{seconds:.3f} s: HTML {marks['html']:.0f} ms, {marks['files']:.0f} static files "
            f"({marks['bytes'] / 1e6:.1f} MB) by {marks['files_done']:.0f} ms, DOMContentLoaded "
            f"{marks['loaded']:.0f} ms, websocket {marks['websocket']:.0f} ms, {marks['messages']:.0f} messages "
            f"{marks['first_message']:.0f}-{marks['last_message']:.0f} ms{used}")


def engine_seconds(model: str, files: Sequence[Path]) -> float:
    """Seconds the engine's batch entry :func:`moleseg.engine.batches.analyse_batches` takes for ``files`` (their
    bytes in memory, as uploads are; decoding included) with the segmenter of ``model``, loaded and warmed up on
    the first file first."""
    import functools

    from moleseg.core.imageio import read_image
    from moleseg.engine.batches import analyse_batches
    from moleseg.network.loading import load_segmenter

    segmenter = load_segmenter(model)
    readers = [functools.partial(read_image, path.read_bytes(), name=path.name) for path in files]
    list(analyse_batches(segmenter, readers[:1]))
    start = time.perf_counter()
    for batch in analyse_batches(segmenter, readers):
        for outcome in batch:
            if isinstance(outcome, Exception):
                raise outcome
    return time.perf_counter() - start


def bench_files(folder: Path | None, count: int, scratch: Path) -> tuple[list[Path], str]:
    """``count`` distinct image files from ``folder`` (default :data:`DEFAULT_IMAGES` when it exists, else
    synthetic PH2-size JPEGs written into ``scratch``), and a description of them."""
    from moleseg.tools.bench_pipeline import image_files

    if folder is None and DEFAULT_IMAGES.is_dir():
        folder = DEFAULT_IMAGES
    files, described = image_files(folder, count, scratch)
    if len(files) < count:
        raise ValueError(f"{folder}: {count_of(len(files), 'image')}, the app benchmark needs {count}")
    return files, described


def _median(values: Sequence[float]) -> float:
    return round(statistics.median(values), 3)


def run_app_bench(model: str, images: Path | None, settings: AppBenchSettings,
                  echo: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
    """Every figure of the app benchmark (see the module doc) as one JSON-ready dict: ``{"app": {...}}`` with
    the machine's conditions before and after, the load average and the targets' verdicts. ``model``: the
    server's default model (what its Analyse page uses), timed alone for ``engine_batch12_s``."""
    from playwright.sync_api import sync_playwright

    from moleseg.tools.bench_machine import conditions, others_cpu_share

    timeout_ms = settings.timeout_s * 1000
    started = time.perf_counter()

    def say(line: str) -> None:
        echo(f"{time.perf_counter() - started:6.1f} s  {line}")

    result: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M"), "before": conditions()}
    runs: dict[str, list[float]] = {key: [] for key in MEASURED}
    with tempfile.TemporaryDirectory(prefix="moleseg-bench-app-") as folder, sync_playwright() as driver:
        scratch = Path(folder)
        files, described = bench_files(images, settings.images_needed, scratch / "images")
        warm_files, batch_files = files[:settings.repeats], files[settings.repeats:-1]
        cell_image = min(DEFAULT_CELL_IMAGES.iterdir()) if DEFAULT_CELL_IMAGES.is_dir() else files[0]
        cells_model = ""
        log_path = scratch / "server.log"
        browser = driver.chromium.launch(executable_path=CHROMIUM_PATH, args=CHROMIUM_ARGS)
        try:
            for repeat in range(settings.repeats if settings.cold else 0):
                say(f"cold start {repeat + 1}/{settings.repeats} ...")
                with served_app(scratch / f"cold-{repeat}", log_path) as (url, started_s, _):
                    runs["server_start_s"].append(round(started_s, 3))
                    page = _open_analyse(browser, url, timeout_ms)
                    runs["cold_first_overlay_s"].append(_upload_seconds(page, files[:1], timeout_ms))
                    page.close()
                say(f"cells model, cold start {repeat + 1}/{settings.repeats} ...")
                with served_app(scratch / f"cells-{repeat}", log_path) as (url, _, _):
                    page = _open_analyse(browser, url, timeout_ms)
                    seconds, cells_model = _cells_seconds(page, cell_image, timeout_ms)
                    runs["cells_first_overlay_s"].append(seconds)
                    page.close()
            say("warm server ...")
            with served_app(scratch / "warm", log_path) as (url, _, _):
                page = _open_analyse(browser, url, timeout_ms)
                _upload_seconds(page, [files[-1]], timeout_ms)  # loads the model (that file is not timed again)
                page.close()
                say("next images, the slider, the opacity, the colour and the pixel size ...")
                for path in warm_files:
                    page = _open_analyse(browser, url, timeout_ms)
                    runs["warm_next_overlay_s"].append(_upload_seconds(page, [path], timeout_ms))
                    if path is warm_files[-1]:
                        runs["slider_overlay_s"] = slider_seconds(page, settings.repeats, timeout_ms)
                        runs["slider_first_overlay_s"] = runs["slider_overlay_s"][:1]
                        runs["opacity_overlay_s"] = opacity_seconds(page, settings.repeats, timeout_ms)
                        runs["colour_overlay_s"] = colour_seconds(page, settings.repeats, timeout_ms)
                        runs["pixel_size_values_s"] = pixel_size_seconds(page, settings.repeats, timeout_ms)
                    page.close()
                for repeat in range(settings.repeats):
                    say(f"batch of {settings.batch} ({repeat + 1}/{settings.repeats}) ...")
                    page = _open_analyse(browser, url, timeout_ms)
                    batch = batch_files[repeat * settings.batch:(repeat + 1) * settings.batch]
                    runs["batch12_s"].append(_upload_seconds(page, batch, timeout_ms))
                    page.close()
                say("home page ...")
                for _ in range(settings.repeats):
                    runs["home_s"].append(_home_seconds(browser, url, timeout_ms))
        finally:
            at_close = closed_counting(browser)
        say("the engine alone on the batch ...")
        engine_s = engine_seconds(model, batch_files[:settings.batch])
    result["after"] = after_closing(at_close)
    app: dict[str, Any] = {key: _median(values) for key, values in runs.items() if values}
    app["engine_batch12_s"] = round(engine_s, 3)
    if cells_model:
        app["cells_model"], app["cells_image"] = cells_model, cell_image.name
    app["batch_images"] = settings.batch
    app["model"] = model
    app["runs"] = {key: [round(v, 3) for v in values] for key, values in runs.items()}
    app["images"] = described
    app["settings"] = asdict(settings)
    app["visible"] = ("the picture whose caption starts with the file's name has its <img> complete with a "
                      "natural width > 0, polled every animation frame; slider: the cleanup caption names the "
                      "new value and the overlay's <img> has a new source, loaded; opacity and colour: the "
                      "overlay's <img> has a new source, loaded; pixel size: the measurements table's text "
                      "changed and names mm²")
    result["app"] = app
    result["load_average"] = result["after"]["load_average"]
    result["others_cpu_share"] = others_cpu_share(result)
    result["targets"] = app_target_verdicts(result)
    return result


def run_slider_bench(images: Path | None, repeats: int, timeline: bool = False, timeout_s: float = 180.0,
                     echo: Callable[[str], None] = print) -> dict[str, Any]:
    """``slider_overlay_s`` and ``slider_first_overlay_s`` alone, ``repeats`` times on one server (warmed on
    another image first), with the machine's conditions before and after; ``timeline``: each measurement's
    events to ``echo`` (:class:`moleseg.tools.bench_browser.SliderTimeline`)."""
    from playwright.sync_api import sync_playwright

    from moleseg.tools.bench_machine import conditions, others_cpu_share

    timeout_ms = timeout_s * 1000
    result: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M"), "before": conditions()}
    with tempfile.TemporaryDirectory(prefix="moleseg-bench-app-") as folder, sync_playwright() as driver:
        scratch = Path(folder)
        files, described = bench_files(images, 2, scratch / "images")
        browser = driver.chromium.launch(executable_path=CHROMIUM_PATH, args=CHROMIUM_ARGS)
        try:
            with served_app(scratch / "warm", scratch / "server.log") as (url, _, server):
                page = _open_analyse(browser, url, timeout_ms)
                _upload_seconds(page, files[1:], timeout_ms)  # loads the model
                page.close()
                watches: list[SliderTimeline] = []

                def cpu() -> dict[str, float]:
                    return {"server": tree_cpu_s(server), "browser": tree_cpu_s(os.getpid(), "chrom")}

                page = _open_analyse(browser, url, timeout_ms,
                                     (lambda opened: watches.append(SliderTimeline(opened, cpu))) if timeline
                                     else None)
                _upload_seconds(page, files[:1], timeout_ms)
                runs = slider_seconds(page, repeats, timeout_ms, watches[0] if watches else None, echo)
        finally:
            at_close = closed_counting(browser)
    result["after"] = after_closing(at_close)
    result["app"] = {"slider_overlay_s": _median(runs), "slider_first_overlay_s": round(runs[0], 3),
                     "runs": {"slider_overlay_s": [round(v, 3) for v in runs]}, "images": described}
    result["load_average"] = result["after"]["load_average"]
    result["others_cpu_share"] = others_cpu_share(result)
    return result


def run_batch_bench(model: str, images: Path | None, repeats: int, batch: int = AppBenchSettings.batch,
                    timeline: bool = False, timeout_s: float = 180.0,
                    echo: Callable[[str], None] = print) -> dict[str, Any]:
    """``batch12_s`` alone, ``repeats`` times on one server (warmed on another image first, each repeat a new
    session and ``batch`` new files), then ``engine_batch12_s`` on the last repeat's files with ``model`` (the
    server's default model), with the machine's conditions before and after; ``timeline``: each measurement's
    events to ``echo`` (:class:`moleseg.tools.bench_browser.SliderTimeline`)."""
    from playwright.sync_api import sync_playwright

    from moleseg.tools.bench_machine import conditions, others_cpu_share

    timeout_ms = timeout_s * 1000
    result: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M"), "before": conditions()}
    runs: list[float] = []
    with tempfile.TemporaryDirectory(prefix="moleseg-bench-app-") as folder, sync_playwright() as driver:
        scratch = Path(folder)
        files, described = bench_files(images, repeats * batch + 1, scratch / "images")
        browser = driver.chromium.launch(executable_path=CHROMIUM_PATH, args=CHROMIUM_ARGS)
        try:
            with served_app(scratch / "warm", scratch / "server.log") as (url, _, server):
                page = _open_analyse(browser, url, timeout_ms)
                _upload_seconds(page, files[-1:], timeout_ms)  # loads the model
                page.close()

                def cpu() -> dict[str, float]:
                    return {"server": tree_cpu_s(server), "browser": tree_cpu_s(os.getpid(), "chrom")}

                for repeat in range(repeats):
                    watches: list[SliderTimeline] = []
                    page = _open_analyse(browser, url, timeout_ms,
                                         (lambda opened: watches.append(SliderTimeline(opened, cpu))) if timeline
                                         else None)
                    if watches:
                        watches[0].start()
                    runs.append(_upload_seconds(page, files[repeat * batch:(repeat + 1) * batch], timeout_ms))
                    if watches:
                        watches[0].add("thumbnails visible")
                        echo(f"batch {repeat + 1}/{repeats}: {runs[-1]:.3f} s")
                        for line in watches[0].lines():
                            echo(line)
                        echo(f"  {watches[0].totals()}")
                    page.close()
        finally:
            at_close = closed_counting(browser)
        engine_s = engine_seconds(model, files[(repeats - 1) * batch:repeats * batch])
    result["after"] = after_closing(at_close)
    result["app"] = {"batch12_s": _median(runs), "engine_batch12_s": round(engine_s, 3), "batch_images": batch,
                     "model": model, "runs": {"batch12_s": [round(v, 3) for v in runs]}, "images": described}
    result["load_average"] = result["after"]["load_average"]
    result["others_cpu_share"] = others_cpu_share(result)
    return result


def run_home_bench(repeats: int, timeline: bool = False, timeout_s: float = 180.0,
                   echo: Callable[[str], None] = print) -> dict[str, Any]:
    """``home_s`` alone, ``repeats`` times on one server (its first home load, which runs the server's first
    script, not timed), with the machine's conditions before and after; ``timeline``: each load's milestones to
    ``echo`` (:func:`home_timeline_line`)."""
    from playwright.sync_api import sync_playwright

    from moleseg.tools.bench_machine import conditions, others_cpu_share

    timeout_ms = timeout_s * 1000
    result: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M"), "before": conditions()}
    runs: list[float] = []
    with tempfile.TemporaryDirectory(prefix="moleseg-bench-app-") as folder, sync_playwright() as driver:
        scratch = Path(folder)
        browser = driver.chromium.launch(executable_path=CHROMIUM_PATH, args=CHROMIUM_ARGS)
        try:
            with served_app(scratch / "warm", scratch / "server.log") as (url, _, server):
                _home_seconds(browser, url, timeout_ms)
                for repeat in range(repeats):
                    marks: list[dict[str, float]] = []
                    before = {"server": tree_cpu_s(server), "browser": tree_cpu_s(os.getpid(), "chrom")}
                    runs.append(_home_seconds(browser, url, timeout_ms, marks if timeline else None))
                    if timeline:
                        cpu = {"server": tree_cpu_s(server) - before["server"],
                               "browser": tree_cpu_s(os.getpid(), "chrom") - before["browser"]}
                        echo(f"home {repeat + 1}/{repeats}: {home_timeline_line(runs[-1], marks[0], cpu)}")
        finally:
            at_close = closed_counting(browser)
    result["after"] = after_closing(at_close)
    result["app"] = {"home_s": _median(runs), "runs": {"home_s": [round(v, 3) for v in runs]}}
    result["load_average"] = result["after"]["load_average"]
    result["others_cpu_share"] = others_cpu_share(result)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m moleseg.tools.bench_app (--slider N | --batch N | --home N) [--timeline] [--images DIR]
    [--json FILE]``."""
    from moleseg.core.config import default_model_spec

    parser = argparse.ArgumentParser(prog="python -m moleseg.tools.bench_app", description=main.__doc__)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--slider", type=int, metavar="N", help="slider measurements on one server")
    which.add_argument("--batch", type=int, metavar="N",
                       help=f"batches of {AppBenchSettings.batch} on one server, then the engine on the last one")
    which.add_argument("--home", type=int, metavar="N", help="home page loads on one server")
    parser.add_argument("--timeline", action="store_true", help="print where each measurement's time went")
    parser.add_argument("--images", type=Path, help="a folder of images (default: the PH2 images of the shared "
                                                     "data, else synthetic ones)")
    parser.add_argument("--json", type=Path, help="write the result here as JSON")
    args = parser.parse_args(argv)
    if args.batch:
        result = run_batch_bench(default_model_spec(), args.images, max(1, args.batch), timeline=args.timeline)
        key = "batch12_s"
    elif args.home:
        result = run_home_bench(max(1, args.home), args.timeline)
        key = "home_s"
    else:
        result = run_slider_bench(args.images, max(1, args.slider), args.timeline)
        key = "slider_overlay_s"
    app = result["app"]
    engine = (f" (engine {app['engine_batch12_s']:.3f} s: target "
              f"{BATCH_TARGET_FACTOR * app['engine_batch12_s'] + BATCH_TARGET_EXTRA_S:.3f} s)"
              if "engine_batch12_s" in app else "")
    first = f", the first {app['slider_first_overlay_s']:.3f} s" if "slider_first_overlay_s" in app else ""
    print(f"{key} median {app[key]:.3f} s of {', '.join(f'{v:.2f}' for v in app['runs'][key])}{first}{engine}; "
          f"load average {result['before']['load_average']} before, {result['load_average']} after; other "
          f"processes' share of the CPU {result['others_cpu_share']}")
    if args.json:
        from moleseg.core.atomic import atomic_write

        atomic_write(args.json, (json.dumps(result, indent=1) + "\n").encode())
    return 0


def app_target_verdicts(result: dict[str, Any]) -> dict[str, str]:
    """``{key: "met" | "missed" | NOT_MEASURED | QUICK_RUN | NOT_IDLE}`` (:func:`moleseg.tools.bench.verdict`)
    for :data:`APP_TARGETS` and the batch's target."""
    from moleseg.tools.bench import verdict
    from moleseg.tools.bench_machine import busy

    app = result["app"]
    limits = dict(APP_TARGETS)
    limits["batch12_s"] = BATCH_TARGET_FACTOR * app["engine_batch12_s"] + BATCH_TARGET_EXTRA_S
    quick, busy_machine = app["settings"]["quick"], busy(result)
    return {key: verdict(app.get(key), "<=", limit, quick=quick, busy_machine=busy_machine)
            for key, limit in limits.items()}


def format_app_report(result: dict[str, Any]) -> str:
    """The table ``moleseg bench --app`` prints."""
    app = result["app"]
    lines = [f"{'measure':<24} {'median s':>9}  runs (s)  verdict"]
    for key in (name for measured in MEASURED
                for name in ((measured, "engine_batch12_s") if measured == "batch12_s" else (measured,))):
        if key in app:
            runs = ", ".join(f"{v:.2f}" for v in app["runs"].get(key, [app[key]]))
            lines.append(f"{key:<24} {app[key]:>9.3f}  {runs}  {result['targets'].get(key, '')}")
    lines.append(f"load average {result['before']['load_average']} before, {result['load_average']} after; "
                 f"images: {app['images']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
