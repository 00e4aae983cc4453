"""The Analyse page's controls timed in a real browser for ``moleseg bench --app`` (:mod:`moleseg.tools.bench_app`)
and the browser tests: a cleanup slider, an overlay opacity, a lesion colour and a typed pixel size, each until
what it changes is shown again (the overlay a new picture, fully loaded; the measurements table with the new
millimetre values).
Every function takes a Playwright page already showing an analysed image."""

from __future__ import annotations

import time
from typing import Any, Callable

from moleseg.tools.bench_browser import SliderTimeline

#: Arrow-key presses on a slider per measurement.
SLIDER_PRESSES: int = 3
#: Pixel sizes (mm per px) :func:`pixel_size_seconds` types: the first one the box does not show, so that every
#: measurement shows new millimetre values.
TYPED_PIXEL_SIZES_MM: tuple[float, float] = (0.0125, 0.02)

#: Lesion colours (hex) :func:`colour_seconds` chooses from: the first one the picker does not show.
CHOSEN_COLOURS: tuple[str, str] = ("#00C8FF", "#FF00C8")

#: The overlay (first ``st.image``) after a slider change: the cleanup caption names the new value, a new
#: picture loaded.
_SLIDER_DONE_JS = """
([words, oldSource]) => {
  const caption = [...document.querySelectorAll('[data-testid=stCaptionContainer]')]
    .some(element => (element.innerText || '').includes(words));
  const img = document.querySelector('[data-testid=stImage] img');
  return caption && img && img.src !== oldSource && img.complete && img.naturalWidth > 0;
}
"""
#: The overlay (first ``st.image``) is a picture other than ``oldSource``, fully loaded.
_NEW_PICTURE_JS = """
(oldSource) => {
  const img = document.querySelector('[data-testid=stImage] img');
  return img && img.src !== oldSource && img.complete && img.naturalWidth > 0;
}
"""
#: The text of the measurements table (:func:`moleseg.app.results.measurement_html`), '' when none is drawn.
_TABLE_TEXT_JS = "() => document.querySelector('table.moleseg-measurements')?.innerText || ''"
#: The measurements table is drawn again with other values than ``old`` (its text before), areas in mm².
_TABLE_CHANGED_JS = """
([old]) => {
  const text = document.querySelector('table.moleseg-measurements')?.innerText || '';
  return text !== old && text.includes('mm²');
}
"""


def seconds_until(action: Callable[[], None], wait: Callable[[], None]) -> float:
    """Seconds from the start of ``action`` until ``wait`` returns."""
    start = time.perf_counter()
    action()
    wait()
    return time.perf_counter() - start


def wait_until_idle(page: Any, timeout_ms: float) -> None:
    """Wait until the page's script is not running (Streamlit's running indicator gone)."""
    page.wait_for_function("() => !document.querySelector('[data-testid=stStatusWidget]')", timeout=timeout_ms)


def switch_on(page: Any, label: str, timeout_ms: float, attempts: int = 3) -> None:
    """Turn on the sidebar's ``st.toggle`` named ``label``: click its label until the switch is on (a click
    that lands while the page is being redrawn can be lost)."""
    switch = f"[data-testid=stSidebar] input[role=switch][aria-label={label!r}]"
    for _ in range(attempts):
        if page.locator(switch).is_checked():
            return
        page.locator("[data-testid=stSidebar]").get_by_text(label).click()
        try:
            page.wait_for_function("s => document.querySelector(s)?.checked", arg=switch,
                                   timeout=min(timeout_ms, 10_000))
            return
        except Exception:  # playwright's TimeoutError: click again
            continue
    raise RuntimeError(f"the switch {label!r} did not turn on after {attempts} clicks")


def sidebar_slider(page: Any, label: str) -> Any:
    """The sidebar's settled slider (:mod:`moleseg.app.settled_slider`) named ``label``: its native range input
    (Playwright's locators enter its shadow root)."""
    return page.locator("[data-testid=stSidebar]").get_by_role("slider", name=label).first


def border_slider(page: Any) -> tuple[Any, str]:
    """The Analyse page's cleanup slider that shapes the border (the closing radius for the article rule, the
    border width for the others): its native range input and the word the cleanup caption names its value
    with."""
    article = page.locator("[data-testid=stCaptionContainer]:has-text('Cleanup: rule article')").count() > 0
    label, caption = ("Closing radius", "closing") if article else ("Border width", "border")
    return sidebar_slider(page, label), caption


def new_overlay(page: Any, words: str, old_source: str | None, timeout_ms: float) -> None:
    """Wait until a cleanup caption contains ``words`` and the overlay (first ``st.image``) is a picture other
    than ``old_source``, fully loaded."""
    page.wait_for_function(_SLIDER_DONE_JS, arg=[words, old_source], polling="raf", timeout=timeout_ms)


def _overlay_source(page: Any) -> str | None:
    return page.locator("[data-testid=stImage] img").first.get_attribute("src")


def _arrow_key(thumb: Any, index: int, low: float, step: float) -> str:
    """The arrow key of measurement ``index`` on a slider: down on even measurements unless the slider is less
    than :data:`SLIDER_PRESSES` steps of ``step`` above ``low``, up otherwise."""
    down = index % 2 == 0 and float(thumb.input_value()) - SLIDER_PRESSES * step >= low - 1e-9
    return "ArrowLeft" if down else "ArrowRight"


def slider_seconds(page: Any, repeats: int, timeout_ms: float, timeline: SliderTimeline | None = None,
                   echo: Callable[[str], None] = lambda line: None) -> list[float]:
    """Seconds from :data:`SLIDER_PRESSES` arrow presses on the cleanup slider that shapes the border (the
    closing radius for the article rule, the border width for the others) to the new overlay, ``repeats``
    times (down, then up, ...); with a ``timeline``, each measurement's events go to ``echo``."""
    wait_until_idle(page, timeout_ms)
    switch_on(page, "Set the cleanup by hand", timeout_ms)
    thumb, caption = border_slider(page)
    thumb.wait_for(state="attached", timeout=timeout_ms)
    wait_until_idle(page, timeout_ms)
    times = []
    for index in range(repeats):
        value = int(thumb.input_value())
        key, step = ("ArrowRight", 1) if index % 2 or value < SLIDER_PRESSES else ("ArrowLeft", -1)
        target = value + step * SLIDER_PRESSES
        source = _overlay_source(page)
        thumb.focus()

        def press() -> None:
            for _ in range(SLIDER_PRESSES):
                if timeline is not None:
                    timeline.add("press")
                thumb.press(key)

        if timeline is not None:
            timeline.start()
        times.append(seconds_until(press, lambda: new_overlay(page, f"{caption} {target} px", source, timeout_ms)))
        if timeline is not None:
            timeline.add("overlay visible")
            echo(f"slider {index + 1}/{repeats}: {times[-1]:.3f} s, {caption} {value} -> {target} px")
            for line in timeline.lines():
                echo(line)
            echo(f"  {timeline.totals()}")
        wait_until_idle(page, timeout_ms)
    return times


def opacity_seconds(page: Any, repeats: int, timeout_ms: float, label: str = "Lesion opacity") -> list[float]:
    """Seconds from :data:`SLIDER_PRESSES` arrow presses on the overlay's opacity slider ``label`` (0..1 in steps
    of 0.05; down, then up, ...) to the overlay redrawn: a new picture, fully loaded, ``repeats`` times."""
    wait_until_idle(page, timeout_ms)
    thumb = sidebar_slider(page, label)
    thumb.wait_for(state="attached", timeout=timeout_ms)
    step = float(thumb.get_attribute("step") or 0.05)
    low = float(thumb.get_attribute("min") or 0.0)
    times = []
    for index in range(repeats):
        key = _arrow_key(thumb, index, low, step)
        source = _overlay_source(page)
        thumb.focus()

        def press() -> None:
            for _ in range(SLIDER_PRESSES):
                thumb.press(key)

        times.append(seconds_until(press, lambda: _new_picture(page, source, timeout_ms)))
        wait_until_idle(page, timeout_ms)
    return times


def _new_picture(page: Any, old_source: str | None, timeout_ms: float) -> None:
    """Wait until the overlay (first ``st.image``) is a picture other than ``old_source``, fully loaded."""
    page.wait_for_function(_NEW_PICTURE_JS, arg=old_source, polling="raf", timeout=timeout_ms)


def colour_seconds(page: Any, repeats: int, timeout_ms: float, label: str = "Lesion") -> list[float]:
    """Seconds from closing the sidebar's colour picker ``label`` (Escape: Streamlit sends a colour picker's value
    when it closes) with a new colour typed into it (the first of :data:`CHOSEN_COLOURS` it does not show) until
    the overlay is a new picture, fully loaded, ``repeats`` times."""
    wait_until_idle(page, timeout_ms)
    times = []
    for _ in range(repeats):
        source = _overlay_source(page)
        page.get_by_role("button", name=f"{label} color picker").click(timeout=timeout_ms)
        hex_box = page.locator(".chrome-picker input").first
        shown = hex_box.input_value(timeout=timeout_ms).upper()
        hex_box.fill(next(colour for colour in CHOSEN_COLOURS if colour.upper() != shown), timeout=timeout_ms)
        times.append(seconds_until(lambda: page.keyboard.press("Escape"),
                                   lambda: _new_picture(page, source, timeout_ms)))
        wait_until_idle(page, timeout_ms)
    return times


def pixel_size_seconds(page: Any, repeats: int, timeout_ms: float) -> list[float]:
    """Seconds from typing a pixel size (the first of :data:`TYPED_PIXEL_SIZES_MM` it does not show) into the
    sidebar's "Pixel size (mm per px)" box and pressing Enter until the measurements table is drawn again with
    other values, its area in mm², ``repeats`` times."""
    wait_until_idle(page, timeout_ms)
    box = page.locator("[data-testid=stSidebar] input[aria-label='Pixel size (mm per px)']").first
    box.wait_for(state="attached", timeout=timeout_ms)
    times = []
    for _ in range(repeats):
        shown = float(box.input_value(timeout=timeout_ms) or 0)
        size = next(size for size in TYPED_PIXEL_SIZES_MM if abs(size - shown) > 1e-9)
        before = page.evaluate(_TABLE_TEXT_JS)

        def typed() -> None:
            box.fill(f"{size:.4f}")
            box.press("Enter")

        times.append(seconds_until(typed, lambda: page.wait_for_function(
            _TABLE_CHANGED_JS, arg=[before], polling="raf", timeout=timeout_ms)))
        wait_until_idle(page, timeout_ms)
    return times


def choose_model(page: Any, words: str, timeout_ms: float) -> str:
    """Choose, in the page's "Model" select box, the first model whose label contains ``words`` (the shipped
    models come before the classical baselines); return its label."""
    page.get_by_role("combobox", name="Model", exact=True).click(timeout=timeout_ms)
    option = page.get_by_role("option").filter(has_text=words).first
    label = option.inner_text(timeout=timeout_ms).strip()
    option.click(timeout=timeout_ms)
    return label
