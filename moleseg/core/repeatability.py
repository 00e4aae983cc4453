"""How much each measurement moves between two photographs of an unchanged lesion, and whether a change
between two visits exceeds it.

Perturbations
-------------
:func:`rephotographed` simulates a second photograph of the same, unchanged lesion: a rotation about the
image centre (up to :data:`MAX_ROTATION_DEG`), a shift (up to :data:`MAX_SHIFT_SHARE` of the shorter side),
a scale (up to :data:`MAX_SCALE_CHANGE`), a brightness gain (up to :data:`MAX_BRIGHTNESS_CHANGE`), a
white-balance gain per channel (up to :data:`MAX_WHITE_BALANCE_CHANGE`), a Gaussian blur (sigma up to
:data:`MAX_BLUR_PX`) and a JPEG recompression (quality :data:`JPEG_QUALITY_RANGE`). The pixels the
geometry uncovers are filled by reflection. :func:`random_perturbation` draws one from a seeded generator.

:func:`grown_lesion` simulates a lesion that grew: the lesion region is warped outward about its centroid
so that its area grows by the given factor; the skin beyond a falloff ring (:data:`GROWTH_FALLOFF_SHARE`
of the lesion's equivalent diameter) keeps its pixels.

Noise
-----
The repeatability of a measurement is the within-lesion standard deviation ``SD`` of its values over
several simulated photographs of one lesion, pooled over lesions (root mean square); the repeatability
coefficient ``RC = 2.77 SD`` (``1.96 * sqrt(2) * SD``) is the change that two measurements of an unchanged
lesion stay within for 95 % of pairs: the smallest change the measurement can detect. Sizes (lengths and
areas, :func:`is_size`) vary with the lesion's size, so their SD is taken relative to the lesion's mean
(coefficient of variation, %) and their noise is that share of the before value; every other measurement
keeps its own unit. The published table (:func:`published_noise`, ``moleseg/repeatability.json``, measured with
the shipped dermoscopy model) is rebuilt by
``python -m moleseg.tools.repeatability`` (``docs/repeatability.md``).

A change is reported in its measurement's own unit; its relative change (%) is not given for shares, small
ratios and counts (:func:`relative_change_shown`): a relative change of a 2 % colour share or of a small
asymmetry is not meaningful (colour shares change in percentage points).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from moleseg.core.imagewrite import encode_jpeg
from moleseg.core.targets import as_binary_mask, as_rgb_image

__all__ = [
    "COEFFICIENT_PER_SD",
    "NoiseEntry",
    "Perturbation",
    "grown_lesion",
    "is_size",
    "noise_of_change",
    "noise_table_path",
    "pooled_noise",
    "published_noise",
    "random_perturbation",
    "read_noise_table",
    "relative_change_shown",
    "rephotographed",
    "write_noise_table",
]

#: Repeatability coefficient per within-lesion SD: ``1.96 * sqrt(2)``, rounded as the literature writes it.
COEFFICIENT_PER_SD: float = 2.77
#: Largest rotation (degrees, either direction) of a simulated second photograph.
MAX_ROTATION_DEG: float = 20.0
#: Largest shift of a simulated second photograph, as a share of the image's shorter side (each axis).
MAX_SHIFT_SHARE: float = 0.05
#: Largest relative scale change of a simulated second photograph (0.03 = +-3 %).
MAX_SCALE_CHANGE: float = 0.03
#: Largest relative brightness change of a simulated second photograph (0.10 = +-10 %).
MAX_BRIGHTNESS_CHANGE: float = 0.10
#: Largest relative gain of one colour channel (white balance) of a simulated second photograph.
MAX_WHITE_BALANCE_CHANGE: float = 0.04
#: Largest Gaussian blur sigma (px) of a simulated second photograph.
MAX_BLUR_PX: float = 1.0
#: JPEG quality range (inclusive) of the recompression of a simulated second photograph.
JPEG_QUALITY_RANGE: tuple[int, int] = (75, 95)
#: Width of the ring beyond a grown lesion over which the outward warp fades to none, as a share of the
#: lesion's equivalent diameter.
GROWTH_FALLOFF_SHARE: float = 0.3
#: Units of sizes (lengths and areas): their noise is relative to the value.
SIZE_UNITS: frozenset[str] = frozenset({"px", "mm", "mm2"})
#: Measurements whose change is given in their own unit only, never relative: ratios near 0 and counts.
ABSOLUTE_CHANGE_KEYS: frozenset[str] = frozenset({"asymmetry_major", "asymmetry_minor", "colour_variegation",
                                                  "colour_count", "n_components"})
#: File name of the published noise table, package data of ``moleseg`` (measured with the shipped
#: :data:`moleseg.core.config.DERMOSCOPY_MODEL`).
NOISE_TABLE_NAME: str = "repeatability.json"


@dataclass(frozen=True)
class Perturbation:
    """One simulated second photograph (see the module docstring for the ranges).

    Attributes
    ----------
    rotation_deg : float
        Counter-clockwise as displayed, about the image centre.
    shift : tuple of float
        ``(dx, dy)`` as shares of the image's shorter side.
    scale : float
        Magnification factor (1 = unchanged).
    brightness : float
        Gain on every channel (1 = unchanged).
    white_balance : tuple of float
        Gains on R, G and B (1 = unchanged).
    blur_px : float
        Gaussian sigma in px (0 = none).
    jpeg_quality : int
        1..100.
    """

    rotation_deg: float = 0.0
    shift: tuple[float, float] = (0.0, 0.0)
    scale: float = 1.0
    brightness: float = 1.0
    white_balance: tuple[float, float, float] = (1.0, 1.0, 1.0)
    blur_px: float = 0.0
    jpeg_quality: int = 95


def random_perturbation(rng: np.random.Generator) -> Perturbation:
    """A perturbation drawn uniformly within the module's ranges."""
    low, high = JPEG_QUALITY_RANGE
    return Perturbation(
        rotation_deg=float(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG)),
        shift=(float(rng.uniform(-MAX_SHIFT_SHARE, MAX_SHIFT_SHARE)), float(rng.uniform(-MAX_SHIFT_SHARE,
                                                                                          MAX_SHIFT_SHARE))),
        scale=float(rng.uniform(1 - MAX_SCALE_CHANGE, 1 + MAX_SCALE_CHANGE)),
        brightness=float(rng.uniform(1 - MAX_BRIGHTNESS_CHANGE, 1 + MAX_BRIGHTNESS_CHANGE)),
        white_balance=tuple(float(g) for g in rng.uniform(1 - MAX_WHITE_BALANCE_CHANGE, 1 + MAX_WHITE_BALANCE_CHANGE,
                                                          3)),
        blur_px=float(rng.uniform(0.0, MAX_BLUR_PX)),
        jpeg_quality=int(rng.integers(low, high + 1)),
    )


def rephotographed(image: np.ndarray, perturbation: Perturbation) -> np.ndarray:
    """``image`` as a second photograph under ``perturbation``: geometry, then light, blur and JPEG.

    Parameters
    ----------
    image : (H, W, 3) uint8 RGB

    Returns
    -------
    (H, W, 3) uint8 RGB, the same size.
    """
    rgb = as_rgb_image(image)
    height, width = rgb.shape[:2]
    p = perturbation
    matrix = cv2.getRotationMatrix2D((width / 2.0, height / 2.0), p.rotation_deg, p.scale)
    side = min(height, width)
    matrix[:, 2] += (p.shift[0] * side, p.shift[1] * side)
    moved = cv2.warpAffine(rgb, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    gains = p.brightness * np.asarray(p.white_balance, dtype=np.float32)
    lit = np.clip(moved.astype(np.float32) * gains[None, None, :], 0, 255).astype(np.uint8)
    if p.blur_px > 0:
        lit = cv2.GaussianBlur(lit, (0, 0), p.blur_px)
    encoded = np.frombuffer(encode_jpeg(lit, quality=int(p.jpeg_quality)), np.uint8)
    return cv2.cvtColor(cv2.imdecode(encoded, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def grown_lesion(image: np.ndarray, lesion: np.ndarray, area_factor: float = 1.15) -> tuple[np.ndarray, np.ndarray]:
    """The image with its lesion warped outward about the lesion's centroid so that its area is multiplied by
    ``area_factor``; the skin beyond the falloff ring keeps its pixels.

    Parameters
    ----------
    image : (H, W, 3) uint8 RGB
    lesion : (H, W) bool
        The lesion to grow; not empty.
    area_factor : float
        > 1; 1.15 grows the area by 15 % (each length by ``sqrt(1.15)``).

    Returns
    -------
    tuple
        The grown image (uint8 RGB, same size) and the grown lesion mask (bool).
    """
    rgb = as_rgb_image(image)
    binary = as_binary_mask(lesion, "lesion")
    if binary.shape != rgb.shape[:2] or not binary.any():
        raise ValueError("the lesion must be a non-empty mask of the image's size")
    if not area_factor > 1.0:
        raise ValueError(f"area_factor must be above 1, not {area_factor}")
    factor = math.sqrt(area_factor)
    rows, cols = np.nonzero(binary)
    centre_x, centre_y = float(cols.mean()), float(rows.mean())
    height, width = binary.shape
    grow = cv2.getRotationMatrix2D((centre_x, centre_y), 0.0, factor)
    grown = cv2.warpAffine(binary.astype(np.float32), grow, (width, height), flags=cv2.INTER_LINEAR) >= 0.5
    falloff = GROWTH_FALLOFF_SHARE * math.sqrt(4.0 * binary.sum() / math.pi)
    outside = cv2.distanceTransform((~grown).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    weight = np.clip(1.0 - outside / max(falloff, 1.0), 0.0, 1.0)
    shrink = 1.0 - weight * (1.0 - 1.0 / factor)  # 1/factor inside the grown lesion, 1 beyond the ring
    grid_y, grid_x = np.mgrid[0:height, 0:width].astype(np.float32)
    map_x = (centre_x + (grid_x - centre_x) * shrink).astype(np.float32)
    map_y = (centre_y + (grid_y - centre_y) * shrink).astype(np.float32)
    warped = cv2.remap(rgb, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    return warped, grown


def is_size(unit: str) -> bool:
    """True for lengths and areas (px, mm, mm2): their noise is relative to the value."""
    return unit in SIZE_UNITS


def relative_change_shown(key: str, unit: str) -> bool:
    """True when a relative change (%) means something: not for shares (unit ``%``), nor for the small ratios
    and counts of :data:`ABSOLUTE_CHANGE_KEYS` (see the module docstring)."""
    return unit != "%" and key not in ABSOLUTE_CHANGE_KEYS


@dataclass(frozen=True)
class NoiseEntry:
    """The repeatability of one measurement (one row of the published table).

    Attributes
    ----------
    key, unit : str
        As in :class:`moleseg.core.measure.Measurement`; sizes are published once, in ``px``, as a share.
    sd : float
        Within-lesion SD: in ``unit``, or in % of the value for sizes.
    coefficient : float
        ``COEFFICIENT_PER_SD * sd``, same unit as ``sd``.
    relative : bool
        True when ``sd`` and ``coefficient`` are % of the value (sizes).
    lesions : int
        Lesions it was measured on.
    """

    key: str
    unit: str
    sd: float
    coefficient: float
    relative: bool
    lesions: int


def pooled_noise(key: str, unit: str, values_per_lesion: Sequence[Sequence[float]]) -> NoiseEntry:
    """The repeatability of one measurement from its values over the simulated photographs of each lesion.

    Lesions with fewer than two finite values (or a size of mean 0) are left out.
    """
    relative = is_size(unit)
    variances = []
    for values in values_per_lesion:
        finite = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
        if finite.size < 2:
            continue
        if relative:
            mean = float(finite.mean())
            if mean == 0:
                continue
            finite = 100.0 * finite / mean
        variances.append(float(finite.var(ddof=1)))
    sd = math.sqrt(float(np.mean(variances))) if variances else math.nan
    return NoiseEntry(key=key, unit=unit, sd=sd, coefficient=COEFFICIENT_PER_SD * sd, relative=relative,
                      lesions=len(variances))


def noise_table_path() -> Path:
    """Where the published table lives: :data:`NOISE_TABLE_NAME` in the ``moleseg`` package folder (a checkout's or
    an installed wheel's alike; the users' own models folder does not change it)."""
    return Path(__file__).resolve().parents[1] / NOISE_TABLE_NAME


def write_noise_table(entries: Sequence[NoiseEntry], about: Mapping[str, object]) -> bytes:
    """The table as JSON bytes (``{"about": ..., "measurements": [...]}``); write it atomically."""
    rows = [{name: (None if isinstance(value, float) and not math.isfinite(value) else value)
             for name, value in asdict(entry).items()} for entry in entries]
    return (json.dumps({"about": dict(about), "measurements": rows}, indent=2) + "\n").encode()


def read_noise_table(path: Path | None = None) -> dict[str, NoiseEntry]:
    """The published table by measurement key; empty when the file is absent.

    Raises
    ------
    ValueError
        A file that is not such a table (the message names it).
    """
    path = path or noise_table_path()
    if not path.is_file():
        return {}
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))["measurements"]
        entries = [NoiseEntry(key=str(r["key"]), unit=str(r["unit"]),
                              sd=math.nan if r["sd"] is None else float(r["sd"]),
                              coefficient=math.nan if r["coefficient"] is None else float(r["coefficient"]),
                              relative=bool(r["relative"]), lesions=int(r["lesions"])) for r in rows]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: not a repeatability table ({error})") from None
    return {entry.key: entry for entry in entries}


def published_noise(key: str, unit: str, before: float, table: Mapping[str, NoiseEntry]) -> float:
    """The published smallest detectable change of a measurement at ``before``, in ``unit`` (NaN when the
    table has none): the coefficient, or for sizes the coefficient's share of ``|before|``."""
    entry = table.get(key)
    if entry is None or not math.isfinite(entry.coefficient):
        return math.nan
    if entry.relative:
        return entry.coefficient / 100.0 * abs(before) if math.isfinite(before) else math.nan
    return entry.coefficient


def noise_of_change(per_image: float, published: float) -> float:
    """The larger of the per-image and the published noise, ignoring an unknown (NaN) one."""
    known = [value for value in (per_image, published) if math.isfinite(value)]
    return max(known) if known else math.nan
