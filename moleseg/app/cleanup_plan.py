"""Which cleanup each image of the Analyse page gets (its own, one for all, or the automatic one) and the
starting values and limits of the manual cleanup widgets. The plan lives in each browser session's state
(per session); nothing here is cached.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from moleseg.core.cleanup import RULE_WORDS, CleanupSettings
from moleseg.engine.segmenter import MODEL_THRESHOLD

@dataclass(frozen=True)
class CleanupChoice:
    """One image's cleanup: ``settings`` in px of that image (None: the model's automatic cleanup)
    and the lesion threshold (0..1, None for the arg-max, :data:`MODEL_THRESHOLD` for the model's)."""

    settings: CleanupSettings | None = None
    lesion_threshold: Any = MODEL_THRESHOLD


class CleanupPlan:
    """Which cleanup each image of the Analyse page gets, by upload key: its own manual choice,
    the choice applied to all images, or (neither) the automatic one.

    Manual settings apply to the image in view only, unless applied to all: then every image takes
    them and earlier per-image choices are dropped. Unticking "apply to all" returns the other
    images to the automatic cleanup.
    """

    def __init__(self) -> None:
        self.by_image: dict[str, CleanupChoice] = {}
        self.for_all: CleanupChoice | None = None

    def record(self, image_key: str, choice: CleanupChoice, apply_to_all: bool = False) -> None:
        """The user set ``choice`` while viewing ``image_key``."""
        if apply_to_all:
            self.for_all = choice
            self.by_image = {}
        else:
            self.for_all = None
            self.by_image[image_key] = choice

    def for_image(self, image_key: str) -> CleanupChoice | None:
        """The image's choice; None for the automatic cleanup."""
        return self.for_all if self.for_all is not None else self.by_image.get(image_key)

    def clear(self) -> None:
        """Every image back to the automatic cleanup."""
        self.by_image = {}
        self.for_all = None


@dataclass(frozen=True)
class AutoCleanup:
    """The automatic cleanup of one image (its radii scaled to the image) and the image's size (px)."""

    settings: CleanupSettings
    height: int
    width: int


#: Smallest maxima of the closing-radius and border-width sliders (px).
CLOSING_SLIDER_MIN_MAX_PX: int = 80
BORDER_SLIDER_MIN_MAX_PX: int = 40


def cleanup_slider_limits(auto: AutoCleanup | None) -> tuple[int, int]:
    """Maxima (px) of the closing-radius and border-width sliders for an image: twice its automatic value,
    at least a tenth (closing) and a fiftieth (border) of its longer side, at least 80 and 40 px, at most
    the cleanup's own limit (1000 px)."""
    from moleseg.core.cleanup import MAX_RADIUS_PX

    if auto is None:
        return CLOSING_SLIDER_MIN_MAX_PX, BORDER_SLIDER_MIN_MAX_PX
    side = max(auto.height, auto.width)
    closing = max(CLOSING_SLIDER_MIN_MAX_PX, 2 * auto.settings.closing_radius_px, side // 10)
    border = max(BORDER_SLIDER_MIN_MAX_PX, 2 * auto.settings.border_width_px, side // 50)
    return min(closing, MAX_RADIUS_PX), min(border, MAX_RADIUS_PX)


def shown_image_key(upload_keys: Sequence[str], selected: str | None, analysed_keys: Iterable[str] = ()
                    ) -> str | None:
    """The upload key of the image in view: the selected one when it is still uploaded, else the first
    analysed upload of the last run, else the first upload (None without uploads)."""
    if selected in upload_keys:
        return selected
    analysed = set(analysed_keys)
    return next((key for key in upload_keys if key in analysed), upload_keys[0] if upload_keys else None)


def rule_label(rule: str) -> str:
    """A lesion rule (:data:`moleseg.core.cleanup.RULES`) as the rule picker shows it: its name, which the
    History page, the reports and the CSV use, then what it does in words."""
    return f"{rule}: {RULE_WORDS[rule]}"


def scope_caption(apply_to_all: bool, image_count: int, shown_name: str) -> str:
    """The sentence under the manual cleanup widgets saying which images they change: every image (applied to
    all, or one image uploaded), else the image in view by its file name ``shown_name`` (as the page shows it)
    and how to reach the others."""
    if apply_to_all or image_count < 2:
        return "Applies to every image."
    return (f"Applies to {shown_name} only (the image under Show image); tick Apply to all images to change "
            f"all {image_count}.")


def cleanup_widget_values(choice: CleanupChoice | None, auto: AutoCleanup | None,
                          calibrated_threshold: float | None) -> dict[str, Any]:
    """Starting values of the manual cleanup widgets for an image: its recorded choice, else its automatic
    cleanup. Keys: ``rule, closing, border, fill, largest, shape, use_threshold, threshold``."""
    settings = (choice.settings if choice is not None and choice.settings is not None else
                auto.settings if auto is not None else CleanupSettings())
    threshold = choice.lesion_threshold if choice is not None else MODEL_THRESHOLD
    if threshold == MODEL_THRESHOLD:
        threshold = calibrated_threshold
    return {"rule": settings.rule, "closing": settings.closing_radius_px, "border": settings.border_width_px,
            "fill": settings.fill_holes, "largest": settings.largest_component, "shape": settings.shape,
            "use_threshold": threshold is not None, "threshold": 0.5 if threshold is None else float(threshold)}
