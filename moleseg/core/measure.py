"""Border measurements of a lesion mask, for the report.

Every measurement is a :class:`Measurement` with a machine key, a human label, a value, a unit
and a one-line meaning. Lengths and areas are given in pixels and, when the pixel size is known
(``pixel_size_mm``, millimetres per pixel), again in millimetres.

Definitions
-----------
area
    Number of lesion pixels (``px``); ``area * s**2`` in ``mm2``.
perimeter
    Crofton perimeter (``skimage.measure.perimeter_crofton``, 4 directions; :func:`moleseg.core.contourshape.crofton_perimeter`) of the lesion, every
    component and hole included, the image frame counting as background. The chain length of the
    pixel contour (``skimage.measure.perimeter`` or ``cv2.arcLength`` of ``cv2.findContours``
    with ``CHAIN_APPROX_NONE``, which agree) over-estimates a circle's length by the staircase
    factor, giving a digital disk a compactness of about 1.10; the Crofton estimate gives
    1 +- 0.035 for radii 20 .. 200 px, so it is the one used. Crofton is unbiased on average
    over edge orientations; a long straight edge at 0 or 45 degrees reads about 5 % short.
equivalent_diameter
    Diameter of the disk of the same area, ``sqrt(4 A / pi)``.
major_axis, minor_axis
    Lengths of the axes of the ellipse with the same second moments (``regionprops``
    ``axis_major_length`` / ``axis_minor_length``, computed by :func:`ellipse_axes`; ``2a`` and ``2b`` for
    an ellipse of semi-axes ``a``, ``b``), all components taken as one region.
compactness
    ``P**2 / (4 pi A)``: 1 for a disk, larger for elongated or ragged outlines.
asymmetry_major, asymmetry_minor
    ABCD-rule asymmetry: the lesion is mirrored about its major (resp. minor) principal axis
    through the centroid; the value is ``1 - IoU(lesion, mirror)`` in [0, 1], 0 = symmetric.
fractal_dimension
    Box-counting dimension of the contour pixels (:func:`moleseg.core.metrics.contour`): the slope of
    ``log N(s)`` against ``log(1 / s)`` for box sizes ``s = 2, 4, 8, ...`` up to a quarter of the
    contour's extent. About 1 (0.94 .. 0.99 in practice) for a smooth outline, up to about
    1.4 for a very ragged one. NaN when the lesion is less than 16 px across (fewer than two
    box sizes).
border_width_mean, border_width_std (only when ``border`` is given)
    Local width of the border band at each band pixel: ``d_out + d_in - 1``, where ``d_out`` is
    the Euclidean distance to the nearest non-lesion pixel and ``d_in`` the distance to the
    nearest inside pixel (lesion minus band), both between pixel centres (distance transforms).
    The mean and the population standard deviation over the band pixels are reported. For a
    straight axis-aligned band ``w`` pixels thick the estimate is exactly ``w`` at every pixel;
    on curved or diagonal bands it reads up to about 0.3 px low (the band of a disk eroded by a
    digital disk of radius 6, 5.8 px thick on average over directions, reads 5.55 +- 0.28).
    The band is clipped to the lesion first. An empty band has width 0; a lesion that is all
    band (no inside), or that fills the whole image (no outer edge), has an undefined width,
    reported as NaN.
n_components
    Number of 8-connected lesion components.
colour_<name>, colour_count, colour_variegation (only when ``image`` is given)
    Share of the lesion (``%``) nearest to each of the six dermoscopic colours (white, red, light
    brown, dark brown, blue-grey, black), the number of colours covering at least
    :data:`moleseg.core.colour.PRESENT_MIN_SHARE` of it, and the normalised entropy of the shares
    (0 = one colour .. 1 = six equal parts); method and references in :mod:`moleseg.core.colour`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from moleseg.core.bandwidth import band_distances
from moleseg.core.colour import COLOUR_NAMES, PRESENT_MIN_SHARE, lesion_colours
from moleseg.core.contourshape import crofton_perimeter, fractal_dimension
from moleseg.core.report import display_unit
from moleseg.core.targets import as_binary_mask, bounding_box

__all__ = ["Measurement", "colour_measurements", "ellipse_axes", "measure_lesion", "measurements_row",
           "fractal_dimension", "asymmetry", "decimals", "value_text"]

#: Column suffix of units that are not valid in a column name.
UNIT_COLUMN_SUFFIX: dict[str, str] = {"%": "percent"}
#: Decimals written and shown, by unit: pixel lengths to 0.1 px, millimetres to 0.001 mm (1 µm), areas to
#: 0.0001 mm² (small ones finer: :data:`SMALL_AREA_MM2`), shares to 0.1 %. Pixel areas and counts are whole
#: numbers; dimensionless ratios get :data:`RATIO_DECIMALS`.
UNIT_DECIMALS: dict[str, int] = {"px": 1, "px2": 0, "mm": 3, "mm2": 4, "%": 1}
#: Areas under this many mm² (cells, nuclei: a 6 µm nucleus is about 0.000028 mm², which 0.0001 mm² would write
#: as 0) get :data:`SMALL_AREA_DECIMALS`: 0.000001 mm² = 1 µm², as lengths are given to 1 µm.
SMALL_AREA_MM2: float = 0.01
SMALL_AREA_DECIMALS: int = 6
#: Decimals of dimensionless ratios (compactness, asymmetry, fractal dimension, variegation).
RATIO_DECIMALS: int = 3
#: Keys whose values are counts (whole numbers), and ``area`` (a pixel area given in ``px``).
WHOLE_NUMBER_KEYS: frozenset[str] = frozenset({"area", "n_components", "colour_count", "object_count"})
#: Integers up to this (2**53) are exact in float64: OpenCV's moments of a mask, sums of whole pixel coordinates
#: kept in float64, are exact while the largest of them (at most count * (longer side - 1)**2) stays below it.
EXACT_FLOAT64_INTEGER: int = 2**53


@dataclass(frozen=True)
class Measurement:
    """One measured quantity of a lesion.

    Attributes
    ----------
    key : str
        Machine name, e.g. ``"area"``; several measurements may share a key in different units.
    label : str
        Human-readable name for tables, e.g. ``"Area"``.
    value : float
        The value (NaN when undefined, see the module docstring).
    unit : str
        ``"px"``, ``"mm"``, ``"mm2"``, ``"%"`` or ``""`` for dimensionless values and counts.
    meaning : str
        One line explaining what the value says.
    """

    key: str
    label: str
    value: float
    unit: str
    meaning: str

    @property
    def column(self) -> str:
        """Flat column name: the key with the unit appended (``area_px``, ``colour_red_percent``,
        ``compactness``)."""
        suffix = UNIT_COLUMN_SUFFIX.get(self.unit, self.unit)
        return f"{self.key}_{suffix}" if suffix else self.key

    @property
    def decimals(self) -> int:
        """Decimals this value is written and shown with (:func:`decimals`)."""
        return decimals(self.key, self.unit, self.value)

    @property
    def rounded(self) -> float | int:
        """The value rounded to :attr:`decimals` (an ``int`` when that is 0; NaN and infinities kept)."""
        if not math.isfinite(self.value):
            return float(self.value)
        places = self.decimals
        return int(round(self.value)) if places == 0 else round(float(self.value), places)

    @property
    def text(self) -> str:
        """The value for people: :attr:`decimals` places, thousands separated, ``"—"`` when undefined
        (:func:`value_text`)."""
        return value_text(self.key, self.unit, self.value)

    @property
    def heading(self) -> str:
        """A table heading with the unit: ``"Area (px²)"``, ``"Perimeter (mm)"``, ``"Compactness index"``."""
        unit = display_unit(self.key, self.unit)
        return f"{self.label} ({unit})" if unit else self.label


def value_text(key: str, unit: str, value: float, places: int | None = None) -> str:
    """A value of measurement ``key`` in ``unit`` for people, as the Analyse page, the CSV, the PDF and the
    Compare page write it: ``places`` decimals (default :func:`decimals`), thousands separated, ``"—"`` when
    undefined (NaN, infinite)."""
    if not math.isfinite(value):
        return "—"
    places = decimals(key, unit, value) if places is None else places
    return f"{round(float(value), places) + 0.0:,.{places}f}"  # + 0.0: no "-0.000"


def decimals(key: str, unit: str, value: float = math.nan) -> int:
    """Decimals of a measurement: 0 for counts and pixel areas, :data:`UNIT_DECIMALS` for lengths, areas
    in mm² and shares (:data:`SMALL_AREA_DECIMALS` for an area ``value`` under :data:`SMALL_AREA_MM2` mm²),
    :data:`RATIO_DECIMALS` for dimensionless ratios."""
    if unit == "px" and key in WHOLE_NUMBER_KEYS:
        return 0
    if unit == "mm2" and abs(value) < SMALL_AREA_MM2:
        return SMALL_AREA_DECIMALS
    if unit in UNIT_DECIMALS:
        return UNIT_DECIMALS[unit]
    return 0 if key in WHOLE_NUMBER_KEYS else RATIO_DECIMALS


@dataclass(frozen=True)
class _Moments:
    """Second moments of a set of pixels, shared by the ellipse axes, the principal axes and the asymmetry.

    ``centroid`` is ``(x, y)`` = (mean column, mean row); ``xx``, ``yy``, ``xy`` the sums of the products of
    the centred coordinates (px²); ``reach`` the largest distance (px) of a pixel from the centroid; ``count``
    the number of pixels."""

    centroid: np.ndarray
    xx: float
    yy: float
    xy: float
    reach: float
    count: float


def _moments(rows: np.ndarray, cols: np.ndarray) -> _Moments:
    """The :class:`_Moments` of the pixels at ``rows``, ``cols`` (integer arrays), from exact integer sums of
    their coordinates (:func:`_centred`)."""
    x, y = cols.astype(np.int64), rows.astype(np.int64)
    exact = np.int64 if x.size * max(int(x.max()), int(y.max()), 1) ** 2 < 2**62 else object  # object: no overflow
    sums = [int(np.sum(values, dtype=exact)) for values in (x, y, x * x, y * y, x * y)]
    centroid, xx, yy, xy = _centred(x.size, *sums)
    return _Moments(centroid=centroid, xx=xx, yy=yy, xy=xy, reach=_reach(centroid, x, y), count=float(x.size))


def _moments_of(crop: np.ndarray) -> _Moments:
    """The :class:`_Moments` of the True pixels of a 2-D bool mask: the sums of their coordinates by OpenCV's
    ``moments`` in one pass (exact integers in float64 while :data:`EXACT_FLOAT64_INTEGER` bounds them; from
    the pixel list otherwise), the reach from each row's first and last pixel."""
    pixels = crop.view(np.uint8)
    found = cv2.moments(pixels, binaryImage=True)
    count = int(found["m00"])
    if count * (max(crop.shape) - 1) ** 2 >= EXACT_FLOAT64_INTEGER:
        points = cv2.findNonZero(pixels).reshape(-1, 2)  # (x, y) = (column, row)
        return _moments(points[:, 1], points[:, 0])
    centroid, xx, yy, xy = _centred(count, *(int(found[key]) for key in ("m10", "m01", "m20", "m02", "m11")))
    # a row's farthest pixel from the centroid is its first or its last (each rounded step below is monotonic)
    first = np.argmax(crop, axis=1)
    rows = np.flatnonzero(crop[np.arange(crop.shape[0]), first])
    last = crop.shape[1] - 1 - np.argmax(crop[:, ::-1], axis=1)[rows]
    reach = _reach(centroid, np.concatenate([first[rows], last]), np.concatenate([rows, rows]))
    return _Moments(centroid=centroid, xx=xx, yy=yy, xy=xy, reach=reach, count=float(count))


def _centred(count: int, sum_x: int, sum_y: int, sum_xx: int, sum_yy: int, sum_xy: int
             ) -> tuple[np.ndarray, float, float, float]:
    """Centroid ``(x, y)`` (px) and centred second moments ``xx``, ``yy``, ``xy`` (px²) of ``count`` pixels from
    the exact integer sums of their coordinates and of their products: each correctly rounded (Python's
    integers, one division each), the centroid equal to the mean of the coordinates."""
    centroid = np.array([sum_x / count, sum_y / count])
    return (centroid, (count * sum_xx - sum_x * sum_x) / count, (count * sum_yy - sum_y * sum_y) / count,
            (count * sum_xy - sum_x * sum_y) / count)


def _reach(centroid: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    """Largest distance (px) from ``centroid`` of the pixels at columns ``x``, rows ``y``."""
    dx = x.astype(np.float64)
    dx -= centroid[0]
    dy = y.astype(np.float64)
    dy -= centroid[1]
    square_x = np.multiply(dx, dx, out=dx)
    return float(np.sqrt(np.add(square_x, np.multiply(dy, dy, out=dy), out=square_x).max()))


def ellipse_axes(rows: np.ndarray, cols: np.ndarray) -> tuple[float, float]:
    """Lengths (px) of the major and minor axes of the ellipse with the same second moments as the pixels
    at ``rows``, ``cols``: ``regionprops``' ``axis_major_length`` / ``axis_minor_length`` of them taken as
    one region (``4 sqrt(l)`` for the eigenvalues ``l`` of the inertia tensor, built the same way), from
    the pixel list (scikit-image's moments of the whole bounding box are slow for a large lesion).
    Equal to ``regionprops`` within float64 round-off (~1e-15 relative)."""
    return _ellipse_axes(_moments(rows, cols))


def _ellipse_axes(moments: _Moments) -> tuple[float, float]:
    """:func:`ellipse_axes` (px) of the pixels of ``moments``."""
    mu_rr, mu_cc, mu_rc, count = moments.yy, moments.xx, moments.xy, moments.count
    # skimage.measure.inertia_tensor: diagonal i = (sum of the second moments - that of axis i) / mu00
    tensor = np.array([[(mu_rr + mu_cc - mu_rr) / count, -mu_rc / count],
                       [-mu_rc / count, (mu_rr + mu_cc - mu_cc) / count]])
    eigenvalues = np.clip(np.linalg.eigvalsh(tensor), 0, None)  # ascending
    return 4.0 * math.sqrt(eigenvalues[-1]), 4.0 * math.sqrt(eigenvalues[0])


def _principal_axes(moments: _Moments) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors ``(x, y)`` of the major and minor principal axes of the pixels of ``moments``."""
    covariance = np.array([[moments.xx, moments.xy], [moments.xy, moments.yy]]) / moments.count
    _, vectors = np.linalg.eigh(covariance)
    return vectors[:, 1], vectors[:, 0]


def _mirror_iou(canvas: np.ndarray, area: int, centroid: np.ndarray, direction: np.ndarray,
                window: tuple[slice, slice]) -> float:
    """IoU of a mask (uint8, 0 / 255, ``area`` pixels 255, all in ``canvas[window]``) with its reflection about
    the line through ``centroid`` along ``direction`` (bilinear, a mirrored pixel counting when it reaches 128)."""
    ux, uy = direction
    reflection = np.array([[ux * ux - uy * uy, 2 * ux * uy], [2 * ux * uy, uy * uy - ux * ux]])
    matrix = np.hstack([reflection, (centroid - reflection @ centroid)[:, None]])
    mirrored = cv2.warpAffine(
        canvas,
        matrix,
        (canvas.shape[1], canvas.shape[0]),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    # counted by OpenCV on uint8: |A & M| (where the mask is) and |M| give the union |A| + |M| - |A & M| without
    # numpy's bool masks
    cv2.threshold(mirrored, 127, 255, cv2.THRESH_BINARY, dst=mirrored)
    common = cv2.countNonZero(cv2.bitwise_and(canvas[window], mirrored[window]))
    union = area + cv2.countNonZero(mirrored) - common
    return common / union if union else 1.0


def asymmetry(lesion: np.ndarray) -> tuple[float, float]:
    """ABCD-rule asymmetry about the major and the minor principal axis.

    Returns
    -------
    tuple of float
        ``(about_major, about_minor)``, each ``1 - IoU(lesion, mirror)`` in [0, 1];
        0 = mirror-symmetric about that axis.

    Raises
    ------
    ValueError
        Empty lesion.
    """
    binary = as_binary_mask(lesion, "lesion")
    box = bounding_box(binary)
    if box is None:
        raise ValueError("lesion mask is empty: asymmetry is undefined")
    r0, r1, c0, c1 = box
    crop = binary[r0:r1, c0:c1]
    return _asymmetry(crop, _moments_of(crop))


def _asymmetry(crop: np.ndarray, moments: _Moments) -> tuple[float, float]:
    """:func:`asymmetry` of a lesion cropped to its bounding box, whose pixels have ``moments``."""
    major, minor = _principal_axes(moments)
    centroid, reach = moments.centroid, moments.reach
    # Pad so that the disk of radius `reach` around the centroid (which holds the mirror image)
    # lies inside the canvas. Below and right of that disk the canvas and the mirror are empty: the canvas
    # ends there (the pixel grid, hence every interpolated value, stays the same as with a full pad).
    pad = int(math.ceil(reach)) + 2
    height, width = crop.shape
    below = max(0, int(math.ceil(centroid[1] + reach)) + 2 - height)
    right = max(0, int(math.ceil(centroid[0] + reach)) + 2 - width)
    canvas = cv2.copyMakeBorder(np.ascontiguousarray(crop).view(np.uint8) * np.uint8(255), pad, below, pad, right,
                                cv2.BORDER_CONSTANT, value=0)
    centre = centroid + pad
    area = int(moments.count)
    window = np.s_[pad:pad + height, pad:pad + width]  # the lesion's box in the canvas: the mask is 0 elsewhere
    return (float(1.0 - _mirror_iou(canvas, area, centre, major, window)),
            float(1.0 - _mirror_iou(canvas, area, centre, minor, window)))


def measure_lesion(
    lesion: np.ndarray,
    *,
    border: np.ndarray | None = None,
    pixel_size_mm: float | None = None,
    image: np.ndarray | None = None,
    border_width_px: Callable[[], tuple[float, float]] | None = None,
    lesion_box: tuple[int, int, int, int] | None = None,
) -> list[Measurement]:
    """Measure the shape and the border of a lesion.

    Parameters
    ----------
    lesion : (H, W) array
        Lesion mask; non-zero / True is lesion. Must not be empty.
    border : (H, W) array, optional
        Predicted border band (e.g. ``CleanupResult.border``); adds the band's mean width and its
        spread. Pixels outside the lesion are ignored.
    pixel_size_mm : float, optional
        Pixel size in millimetres per pixel (> 0); adds every length in ``mm`` and the area in
        ``mm2``.
    image : (H, W, 3) uint8, optional
        The RGB image the lesion was found in; adds the colour measurements.
    border_width_px : callable, optional
        Returns the band's width ``(mean, std)`` in px as :func:`moleseg.core.bandwidth.border_width` gives it,
        made elsewhere (another thread); called once every other shape measurement is made, in place of measuring
        ``border`` here.
    lesion_box : tuple of int, optional
        The lesion's bounding box ``(row0, row1, col0, col1)`` when known (:func:`moleseg.core.targets.bounding_box`
        of ``lesion``); found otherwise.

    Returns
    -------
    list of Measurement
        In a fixed order: area, perimeter, equivalent diameter, major and minor axis (each in px,
        then in mm when ``pixel_size_mm`` is given), compactness, asymmetry about the major and
        minor axis, fractal dimension, border width mean and std (px, mm; only with ``border`` or
        ``border_width_px``),
        number of components, then the share of each of the six colours, the colour count and the
        colour variegation (only with ``image``). See the module docstring for every definition.

    Raises
    ------
    ValueError
        Empty lesion, masks or image of different sizes, or a pixel size that is not a positive number.
    """
    binary = as_binary_mask(lesion, "lesion")
    box = bounding_box(binary) if lesion_box is None else lesion_box
    if box is None:
        raise ValueError("lesion mask is empty: there is nothing to measure")
    band = None
    if border is not None:
        band = as_binary_mask(border, "border")
        if band.shape != binary.shape:
            raise ValueError(f"border and lesion masks differ in size: {band.shape} vs {binary.shape}")
    scale = None
    if pixel_size_mm is not None:
        if isinstance(pixel_size_mm, bool) or not isinstance(pixel_size_mm, (int, float, np.integer, np.floating)):
            raise ValueError(f"pixel_size_mm must be a number of millimetres per pixel, not {pixel_size_mm!r}")
        scale = float(pixel_size_mm)
        if not math.isfinite(scale) or scale <= 0:
            raise ValueError(f"pixel_size_mm must be a positive finite number, not {pixel_size_mm!r}")

    r0, r1, c0, c1 = box
    crop = binary[r0:r1, c0:c1]
    # the perimeter, the contour's boxes and the components of the lesion's box are those of the whole image: each
    # counts what lies beyond the box (the image frame included) as background
    area = float(np.count_nonzero(crop))
    perimeter = float(crofton_perimeter(crop))
    equivalent_diameter = math.sqrt(4.0 * area / math.pi)
    moments = _moments_of(crop)  # shared by the ellipse and the asymmetry
    major_axis, minor_axis = _ellipse_axes(moments)
    compactness = perimeter * perimeter / (4.0 * math.pi * area)
    asymmetry_major, asymmetry_minor = _asymmetry(crop, moments)
    n_components = cv2.connectedComponents(crop.view(np.uint8), connectivity=8)[0] - 1

    measurements: list[Measurement] = []

    def add_length(key: str, label: str, value_px: float, meaning: str, power: int = 1) -> None:
        measurements.append(Measurement(key, label, value_px, "px", meaning))
        if scale is not None:
            unit = "mm2" if power == 2 else "mm"
            measurements.append(Measurement(key, label, value_px * scale**power, unit, meaning))

    add_length("area", "Area", area, "Surface of the lesion.", power=2)
    add_length("perimeter", "Perimeter", perimeter, "Length of the lesion outline (Crofton estimate).")
    add_length(
        "equivalent_diameter", "Equivalent diameter", equivalent_diameter, "Diameter of the disk with the same area."
    )
    add_length("major_axis", "Major axis", major_axis, "Length of the long axis of the best-fitting ellipse.")
    add_length("minor_axis", "Minor axis", minor_axis, "Length of the short axis of the best-fitting ellipse.")
    measurements.append(
        Measurement(
            "compactness",
            "Compactness index",
            compactness,
            "",
            "P^2 / (4 pi A): 1 for a disk, larger when elongated or ragged.",
        )
    )
    measurements.append(
        Measurement(
            "asymmetry_major",
            "Asymmetry (major axis)",
            asymmetry_major,
            "",
            "1 - overlap (IoU) with the mirror image about the major axis: 0 = symmetric.",
        )
    )
    measurements.append(
        Measurement(
            "asymmetry_minor",
            "Asymmetry (minor axis)",
            asymmetry_minor,
            "",
            "1 - overlap (IoU) with the mirror image about the minor axis: 0 = symmetric.",
        )
    )
    measurements.append(
        Measurement(
            "fractal_dimension",
            "Border irregularity (fractal dimension)",
            fractal_dimension(crop),
            "",
            "Box-counting dimension of the outline: about 1 when smooth, higher when ragged.",
        )
    )
    if band is not None or border_width_px is not None:
        width = border_width_px if border_width_px is not None else band_distances(binary, band, lesion_box=box).width
        width_mean, width_std = width()
        add_length(
            "border_width_mean", "Border width (mean)", width_mean, "Average thickness of the predicted border band."
        )
        add_length(
            "border_width_std", "Border width (spread)", width_std, "Standard deviation of the border band's thickness."
        )
    measurements.append(
        Measurement("n_components", "Lesion components", float(n_components), "", "Number of separate lesion regions.")
    )
    if image is not None:
        measurements.extend(colour_measurements(image, binary, lesion_box=box))
    return measurements


def colour_measurements(image: np.ndarray, lesion: np.ndarray, *,
                        lesion_box: tuple[int, int, int, int] | None = None) -> list[Measurement]:
    """The colour measurements of :func:`measure_lesion` (shares in %, count, variegation); ``lesion_box``: the
    lesion's bounding box when known (:func:`moleseg.core.colour.lesion_colours`)."""
    colours = lesion_colours(image, lesion, box=lesion_box)
    measurements = [
        Measurement(
            "colour_" + name.replace(" ", "_").replace("-", "_"),
            f"Colour: {name}",
            100.0 * colours.shares[name],
            "%",
            f"Share of the lesion nearest to the reference {name} (CIELAB).",
        )
        for name in COLOUR_NAMES
    ]
    measurements.append(
        Measurement(
            "colour_count",
            "Colours present",
            float(colours.count),
            "",
            f"Number of the six dermoscopic colours covering at least {PRESENT_MIN_SHARE:.0%} of the lesion.",
        )
    )
    measurements.append(
        Measurement(
            "colour_variegation",
            "Colour variegation",
            colours.variegation,
            "",
            "Entropy of the six colour shares: 0 = one colour, 1 = six equal parts.",
        )
    )
    return measurements


def measurements_row(measurements: list[Measurement], *, rounded: bool = False) -> dict[str, float]:
    """Flatten measurements to ``{column: value}`` for a CSV row.

    The column is the key with the unit appended (``area_px``, ``area_mm2``, ``perimeter_mm``);
    dimensionless values keep their bare key (``compactness``, ``n_components``). With ``rounded``, each
    value is :attr:`Measurement.rounded` (pixel areas and counts as integers, lengths to 0.1 px or
    0.01 mm, ratios to 3 decimals), as the CSV exports write them.

    Raises
    ------
    ValueError
        Two measurements with the same key and unit.
    """
    row: dict[str, float] = {}
    for measurement in measurements:
        column = measurement.column
        if column in row:
            raise ValueError(f"two measurements share the column {column!r}")
        row[column] = measurement.rounded if rounded else float(measurement.value)
    return row
