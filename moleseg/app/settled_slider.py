"""A slider that sends its value once it settles: a browser's native ``<input type="range">`` (a Streamlit custom
component v2, inline, no iframe) that moves its thumb and shows its number at once on every key press or drag, and
sends the value to the server only after :data:`SETTLE_MS` without another key press, or when a drag is released.
A burst of arrow presses is one value, so one run of what depends on it (Streamlit's own slider sends each press).

Its value lives in ``st.session_state[key]`` as a plain number: the page may set it (the widget then shows it), and
reads it as it would a native widget's. The help text is read out as the input's description and shown under it
while the input has the keyboard's focus or after a tap on the "?"."""

from __future__ import annotations

import math
from collections.abc import Callable

import streamlit as st

#: Milliseconds without a key press after which a keyboard change is sent (a drag is sent on release). Chosen by
#: measuring three arrow presses 25-40 ms apart (``moleseg.tools.bench_app --slider``, docs/performance.md).
SETTLE_MS: int = 75

_HTML = """<div class="settled"><div class="head"><label for="range"></label><span class="help" aria-hidden="true"
>?</span><output for="range"></output></div><input id="range" type="range" aria-describedby="help">
<div id="help" class="note"></div></div>"""

_CSS = """
.settled { font-family: var(--st-font); color: var(--st-text-color); padding-bottom: 0.5rem; }
.head { display: flex; align-items: baseline; gap: 0.4rem; font-size: 0.875rem; line-height: 1.6; }
label { overflow-wrap: anywhere; }
output { margin-left: auto; font-variant-numeric: tabular-nums; color: var(--st-primary-color); font-weight: 600; }
.help { flex: none; cursor: help; font-size: 0.75rem; border: 1px solid var(--st-border-color, currentColor);
        border-radius: 50%; width: 1.1rem; height: 1.1rem; line-height: 1.1rem; text-align: center; opacity: 0.7; }
.help[hidden], .note { display: none; }
.settled.open .note, .settled:has(input:focus-visible) .note { display: block; font-size: 0.8rem; opacity: 0.75; }
input { display: block; width: 100%; margin: 0; height: 1.75rem; accent-color: var(--st-primary-color);
        cursor: pointer; background: transparent; }
input:focus-visible { outline: 2px solid var(--st-primary-color); outline-offset: 2px; }
input:disabled { cursor: not-allowed; opacity: 0.45; }
.settled:has(input:disabled), .settled:has(input:disabled) output { color: var(--st-gray-color, inherit); }
"""

_JS = """
const widgets = new WeakMap();
export default function ({ parentElement, data, setTriggerValue }) {
  const input = parentElement.querySelector("input");
  const shown = parentElement.querySelector("output");
  if (!input || !shown) return;
  let state = widgets.get(parentElement);
  if (!state) {
    state = { timer: null, dragging: false, revision: null, sent: null };
    widgets.set(parentElement, state);
  }
  parentElement.querySelector("label").textContent = data.label;
  const help = parentElement.querySelector(".help");
  help.title = data.help; help.hidden = !data.help;
  help.onclick = () => parentElement.querySelector(".settled").classList.toggle("open");  // a tap shows the help
  parentElement.querySelector("#help").textContent = data.help;
  input.min = data.min; input.max = data.max; input.step = data.step; input.disabled = data.disabled;
  const text = () => Number(input.value).toFixed(data.decimals);
  const show = () => {
    shown.textContent = text();
    input.setAttribute("aria-valuetext", data.unit ? `${text()} ${data.unit}` : text());
  };
  if (state.revision !== data.revision) {  // a value set by the server: shown, a pending one dropped
    clearTimeout(state.timer); state.timer = null;
    state.revision = data.revision; input.value = data.value; state.sent = Number(input.value);
  }
  show();
  const send = () => {
    clearTimeout(state.timer); state.timer = null;
    const value = Number(input.value);
    // with the revision it was moved from: the server drops it when it has set another value since
    if (value !== state.sent) { state.sent = value; setTriggerValue("value", { value, revision: state.revision }); }
  };
  input.oninput = () => {
    show(); clearTimeout(state.timer);
    state.timer = state.dragging ? null : setTimeout(send, data.settle_ms);
  };
  input.onpointerdown = () => { state.dragging = true; };
  input.onpointerup = input.onpointercancel = input.onchange = () => {
    if (state.dragging) { state.dragging = false; send(); }
  };
}
"""

_COMPONENT = st.components.v2.component("moleseg_settled_slider", html=_HTML, css=_CSS, js=_JS)

Number = int | float

#: Session-state key of the last revision number given to a value the page set, in any settled slider.
REVISIONS_KEY = "settled_slider_revisions"


def _decimals(step: Number) -> int:
    """Decimal places of ``step`` (0 for a whole number), at most 6."""
    return 0 if float(step).is_integer() else min(6, len(f"{step:.6f}".rstrip("0").split(".")[1]))


def settled_value(sent: object, low: Number, high: Number, step: Number) -> Number | None:
    """The value a browser sent, made one the slider can take: clipped to ``[low, high]`` and put on the nearest
    step from ``low`` (an ``int`` when ``low`` and ``step`` are, else rounded to the step's decimals); None when it
    is not a finite number (the browser is untrusted)."""
    if isinstance(sent, bool) or not isinstance(sent, (int, float)):
        return None
    if isinstance(sent, float) and not math.isfinite(sent):  # an int is finite, and may exceed a float's range
        return None
    steps = round((min(max(sent, low), high) - low) / step)
    value = min(low + steps * step, high)
    if isinstance(low, int) and isinstance(step, int):
        return int(value)
    return round(float(value), _decimals(step))


def accepted_value(sent: object, revision: int, low: Number, high: Number, step: Number) -> Number | None:
    """The value of a browser's message ``sent`` (``{"value": number, "revision": int}``) put on the slider's steps
    (:func:`settled_value`); None when it is no such message, or when it was moved from another ``revision`` than
    the slider's now (the page set another value since, which the browser had not shown yet)."""
    if not isinstance(sent, dict) or type(sent.get("revision")) is not int or sent["revision"] != revision:
        return None
    return settled_value(sent.get("value"), low, high, step)


def settled_slider(label: str, low: Number, high: Number, *, key: str, step: Number = 1, unit: str = "",
                   default: Number | None = None, help: str | None = None, disabled: bool = False,
                   on_change: Callable[[], None] | None = None) -> Number:
    """A slider from ``low`` to ``high`` in steps of ``step`` whose value is ``st.session_state[key]`` (``default``
    when unset, else ``low``; put on the slider's steps, as the browser shows it); ``unit`` is read out after the
    value by a screen reader (``"px"``). A new value is stored there when it settles, then ``on_change`` is called
    (as a widget's callback: before the run it starts); a disabled slider takes none. Returns the value."""
    value = st.session_state.setdefault(key, low if default is None else default)
    on_steps = settled_value(value, low, high, step)  # what the browser's input can show (a model file's 0.37: 0.35)
    if on_steps is not None and on_steps != value:
        st.session_state[key] = value = on_steps
    # the value set by the page since the widget last showed or sent one: a new revision, which the browser shows;
    # numbered across all the session's sliders, so that a browser that shows one slider's input in place of
    # another's never takes its revision for the same
    seen_key, revision_key = f"{key}_shown", f"{key}_revision"
    if st.session_state.get(seen_key) != value:
        st.session_state[REVISIONS_KEY] = st.session_state[revision_key] = st.session_state.get(REVISIONS_KEY, 0) + 1
        st.session_state[seen_key] = value
    widget_key = f"{key}_settled"

    def settled() -> None:
        sent = accepted_value((st.session_state.get(widget_key) or {}).get("value"), st.session_state[revision_key],
                              low, high, step)
        if sent is None or disabled:  # a disabled slider takes no value, whatever a browser sends
            return
        if st.session_state.get(key) != st.session_state.get(seen_key):  # set by the page since: not shown yet
            return
        st.session_state[key] = st.session_state[seen_key] = sent  # the browser shows it already
        if on_change is not None:
            on_change()

    _COMPONENT(key=widget_key, on_value_change=settled,
               data={"label": label, "min": low, "max": high, "step": step, "value": value, "unit": unit,
                     "decimals": _decimals(step), "help": help or "", "disabled": disabled,
                     "revision": st.session_state[revision_key], "settle_ms": SETTLE_MS})
    return value
