"""Classical baseline segmenter (no network): thresholding with morphological cleanup.

Three classes (dermoscopy lesions), :func:`segment_lesion`; every step runs on a copy of the image
resized so that its longer side is ``working_side_px`` (256 px), and the mask is resized back:

1. **Hair removal** (DullRazor-like): the grey black-hat with a disk of ``hair_kernel_px`` marks
   thin dark lines more than ``hair_contrast`` grey levels darker than their surroundings; they are
   inpainted (Telea).
2. **Channel**: the blue channel (the one where pigment contrasts most with skin), Gaussian-blurred
   with ``blur_sigma_px``.
3. **Field of view**: the dark circular vignette of a dermoscope is excluded -- pixels whose
   brightest channel is below ``vignette_fraction`` of the image's 90th brightness percentile *and*
   that are connected to the image frame (a dark lesion in the middle is kept), grown by 3 px.
4. **Illumination**: a plane is fitted by least squares to the skin (pixels brighter than
   ``skin_margin`` times a first Otsu threshold) and the channel is divided by it, which removes
   the brightness gradient across many dermoscopy images.
5. **Threshold**: Otsu on the corrected channel inside the field of view, scaled by
   ``threshold_scale``; the lesion is darker than the threshold.
6. **Cleanup**: opening (``opening_radius_px``), closing (``closing_radius_px``), hole filling,
   then the largest component, each component's area being discounted by the share of its outline
   lying on the image frame or the vignette (so a crescent of shadow does not beat the lesion,
   while a lesion that leaves the picture is still kept).

Radii are in px of the working image. The defaults were chosen on PH2, ISIC 2017 and the seed
training set, not on the seed test set. Mean F-measure (``2 TP / (2 TP + FP + FN)`` per image) at
the images' own size: seed/test 0.935 (30 images), seed/train 0.945, PH2 0.925 (100), ISIC 2017
0.871 (36).

Two classes (cells, :func:`segment_foreground`): Otsu on the grey image at full resolution, the
foreground being whichever side of the threshold has fewer pixels (objects are the minority), a
small opening and hole filling; all components are kept. Mean F-measure 0.745 on the 60 stained
brightfield images of DSB 2018.

:class:`ClassicalSegmenter` wraps both behind the :class:`moleseg.engine.segmenter.Segmenter` protocol:
it returns one-hot probabilities of the labels :func:`moleseg.core.targets.make_targets` makes from the
mask, so the standard cleanup gives the same lesion back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

from moleseg import __version__
from moleseg.core.cleanup import CleanupSettings
from moleseg.core.config import (
    CLASS_NAMES_2,
    CLASS_NAMES_3,
    CLASSICAL_MODELS,
    DEFAULT_BORDER_WIDTH_PX,
    DEFAULT_CLASS_COUNT,
    DEFAULT_SHAPE,
)
from moleseg.core.targets import make_targets

__all__ = [
    "FOREGROUND_DEFAULTS",
    "LESION_DEFAULTS",
    "ClassicalSegmenter",
    "one_hot",
    "otsu_threshold",
    "segment_foreground",
    "segment_lesion",
]

#: Default keyword arguments of :func:`segment_lesion` (tuned on PH2 + ISIC 2017 + seed/train).
LESION_DEFAULTS: dict[str, float] = {
    "working_side_px": 256,
    "hair_kernel_px": 9,
    "hair_contrast": 20.0,
    "blur_sigma_px": 2.0,
    "vignette_fraction": 0.3,
    "skin_margin": 1.1,
    "threshold_scale": 1.03,
    "opening_radius_px": 2,
    "closing_radius_px": 16,
}
#: Default keyword arguments of :func:`segment_foreground`.
FOREGROUND_DEFAULTS: dict[str, float] = {
    "blur_sigma_px": 0.0,
    "opening_radius_px": 1,
}

#: Growth of the detected vignette, in px of the working image (its edge is a soft gradient).
_VIGNETTE_MARGIN_PX = 3
#: Fewest skin pixels needed to fit the illumination plane.
_MIN_SKIN_PIXELS = 50
#: Smallest share of the image the field of view must keep; below it the vignette is ignored.
_MIN_FIELD_OF_VIEW_FRACTION = 0.05
#: Smallest spread (1st to 99th percentile) of the blurred blue channel, as a fraction of its median,
#: for anything to be segmented: a plain image has no lesion.
_MIN_RELATIVE_CONTRAST = 0.05


def _check_rgb(image: np.ndarray) -> np.ndarray:
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"image must be an (H, W, 3) RGB array, got shape {array.shape}")
    if array.dtype != np.uint8:
        raise ValueError(f"image must be uint8 (0-255), got dtype {array.dtype}")
    return array


def _disk(radius_px: int) -> np.ndarray:
    """Elliptical structuring element of radius ``radius_px`` (``(2r+1, 2r+1)`` uint8)."""
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius_px + 1, 2 * radius_px + 1))


def otsu_threshold(values: np.ndarray, n_bins: int = 256) -> float:
    """Otsu's threshold of any real values.

    Parameters
    ----------
    values : numpy.ndarray
        Samples (any shape, any real dtype); at least one.
    n_bins : int
        Histogram bins spanning ``[min, max]`` of the values.

    Returns
    -------
    float
        The bin centre maximising the between-class variance (:func:`skimage.filters.threshold_otsu` of
        the values as float64, so integer images get ``n_bins`` bins too): values ``<=`` it form the lower
        class. Equal to the single value when all values are equal.
    """
    samples = np.asarray(values, dtype=np.float64).ravel()
    if samples.size == 0:
        raise ValueError("Otsu's threshold needs at least one value")
    return float(threshold_otsu(samples, nbins=n_bins))


def _remove_hair(image: np.ndarray, kernel_px: int, contrast: float) -> np.ndarray:
    """Inpaint thin dark lines (hairs) found by a grey black-hat of diameter ``kernel_px``."""
    if kernel_px < 3:
        return image
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (int(kernel_px), int(kernel_px)))
    black_hat = cv2.morphologyEx(grey, cv2.MORPH_BLACKHAT, kernel)
    hairs = (black_hat > contrast).astype(np.uint8)
    if not hairs.any():
        return image
    return cv2.inpaint(image, hairs, 3, cv2.INPAINT_TELEA)


def _vignette(image: np.ndarray, fraction: float) -> np.ndarray:
    """Very dark pixels connected to the image frame (the dermoscope's round vignette), bool."""
    brightness = cv2.GaussianBlur(image.max(axis=2).astype(np.float32), (0, 0), 2.0)
    dark = brightness < fraction * np.percentile(brightness, 90)
    components, _ = ndimage.label(dark)
    frame_labels = np.unique(np.concatenate([components[0], components[-1], components[:, 0], components[:, -1]]))
    frame_labels = frame_labels[frame_labels > 0]
    if frame_labels.size == 0:
        return np.zeros(dark.shape, dtype=bool)
    vignette = np.isin(components, frame_labels).astype(np.uint8)
    return cv2.dilate(vignette, _disk(_VIGNETTE_MARGIN_PX)).astype(bool)


def _illumination_plane(channel: np.ndarray, skin: np.ndarray) -> np.ndarray:
    """Least-squares plane ``a + b x + c y`` through ``channel`` on the ``skin`` pixels."""
    height, width = channel.shape
    rows, cols = np.mgrid[:height, :width].astype(np.float32)
    design = np.stack([np.ones_like(rows), cols / width - 0.5, rows / height - 0.5], axis=-1)
    flat_design = design.reshape(-1, 3)
    chosen = np.flatnonzero(skin.ravel())
    step = max(1, int(np.sqrt(chosen.size / 4000)))  # a few thousand samples are plenty
    chosen = chosen[::step]
    coefficients, *_ = np.linalg.lstsq(flat_design[chosen], channel.ravel()[chosen], rcond=None)
    return (design @ coefficients.astype(np.float32)).astype(np.float32)


def _best_component(mask: np.ndarray, outside: np.ndarray) -> np.ndarray:
    """The component with the largest area times the share of its outline not on ``outside``'s rim."""
    components, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if count <= 1:
        return components == 1
    indices = np.arange(1, count + 1)
    areas = np.asarray(ndimage.sum(mask, components, indices), dtype=np.float64)
    rim = np.zeros(mask.shape, dtype=bool)
    rim[0, :] = rim[-1, :] = rim[:, 0] = rim[:, -1] = True
    rim |= cv2.dilate(outside.astype(np.uint8), _disk(1)).astype(bool) & ~outside
    outline = mask & ~cv2.erode(mask.astype(np.uint8), _disk(1)).astype(bool)
    outline_on_rim = np.asarray(ndimage.sum(outline & rim, components, indices), dtype=np.float64)
    outline_total = np.maximum(np.asarray(ndimage.sum(outline, components, indices), dtype=np.float64), 1.0)
    scores = areas * (1.0 - outline_on_rim / outline_total)
    return components == 1 + int(np.argmax(scores))


def segment_lesion(
    image: np.ndarray,
    *,
    working_side_px: int = int(LESION_DEFAULTS["working_side_px"]),
    hair_kernel_px: int = int(LESION_DEFAULTS["hair_kernel_px"]),
    hair_contrast: float = LESION_DEFAULTS["hair_contrast"],
    blur_sigma_px: float = LESION_DEFAULTS["blur_sigma_px"],
    vignette_fraction: float = LESION_DEFAULTS["vignette_fraction"],
    skin_margin: float = LESION_DEFAULTS["skin_margin"],
    threshold_scale: float = LESION_DEFAULTS["threshold_scale"],
    opening_radius_px: int = int(LESION_DEFAULTS["opening_radius_px"]),
    closing_radius_px: int = int(LESION_DEFAULTS["closing_radius_px"]),
) -> np.ndarray:
    """Segment the pigmented lesion of a dermoscopy image (see the module docstring).

    Parameters
    ----------
    image : (H, W, 3) uint8
        RGB image, any size.
    working_side_px : int
        Longer side (px) of the copy every step works on; the image is resized to it (down or up).
    hair_kernel_px : int
        Diameter (px, working image) of the black-hat that finds hairs; below 3 disables hair removal.
    hair_contrast : float
        Grey levels (0-255) a hair must be darker than its surroundings.
    blur_sigma_px : float
        Gaussian sigma (px, working image) smoothing the blue channel; 0 disables it.
    vignette_fraction : float
        In (0, 1): pixels darker than this fraction of the 90th brightness percentile and connected
        to the frame are outside the field of view; 0 disables vignette detection.
    skin_margin : float
        ``>= 1``: skin for the illumination fit is brighter than this times the first Otsu threshold.
    threshold_scale : float
        Factor on the final Otsu threshold (> 1 takes in more of the faint lesion periphery).
    opening_radius_px, closing_radius_px : int
        Radii (px, working image, ``>= 0``) of the opening and closing of the thresholded mask.

    Returns
    -------
    (H, W) bool
        The lesion (one connected region, holes filled), at the image's own size; all False when
        nothing darker than the skin was found or the image is plain (the blue channel's 1st-99th
        percentile spread is under 5 % of its median).

    Raises
    ------
    ValueError
        Not an ``(H, W, 3)`` uint8 image, or a parameter out of range.
    """
    rgb = _check_rgb(image)
    if int(working_side_px) < 16:
        raise ValueError(f"working_side_px must be at least 16, not {working_side_px}")
    if opening_radius_px < 0 or closing_radius_px < 0 or blur_sigma_px < 0:
        raise ValueError("radii and blur_sigma_px must be >= 0")
    if not 0 <= vignette_fraction < 1:
        raise ValueError(f"vignette_fraction must be in [0, 1), not {vignette_fraction}")
    height, width = rgb.shape[:2]
    scale = int(working_side_px) / max(height, width)
    work_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    small = cv2.resize(rgb, work_size, interpolation=interpolation)
    small = _remove_hair(small, hair_kernel_px, hair_contrast)

    blue = small[..., 2].astype(np.float32)
    if blur_sigma_px > 0:
        blue = cv2.GaussianBlur(blue, (0, 0), float(blur_sigma_px))

    outside = _vignette(small, vignette_fraction) if vignette_fraction > 0 else np.zeros(blue.shape, dtype=bool)
    if np.count_nonzero(~outside) < _MIN_FIELD_OF_VIEW_FRACTION * outside.size:
        outside[:] = False
    field_of_view = ~outside
    low, median, high = np.percentile(blue[field_of_view], [1, 50, 99])
    if high - low < _MIN_RELATIVE_CONTRAST * max(float(median), 1.0):
        return np.zeros((height, width), dtype=bool)

    threshold = otsu_threshold(blue[field_of_view])
    skin = field_of_view & (blue > threshold * skin_margin)
    if np.count_nonzero(skin) >= _MIN_SKIN_PIXELS:
        plane = _illumination_plane(blue, skin)
        blue = blue / np.maximum(plane, 1.0)
        threshold = otsu_threshold(blue[field_of_view])

    lesion = ((blue < threshold * threshold_scale) & field_of_view).astype(np.uint8)
    if opening_radius_px:
        lesion = cv2.morphologyEx(lesion, cv2.MORPH_OPEN, _disk(int(opening_radius_px)))
    if closing_radius_px:
        lesion = cv2.morphologyEx(lesion, cv2.MORPH_CLOSE, _disk(int(closing_radius_px)))
    lesion = _best_component(ndimage.binary_fill_holes(lesion), outside)
    if (height, width) == lesion.shape:
        return lesion
    resized = cv2.resize(lesion.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    return resized > 0.5


def segment_foreground(
    image: np.ndarray,
    *,
    blur_sigma_px: float = FOREGROUND_DEFAULTS["blur_sigma_px"],
    opening_radius_px: int = int(FOREGROUND_DEFAULTS["opening_radius_px"]),
) -> np.ndarray:
    """Two-class foreground (cells, nuclei) by Otsu on grey with automatic polarity.

    Parameters
    ----------
    image : (H, W, 3) uint8
        RGB image (a grey image repeated in three channels is fine), worked on at full resolution.
    blur_sigma_px : float
        Gaussian sigma (px) applied to the grey image first; 0 disables it.
    opening_radius_px : int
        Radius (px, ``>= 0``) of the opening removing specks.

    Returns
    -------
    (H, W) bool
        The foreground: the side of Otsu's threshold holding fewer pixels (objects are the
        minority), opened and with holes filled; every component is kept.
    """
    rgb = _check_rgb(image)
    if opening_radius_px < 0 or blur_sigma_px < 0:
        raise ValueError("opening_radius_px and blur_sigma_px must be >= 0")
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    if blur_sigma_px > 0:
        grey = cv2.GaussianBlur(grey, (0, 0), float(blur_sigma_px))
    threshold = otsu_threshold(grey)
    bright = grey > threshold
    foreground = bright if np.count_nonzero(bright) <= bright.size / 2 else ~bright
    if opening_radius_px:
        foreground = cv2.morphologyEx(foreground.astype(np.uint8), cv2.MORPH_OPEN, _disk(int(opening_radius_px)))
    return ndimage.binary_fill_holes(foreground)


def one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """``(H, W, n_classes)`` float32 one-hot probabilities of an ``(H, W)`` integer label image."""
    label_array = np.asarray(labels)
    if label_array.ndim != 2:
        raise ValueError(f"labels must be (H, W), got shape {label_array.shape}")
    if label_array.size and (label_array.min() < 0 or label_array.max() >= n_classes):
        raise ValueError(f"labels must lie in 0..{n_classes - 1}")
    return np.eye(n_classes, dtype=np.float32)[label_array.astype(np.intp)]


class ClassicalSegmenter:
    """The classical baseline behind the :class:`moleseg.engine.segmenter.Segmenter` protocol.

    Parameters
    ----------
    n_classes : {3, 2}
        3: dermoscopy lesions (:func:`segment_lesion`), probabilities of BACK / BORDER / INSIDE.
        2: cells (:func:`segment_foreground`), probabilities of background / foreground.
    border_width_px : int
        Width (px of each image) of the BORDER band of the three-class labels and of the cleanup.
    parameters : mapping, optional
        Keyword arguments overriding :data:`LESION_DEFAULTS` (3 classes) or
        :data:`FOREGROUND_DEFAULTS` (2 classes).

    Attributes
    ----------
    name : str
        ``"classical"`` (three classes) or ``"classical2"`` (two), as :func:`moleseg.network.loading.load_segmenter`
        spells them.
    n_classes : int
    class_names : tuple of str
    cleanup_defaults : CleanupSettings
        Cleanup that returns the segmented mask: article rule, ``border_width_px``, largest component
        for three classes (all components for two).
    info : dict
        ``name, version, description, classes, class_names, n_classes, border_width_px, parameters``.
    """

    def __init__(
        self,
        n_classes: int = DEFAULT_CLASS_COUNT,
        *,
        border_width_px: int = DEFAULT_BORDER_WIDTH_PX,
        parameters: Mapping[str, float] | None = None,
    ) -> None:
        if isinstance(n_classes, bool) or n_classes not in (2, 3):
            raise ValueError(f"the classical segmenter has 2 or 3 classes, not {n_classes!r}")
        if isinstance(border_width_px, bool) or not isinstance(border_width_px, (int, np.integer)) or border_width_px < 0:
            raise ValueError(f"border_width_px must be an integer >= 0, not {border_width_px!r}")
        defaults = LESION_DEFAULTS if n_classes == 3 else FOREGROUND_DEFAULTS
        unknown = set(parameters or {}) - set(defaults)
        if unknown:
            raise ValueError(f"unknown parameters {sorted(unknown)}; known: {sorted(defaults)}")
        self.n_classes: int = int(n_classes)
        self.name: str = CLASSICAL_MODELS[self.n_classes]
        self.class_names: tuple[str, ...] = CLASS_NAMES_3 if n_classes == 3 else CLASS_NAMES_2
        self.border_width_px: int = int(border_width_px)
        self.parameters: dict[str, float] = {**defaults, **dict(parameters or {})}
        self.cleanup_defaults: CleanupSettings = CleanupSettings(
            rule="article",
            largest_component=self.n_classes == 3,
            border_width_px=self.border_width_px,
            shape=DEFAULT_SHAPE,
        )
        if n_classes == 3:
            description = (
                "Classical baseline: hair removal, blue channel, vignette exclusion, illumination plane, "
                "Otsu threshold, opening/closing, hole filling, largest component."
            )
        else:
            description = (
                "Classical baseline: Otsu threshold of the grey image, foreground = minority side, "
                "opening, hole filling, all components kept."
            )
        self.info: dict[str, Any] = {
            "name": self.name,
            "version": __version__,
            "description": description,
            "classes": list(self.class_names),
            "class_names": list(self.class_names),
            "n_classes": self.n_classes,
            "border_width_px": self.border_width_px,
            "parameters": dict(self.parameters),
        }

    def segment_mask(self, image: np.ndarray) -> np.ndarray:
        """The binary lesion (3 classes) or foreground (2 classes) of one image, ``(H, W)`` bool."""
        if self.n_classes == 3:
            return segment_lesion(image, **self.parameters)  # type: ignore[arg-type]
        return segment_foreground(image, **self.parameters)  # type: ignore[arg-type]

    def predict_probabilities(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """One-hot probabilities of each image, ``(H, W, n_classes)`` float32 at the image's own size.

        The labels are :func:`moleseg.core.targets.make_targets` of the segmented mask (BORDER band of
        ``border_width_px``), so :func:`moleseg.core.cleanup.cleanup` with :attr:`cleanup_defaults`
        returns (almost exactly) the mask.
        """
        if isinstance(images, np.ndarray) and images.ndim == 3:
            raise ValueError("predict_probabilities takes a list of images, not a single image")
        probabilities = []
        for image in images:
            mask = self.segment_mask(image)
            labels = make_targets(mask, classes=self.n_classes, border_width_px=self.border_width_px)
            probabilities.append(one_hot(labels, self.n_classes))
        return probabilities
