"""Rebuild the published repeatability table: how much every measurement moves between two photographs of an
unchanged lesion, through the full path (the shipped dermoscopy model, cleanup, measurement).

Real lesion images of the shared data (PH2, ISIC 2017, HAM10000; not the seed's test set) whose lesion lies
wholly in the picture are reduced to :data:`WORKING_SIDE_PX`, photographed again ``--passes`` times each by simulation
(:func:`moleseg.core.repeatability.rephotographed`), segmented and measured; the within-lesion SD and the
repeatability coefficient of every measurement (:func:`moleseg.core.repeatability.pooled_noise`) are written
to ``moleseg/repeatability.json`` (package data) and ``docs/repeatability.md``.

Usage::

    python -m moleseg.tools.repeatability --n-images 40 --passes 5
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from moleseg.core.atomic import atomic_write
from moleseg.core.config import DERMOSCOPY_MODEL, IMAGE_EXTENSIONS, MODELS_DIR
from moleseg.core.imageio import read_image
from moleseg.core.edgecontact import extends_beyond_picture
from moleseg.core.measure import Measurement, measure_lesion
from moleseg.core.repeatability import (COEFFICIENT_PER_SD, JPEG_QUALITY_RANGE, MAX_BLUR_PX, MAX_BRIGHTNESS_CHANGE,
                                        MAX_ROTATION_DEG, MAX_SCALE_CHANGE, MAX_SHIFT_SHARE, MAX_WHITE_BALANCE_CHANGE,
                                        NoiseEntry, noise_table_path, pooled_noise, write_noise_table)
from moleseg.core.resize import rescale_image
from moleseg.core.words import count_of
from moleseg.tools import PROJECT_DIR, SHARED_DATA_DIR

if TYPE_CHECKING:
    from moleseg.engine.segmenter import Segmenter

#: The shared data's lesion sets measured (images only; the seed's test set is left out).
SUBSETS: tuple[str, ...] = ("moles/ph2", "moles/isic2017", "moles/ham10000")
#: Longer side (px) the images are reduced to before they are photographed again.
WORKING_SIDE_PX: int = 512
#: Seed of the image sample and of the simulated photographs.
SEED: int = 26
#: The published page.
DOC_PATH: Path = PROJECT_DIR / "docs" / "repeatability.md"


def lesion_images(data: Path, seed: int = SEED) -> list[Path]:
    """The image files of :data:`SUBSETS` of ``data`` in a seeded random order."""
    files = sorted(path for subset in SUBSETS for path in (data / subset / "images").glob("*")
                   if path.suffix.lower() in IMAGE_EXTENSIONS)
    return [files[index] for index in np.random.default_rng(seed).permutation(len(files))]


def followable_images(segmenter: Segmenter, paths: list[Path], count: int, *,
                      side: int = WORKING_SIDE_PX) -> list[tuple[np.ndarray, np.ndarray]]:
    """The first ``count`` images of ``paths`` (reduced to ``side``, :func:`reduced`) whose lesion lies wholly in
    the picture (:func:`moleseg.core.edgecontact.extends_beyond_picture`): a lesion cut by the frame cannot be
    followed by its size, whatever the noise. Each comes with its lesion (bool)."""
    from moleseg.engine.segmenter import segment

    chosen = []
    for path in paths:
        image = reduced(path, side)
        lesion = segment(segmenter, image).lesion
        if lesion.any() and not extends_beyond_picture(lesion):
            chosen.append((image, lesion))
        if len(chosen) == count:
            return chosen
    raise ValueError(f"only {count_of(len(chosen), 'lesion')} wholly in the picture found, {count} asked for")


def reduced(path: Path, side: int = WORKING_SIDE_PX) -> np.ndarray:
    """The image of ``path`` with its longer side at most ``side`` px."""
    image = read_image(path)
    return rescale_image(image, min(1.0, side / max(image.shape[:2])))


def measure_repeatability(segmenter: Segmenter, images: list[tuple[np.ndarray, np.ndarray]], passes: int,
                          seed: int = SEED) -> tuple[list[NoiseEntry], dict[str, str], float]:
    """The table's rows, the measurements' labels by key and the seconds one pass took on average, from
    ``(image, lesion)`` pairs."""
    from moleseg.engine.compare import rephotographed_values

    rng = np.random.default_rng(seed)
    per_lesion: dict[tuple[str, str], list[list[float]]] = {}
    started = time.perf_counter()
    for image, lesion in images:
        for name, values in rephotographed_values(segmenter, image, lesion, passes, rng).items():
            per_lesion.setdefault(name, []).append(values)
    seconds = (time.perf_counter() - started) / (passes * len(images))
    labels = {m.key: m.label for m in _example_measurements()}
    entries = [pooled_noise(key, unit, values) for (key, unit), values in per_lesion.items()]
    return entries, labels, seconds


def _example_measurements() -> list[Measurement]:
    lesion = np.zeros((40, 40), bool)
    lesion[10:30, 12:28] = True
    return measure_lesion(lesion, border=lesion & ~np.pad(lesion[1:-1, 1:-1], 1), pixel_size_mm=0.01,
                          image=np.full((40, 40, 3), 128, np.uint8))


def trusted_change(entry: NoiseEntry) -> str:
    """The change of one measurement a clinician can trust, in words."""
    if not np.isfinite(entry.coefficient):
        return "not estimated"
    if entry.relative:
        return f"more than {entry.coefficient:.1f} % of the value"
    if entry.unit == "%":
        return f"more than {entry.coefficient:.1f} percentage points"
    if entry.key in ("colour_count", "n_components"):
        return f"more than {entry.coefficient:.2f} (a change of {int(np.floor(entry.coefficient)) + 1} or more)"
    return f"more than {entry.coefficient:.3f}"


def markdown(entries: list[NoiseEntry], labels: dict[str, str], *, images: int, passes: int, seconds: float,
             command: str) -> str:
    """``docs/repeatability.md``."""
    rows = []
    for entry in entries:
        unit = "% of the value" if entry.relative else ("percentage points" if entry.unit == "%" else
                                                         (entry.unit or "(none)"))
        rows.append(f"| {labels.get(entry.key, entry.key)} | {unit} | {entry.sd:.3f} | {entry.coefficient:.3f} | "
                    f"{trusted_change(entry)} |")
    table = "\n".join(rows)
    return f"""# Repeatability: how much each measurement moves between two photographs

Two photographs of an unchanged lesion never give the same numbers: the dermatoscope sits at another angle,
the light and the camera's white balance differ a little, the file is compressed again. This page gives,
for every measurement, how much it moves from that alone, so that a change between two visits can be told
from measurement error. `moleseg compare` and the Compare page use it: every change has its `noise` (the
smallest change the measurement can detect) and is marked *within measurement noise* when it does not
exceed it.

## How it was measured

{images} lesion images of the shared data (PH2, ISIC 2017, HAM10000; drawn with seed {SEED}, reduced to
{WORKING_SIDE_PX} px on the longer side; only lesions wholly in the picture, since a lesion cut by the frame
cannot be followed by its size) were each photographed again {passes} times by simulation
(`moleseg.core.repeatability.rephotographed`): a rotation up to ±{MAX_ROTATION_DEG:g}°, a shift up to
{100 * MAX_SHIFT_SHARE:g} % of the shorter side, a scale change up to ±{100 * MAX_SCALE_CHANGE:g} %, a brightness
change up to ±{100 * MAX_BRIGHTNESS_CHANGE:g} %, a white-balance gain up to ±{100 * MAX_WHITE_BALANCE_CHANGE:g} %
per channel, a blur up to {MAX_BLUR_PX:g} px and a JPEG recompression at quality {JPEG_QUALITY_RANGE[0]} to
{JPEG_QUALITY_RANGE[1]}. Each photograph went through the full path: the shipped dermoscopy model, the
cleanup, the measurements.

- **Within-lesion SD**: the standard deviation of a measurement over one lesion's photographs, pooled over the
  lesions (root mean square). Lengths and areas grow with the lesion, so theirs is given in % of the lesion's
  mean value; the others in their own unit (percentage points for colour shares).
- **Repeatability coefficient** (RC = {COEFFICIENT_PER_SD} × SD): two measurements of an unchanged lesion differ
  by less than this in 95 % of cases. A change beyond it is unlikely to come from re-photographing alone.

The same RC holds in mm and mm² as in px (it is relative). Rebuild this page and the table shipped with the
package (`moleseg/{noise_table_path().name}`) with:

    {command}

## The table

| Measurement | Unit of SD and RC | Within-lesion SD | Repeatability coefficient | A change a clinician can trust |
|---|---|---|---|---|
{table}

## Reading it

- The scale change of a second photograph (±{100 * MAX_SCALE_CHANGE:g} %) moves every length by that much and
  the area by twice as much: at a fixed magnification (a contact dermatoscope) it is smaller, so the table is
  on the safe side.
- The colour shares and the colour count depend on the light and the camera's rendering: compare colours
  only between photographs taken with the same device and settings. Two images of very different white
  balance, or a greyscale and a colour one, are refused as not comparable.
- A single comparison can also estimate the noise of *its* lesion: `moleseg compare --noise-passes K`
  photographs each visit again K times by simulation (2 K more segmentations, about {seconds:.2f} s each on the
  machine that built this page, 2 CPU cores shared) and uses the larger of that and this table.
- Descriptive figures only: the table says what the measurement can resolve, not what change matters
  clinically.

## In a comparison

`moleseg compare --json FILE` (and the Compare page's JSON download) gives, besides the figures of both visits:

- `comparable` (true / false) and `reason`: false when the alignment failed, when one image is greyscale and
  the other in colour, or when the skin's white balance differs too much; then no change may be read as change
  (the page leads with the reason and folds the table away, the PDF prints no table).
- for each change: `change` in `change_unit` (percentage points for colour shares), `change_percent` (none
  for colour shares, asymmetries and counts: a relative change of a small share means nothing), `noise` (the
  smallest detectable change, in `change_unit`: the larger of this table's RC and, with `--noise-passes K`,
  the RC measured on this lesion) and `beyond_noise`. The page and the PDF grey the changes within noise.
- `rotation_deg`: counter-clockwise positive, as displayed, from the before to the after image;
  `lesion_shift_px` (and `lesion_shift_mm` with a pixel size): how far the lesion's centre moved, x right and
  y down; `translation_px` is the fitted transform's, about the image's top-left corner.
- The after image's colours are read with its skin matched to the before image's skin (per-channel gains), so
  a change of light or white balance between the visits is not read as a change of colour.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m moleseg.tools.repeatability", description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=SHARED_DATA_DIR, help="the shared data folder")
    parser.add_argument("--n-images", type=int, default=40, help="lesion images measured")
    parser.add_argument("--passes", type=int, default=5, help="simulated photographs of each image (2 or more)")
    args = parser.parse_args(argv)
    from moleseg.network.loading import load_segmenter

    segmenter = load_segmenter(str(MODELS_DIR / DERMOSCOPY_MODEL))
    try:
        images = followable_images(segmenter, lesion_images(args.data), args.n_images)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    entries, labels, seconds = measure_repeatability(segmenter, images, args.passes)
    command = f"python -m moleseg.tools.repeatability --n-images {args.n_images} --passes {args.passes}"
    about = {"command": command, "images": len(images), "passes": args.passes, "seed": SEED,
             "working_side_px": WORKING_SIDE_PX, "seconds_per_pass": round(seconds, 3),
             "sizes": "sd and coefficient in % of the value", "coefficient_per_sd": COEFFICIENT_PER_SD}
    atomic_write(noise_table_path(), write_noise_table(entries, about))
    atomic_write(DOC_PATH, markdown(entries, labels, images=len(images), passes=args.passes, seconds=seconds,
                                    command=command).encode())
    for entry in entries:
        print(f"{entry.key:24s} {entry.unit or '-':4s} sd {entry.sd:8.3f} rc {entry.coefficient:8.3f}"
              f"{' %' if entry.relative else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
