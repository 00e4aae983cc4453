"""Training examples without TensorFlow: how a pair becomes the network's input and labels, the augmentation
settings and their backend-neutral parts, the on-disk example cache, class frequencies and the data split.

Each example is read with :mod:`moleseg.core.imageio`, resized to the network's input size (or kept at its
own scale for crops), turned into BACK/BORDER/INSIDE (or background/foreground) labels with
:mod:`moleseg.core.targets`, optionally cached on disk (``.npz`` per pair, keyed by file identity and every
preparation option). Both training feeds build on this module: the ``tf.data`` pipeline
(:mod:`moleseg.network.data`) and the numpy/OpenCV :class:`moleseg.network.feed.PairFeed` (Keras on JAX).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from moleseg.core import options
from moleseg.core.archive import ZipBudget, check_directory_entries
from moleseg.core.atomic import atomic_output
from moleseg.core.constancy import correct_colour
from moleseg.core.config import BACK, DEFAULT_BORDER_WIDTH_PX, DEFAULT_SHAPE, max_image_pixels
from moleseg.core.errors import printable
from moleseg.core.hardcases import HardCaseLabels, hard_cases
from moleseg.core.resize import network_image, resize_mask_to
from moleseg.core.imageio import image_size, mask_problem, read_image, read_mask
from moleseg.core.pairing import Pair, split_sizes
from moleseg.core.targets import make_targets
from moleseg.core.userspace import SPACE_MODE
from moleseg.core.words import count_of


@dataclass
class AugmentConfig:
    """Random augmentation applied identically to image and labels.

    Attributes
    ----------
    rotation_deg : float
        Rotation drawn uniformly in ``[-rotation_deg, +rotation_deg]`` degrees (180 = any angle, the
        article's 0-360 range); 0 disables it.
    reflection : bool
        Random left-right and up-down flips.
    translation_px : float
        Shift drawn uniformly in ``[-translation_px, +translation_px]`` px of the network input, per axis.
    scale_range : float
        Zoom factor drawn in ``[1 - scale_range, 1 + scale_range]``.
    colour : float
        Strength 0..1 of brightness / contrast / saturation / hue jitter (image only).
    zoom_in, pink, vignette, halo : float
        Probability 0..1 per example of each hard case (see :func:`hard_cases`); 0 disables it.
    fill_mode : {"reflect", "constant", "nearest", "wrap"}
        How pixels brought in from outside the image are filled (image and labels alike).
    """

    rotation_deg: float = 0.0
    reflection: bool = False
    translation_px: float = 0.0
    scale_range: float = 0.0
    colour: float = 0.0
    zoom_in: float = 0.0
    pink: float = 0.0
    vignette: float = 0.0
    halo: float = 0.0
    fill_mode: str = "reflect"

    @classmethod
    def from_names(cls, names: Iterable[str], *, translation_px: float = options.default("translation_px"),
                   rotation_deg: float = options.default("rotation_deg"),
                   scale_range: float = options.default("scale_range"), colour: float = options.default("colour"),
                   hard_case_share: float = options.default("hard_case_share"),
                   fill_mode: str = "reflect") -> "AugmentConfig":
        """Enable the named augmentations (see :data:`moleseg.core.options.AUGMENTATIONS`) with the given
        ranges; each named hard case (:data:`moleseg.core.options.HARD_CASES`) is drawn with probability
        ``hard_case_share``."""
        names = set(options.choice_names(names))
        unknown = names - set(options.AUGMENTATIONS)
        if unknown:
            raise ValueError(f"unknown augmentation {', '.join(sorted(unknown))}; "
                             f"choose from {', '.join(options.AUGMENTATIONS)}")
        return cls(
            rotation_deg=rotation_deg if "rotation" in names else 0.0,
            reflection="reflection" in names,
            translation_px=translation_px if "translation" in names else 0.0,
            scale_range=scale_range if "scale" in names else 0.0,
            colour=colour if "colour" in names else 0.0,
            **{case: hard_case_share if case in names else 0.0 for case in options.HARD_CASES},
            fill_mode=fill_mode,
        )

    @property
    def enabled(self) -> bool:
        return bool(self.rotation_deg or self.reflection or self.translation_px or self.scale_range or self.colour
                    or self.hard_cases)

    @property
    def hard_cases(self) -> bool:
        """Whether any hard case (:data:`moleseg.core.options.HARD_CASES`) is drawn."""
        return any(self.hard_case_shares().values())

    def hard_case_shares(self) -> dict[str, float]:
        """``{"<case>_share": probability}`` of each hard case, the keyword arguments of :func:`hard_cases`."""
        return {f"{case}_share": getattr(self, case) for case in options.HARD_CASES}

    def names(self) -> list[str]:
        """The enabled augmentations' names."""
        flags = {"rotation": self.rotation_deg, "reflection": self.reflection, "translation": self.translation_px,
                 "scale": self.scale_range, "colour": self.colour,
                 **{case: getattr(self, case) for case in options.HARD_CASES}}
        return [name for name, value in flags.items() if value]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TargetConfig:
    """How a mask becomes the network's labels.

    ``fit="resize"``: the whole image is resized to ``input_size`` (dermoscopy: the network sees the
    whole lesion). ``fit="crop"``: the image keeps its own scale, times ``scale`` (the ``tile_scale``
    option; 1 = its own size), and the pipeline cuts random ``input_size`` squares from it (cells: nuclei
    keep their size; prediction then uses tiles at the same scale). ``colour_constancy`` (the option of
    that name) is applied to the image as the network gets it: resized, or whole before cropping.
    """

    input_size: int = options.default("model.input_size")
    n_classes: int = options.default("model.n_classes")
    border_width_px: int = DEFAULT_BORDER_WIDTH_PX
    shape: str = DEFAULT_SHAPE
    fit: str = "resize"
    scale: float = options.default("tile_scale")
    colour_constancy: str = options.default("colour_constancy")

    def key(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    def hard_case_labels(self) -> HardCaseLabels:
        """How the hard-case zoom makes labels again (these targets' classes, BORDER width and shape)."""
        return HardCaseLabels(n_classes=self.n_classes, border_width_px=self.border_width_px, shape=self.shape)


def prepare_example(pair: Pair, targets: TargetConfig) -> tuple[np.ndarray, np.ndarray]:
    """Read one pair and return ``(image uint8 (S, S, 3), labels uint8 (S, S))`` at the input size ``S``
    (with ``fit="crop"``: at the image's own size times ``targets.scale``, padded to at least ``S``).

    A mask whose size differs from its image is resized to the image first (the pairing report has
    already said so).
    """
    image = read_image(pair.image)
    mask = read_mask(pair.mask, allow_empty=True)
    if targets.fit == "crop":
        image = network_image(image, targets.colour_constancy, scale=targets.scale)
        mask = resize_mask_to(mask, image.shape[0], image.shape[1])
        shortfall_y = max(0, targets.input_size - image.shape[0])
        shortfall_x = max(0, targets.input_size - image.shape[1])
        if shortfall_y or shortfall_x:  # smaller than one crop: mirror-pad at the bottom/right
            padding = ((0, shortfall_y), (0, shortfall_x))
            image = np.pad(image, padding + ((0, 0),), mode="reflect")
            mask = np.pad(mask, padding, mode="reflect")
    else:
        mask = resize_mask_to(mask, targets.input_size, targets.input_size)
        image = network_image(image, targets.colour_constancy, input_size=targets.input_size)
    labels = make_targets(mask, classes=targets.n_classes, border_width_px=targets.border_width_px,
                          shape=targets.shape)
    return image, labels.astype(np.uint8)


#: The members of a cached example's ``.npz`` file.
_CACHED_ARRAYS = ("image", "labels")
_NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def _example_shape_fits(shape: tuple[int, ...], targets: TargetConfig) -> bool:
    """Whether ``shape`` is that of an image these targets prepare: ``(S, S, 3)`` (resized), or at least ``S``
    a side and at most the readers' pixel budget at the targets' scale (cropped)."""
    if len(shape) != 3 or shape[2] != 3:
        return False
    height, width, size = shape[0], shape[1], targets.input_size
    if targets.fit != "crop":
        return height == width == size
    budget = max(max_image_pixels() * max(1.0, targets.scale) ** 2, size * size)
    return height >= size and width >= size and height * width <= budget


def _stored_example(path: Path, targets: TargetConfig) -> tuple[np.ndarray, np.ndarray] | None:
    """The example stored at ``path`` when it is one ``targets`` prepare, else None: the headers of its arrays
    (uint8, image ``(H, W, 3)``, labels ``(H, W)``, of a size :func:`_example_shape_fits`) are read first and
    nothing past a header that declares more (an entry of 1.2 MB declaring a 20 000 px square image took 1.1 GB);
    labels must name the targets' classes. Raises OSError, EOFError, ValueError (ArchiveError: more members than
    two), KeyError or BadZipFile for a damaged file."""
    check_directory_entries(path, ZipBudget(max_members=len(_CACHED_ARRAYS), max_bytes=1))
    shapes = {}
    with zipfile.ZipFile(path) as archive:
        for name in _CACHED_ARRAYS:
            with archive.open(f"{name}.npy") as member:
                read_header = _NPY_HEADERS.get(np.lib.format.read_magic(member))
                if read_header is None:
                    return None
                shape, fortran_order, dtype = read_header(member)
            if fortran_order or dtype != np.uint8:
                return None
            shapes[name] = tuple(shape)
    if not _example_shape_fits(shapes["image"], targets) or shapes["labels"] != shapes["image"][:2]:
        return None
    with np.load(path) as stored:
        image, labels = stored["image"], stored["labels"]
    if labels.size and int(labels.max()) >= targets.n_classes:
        return None
    return image, labels


class ExampleCache:
    """Prepared examples stored as ``.npz`` files in a folder, one per (pair, target options).

    The key hashes the image and mask paths, sizes and modification times and the target options, so
    a changed file or option is prepared again. Writes are atomic. The folder is untrusted: an entry that is
    not what the target options make (:func:`_stored_example`) is prepared again.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(mode=SPACE_MODE, parents=True, exist_ok=True)  # users' pictures: the server's account only

    def _key(self, pair: Pair, targets: TargetConfig) -> str:
        parts = [targets.key()]
        for path in (Path(pair.image), Path(pair.mask)):
            stat = path.stat()
            parts.append(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}")
        return hashlib.sha1("\n".join(parts).encode()).hexdigest()

    def get(self, pair: Pair, targets: TargetConfig) -> tuple[np.ndarray, np.ndarray]:
        """The prepared example, computing and storing it when absent."""
        path = self.folder / f"{self._key(pair, targets)}.npz"
        if path.is_file():
            try:
                stored = _stored_example(path, targets)
            except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile):  # ArchiveError is a ValueError
                stored = None
            if stored is not None:
                return stored
            path.unlink(missing_ok=True)
        image, labels = prepare_example(pair, targets)
        with atomic_output(path) as temporary, temporary.open("xb") as stream:
            np.savez(stream, image=image, labels=labels)
        return image, labels


def load_example(pair: Pair, targets: TargetConfig, cache: ExampleCache | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """One prepared example (:func:`prepare_example`), through ``cache`` when given."""
    return cache.get(pair, targets) if cache else prepare_example(pair, targets)


def class_frequencies_of(pairs: Sequence[Pair], targets: TargetConfig, cache: ExampleCache | None = None,
                         warn: Callable[[str], None] | None = None,
                         tick: Callable[[int], None] | None = None) -> np.ndarray:
    """Fraction of each class over all training labels, ``(n_classes,)`` summing to 1.

    ``warn`` gets one line per pair whose mask is empty (no lesion label) or full (no background label),
    then how many there were; such pairs are still trained on. ``tick`` gets the number of pairs done after
    each one (the prepare phase's progress).
    """
    counts = np.zeros(targets.n_classes, dtype=np.float64)
    degenerate = {"empty": 0, "full": 0}
    for done, pair in enumerate(pairs, 1):
        _, labels = load_example(pair, targets, cache)
        per_class = np.bincount(labels.ravel(), minlength=targets.n_classes)[: targets.n_classes]
        counts += per_class
        problem = mask_problem(labels != BACK)
        if problem is not None:
            degenerate["full" if per_class[BACK] == 0 else "empty"] += 1
            if warn:
                warn(f"warning: {printable(Path(pair.mask).name)}: {problem}")  # one line of the training's log
        if tick:
            tick(done)
    if warn and (degenerate["empty"] or degenerate["full"]):
        warn(f"warning: {count_of(degenerate['empty'], 'empty training mask')} and "
             f"{count_of(degenerate['full'], 'full training mask')}")
    total = counts.sum()
    if total == 0:
        raise ValueError("no labelled pixels in the training set")
    return counts / total


def inverse_frequency_weights(frequencies: np.ndarray) -> np.ndarray:
    """The article's class weights ``1 / frequency``, normalised to sum to the number of classes.

    A class absent from the training set (frequency 0) gets weight 0.
    """
    frequencies = np.asarray(frequencies, dtype=np.float64)
    inverse = np.where(frequencies > 0, 1.0 / np.maximum(frequencies, 1e-12), 0.0)
    return (inverse * len(frequencies) / inverse.sum()).astype(np.float32)


def split_pairs(pairs: Sequence[Pair], *, validation_fraction: float, test_fraction: float = 0.0,
                seed: int = 0, fold: int = 0) -> tuple[list[Pair], list[Pair], list[Pair]]:
    """Split by file with a seeded shuffle into ``(train, validation, test)``.

    Fractions are of the whole set, 0..1; each non-zero fraction gets at least one pair. The test set is
    the first block of the shuffle; the validation set is block ``fold`` (0, 1, ...) of the rest, each
    block ``validation_fraction`` of the whole set, so the folds of one seed are disjoint and, with a
    fraction of 1/k, folds 0..k-1 cover the pairs after the test set (k-fold cross-validation; a
    remainder of fewer pairs than a block is never validated). The test set is the same for every fold.

    Raises
    ------
    ValueError
        Fractions out of range, too few pairs, or a fold past the last whole block.
    """
    if not 0 <= validation_fraction < 1 or not 0 <= test_fraction < 1 or validation_fraction + test_fraction >= 1:
        raise ValueError("validation and test fractions must be in [0, 1) and sum to less than 1")
    if fold < 0:
        raise ValueError(f"the validation fold must be 0 or more, not {fold}")
    order = np.random.default_rng(seed).permutation(len(pairs))
    shuffled = [pairs[i] for i in order]
    _, n_val, n_test = split_sizes(len(pairs), validation_fraction, test_fraction)
    folds = (len(pairs) - n_test) // n_val if n_val else 1
    if fold >= folds:
        raise ValueError(f"validation fold {fold} does not exist: {len(pairs) - n_test} pairs after the test set "
                         f"make {count_of(folds, 'validation block')} of {n_val} (folds 0..{folds - 1})")
    rest = shuffled[n_test:]
    start = fold * n_val
    test = shuffled[:n_test]
    validation = rest[start:start + n_val]
    train = rest[:start] + rest[start + n_val:]
    return train, validation, test


# ---------------------------------------------------------------------------------------------------------
# augmentation: the parts both feeds share

#: Colour jitter ranges at strength 1 (:attr:`AugmentConfig.colour` scales them): brightness delta (fraction of
#: the 0..1 range), contrast and saturation factor ``1 ± value``, hue delta (fraction of the hue circle).
COLOUR_JITTER: dict[str, float] = {"brightness": 0.15, "contrast": 0.3, "saturation": 0.4, "hue": 0.05}


def inverse_affine(size: int, cos: Any, sin: Any, scale: Any, flip_x: Any, flip_y: Any, shift_x: Any,
                   shift_y: Any) -> list[Any]:
    """The output->input affine map ``[a0, a1, a2, b0, b1, b2]`` of the augmentation's warp.

    The forward warp is ``out = centre + shift + scale * R(angle) * F * (in - centre)`` about the centre
    of a ``size`` px square, ``F = diag(flip_x, flip_y)`` (each ±1), shift in px; the returned map gives
    ``x_in = a0 x + a1 y + a2``, ``y_in = b0 x + b1 y + b2`` for an output pixel ``(x, y)``. Plain
    arithmetic only, so the TensorFlow pipeline (tensors) and the numpy feed (floats) share it.
    """
    centre = (size - 1) / 2.0
    # inverse of M = scale * R * F is F * R^T / scale, R^T = [[cos, sin], [-sin, cos]]
    a0 = cos * flip_x / scale
    a1 = sin * flip_x / scale
    b0 = -sin * flip_y / scale
    b1 = cos * flip_y / scale
    ox = centre + shift_x
    oy = centre + shift_y
    a2 = centre - (a0 * ox + a1 * oy)
    b2 = centre - (b0 * ox + b1 * oy)
    return [a0, a1, a2, b0, b1, b2]


#: Extra seed word that separates the hard cases' random stream from the other augmentations'.
HARD_CASE_STREAM = 16


def hard_case_rng(seed: np.ndarray) -> np.random.Generator:
    """The numpy generator of one example's hard cases, from its two-number augmentation seed."""
    return np.random.default_rng([int(value) % 2**63 for value in np.ravel(seed)] + [HARD_CASE_STREAM])


def apply_hard_cases(image: np.ndarray, labels: np.ndarray, augment: AugmentConfig, targets: TargetConfig,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The hard cases of ``augment`` (:func:`moleseg.core.hardcases.hard_cases`) on one example, as both
    training feeds apply them; with colour constancy the result is corrected again on its own statistics,
    as such a picture (a close-up, a vignette) is at prediction — near the identity when no case was drawn.

    Returns
    -------
    (image float32 (S, S, 3) 0..255, labels uint8 (S, S))
    """
    image, labels = hard_cases(image, labels, **augment.hard_case_shares(), how=targets.hard_case_labels(), rng=rng)
    if targets.colour_constancy != "none":
        as_read = np.clip(np.rint(image), 0, 255).astype(np.uint8)
        image = correct_colour(as_read, targets.colour_constancy).astype(np.float32)
    return image, labels


#: Most crops one image contributes per epoch when crops follow the image area.
MAX_CROPS_PER_IMAGE = 16


def crop_counts(pairs: Sequence[Pair], input_size: int, crops_per_image: int = 1, by_area: bool = False,
                max_per_image: int = MAX_CROPS_PER_IMAGE, scale: float = 1.0) -> list[int]:
    """How many random crops each pair contributes to one epoch.

    Parameters
    ----------
    pairs
        The training pairs.
    input_size
        Side of one crop, px.
    crops_per_image
        Crops per image (``by_area=False``), or per ``input_size``² of image area (``by_area=True``), >= 1.
    by_area
        Give a large image as many crops as it has crop-sized areas (rounded, at least 1, at most
        ``max_per_image``), so a 1024 x 1024 field weighs as much as the sixteen 256 px fields it holds.
        Sizes come from the file headers (no decoding).
    max_per_image
        Most crops of one image with ``by_area``.
    scale
        Factor the images are resized by before cropping (``TargetConfig.scale``): their area counts
        ``scale``² times.

    Returns
    -------
    list of int
        One count per pair, each in ``1..max(crops_per_image, max_per_image)``.
    """
    if crops_per_image < 1:
        raise ValueError("crops per image must be at least 1")
    if not by_area:
        return [crops_per_image] * len(pairs)
    counts = []
    for pair in pairs:
        width, height = image_size(pair.image)
        areas = width * height * scale * scale / float(input_size * input_size)
        counts.append(int(min(max(1, round(areas * crops_per_image)), max(crops_per_image, max_per_image))))
    return counts


def pair_repeats(pairs: Sequence[Pair], crops_per_image: int | Sequence[int]) -> list[int]:
    """How many times each pair appears in one epoch of a training feed: ``crops_per_image`` for every pair
    (an int) or one count per pair (:func:`crop_counts`), each >= 1.

    Raises
    ------
    ValueError
        No pairs, or the counts do not match the pairs.
    """
    if not pairs:
        raise ValueError("no image/mask pairs to build a dataset from")
    counts = [int(crops_per_image)] * len(pairs) if np.isscalar(crops_per_image) else [int(c) for c in crops_per_image]
    if len(counts) != len(pairs) or min(counts) < 1:
        raise ValueError("crops_per_image needs one count >= 1 per pair")
    return counts
