"""Pairing the images of one folder with the masks of another, the way real datasets name them.

Rules, tried in this order on the files still unpaired (names compared case-insensitively):

1. ``same name`` — same stem, any extensions: ``001.jpg`` ↔ ``001.jpg``, ``a.jpg`` ↔ ``a.png``.
2. ``mask suffix`` — the mask's stem is the image's stem plus a mask word, after a separator
   (``_``, ``-``, ``.``, space), as a suffix or a prefix: ``ISIC_0000001.jpg`` ↔
   ``ISIC_0000001_segmentation.png``, ``IMD004.jpg`` ↔ ``IMD004_lesion.png``, ``x.png`` ↔ ``x-mask.png`` or
   ``mask_x.png``. An image word is stripped likewise from the image (``x_image.jpg`` ↔ ``x_mask.png``).
   Mask words: :data:`MASK_WORDS`; image words: :data:`IMAGE_WORDS`.
3. ``token swap`` — the stems are equal once an image word in the image's stem and a mask word in the
   mask's stem are replaced by the same placeholder: ``b_frame_0_020.tiff`` ↔ ``b_gt_0_020.tiff``,
   ``img12.png`` ↔ ``label12.png``.
4. ``sorted order`` — only when no name rule paired anything and both folders hold as many files:
   the i-th image in natural sort order (numbers compared as numbers; for zero-padded names this is
   Matlab's datastore order) with the i-th mask, with a warning in the report. Refused (no pairs, a
   warning says why) when an image and its mask would both carry numbers that differ.

Never silently wrong: when a rule finds several images for one mask name, or several masks for one image
name, none of them is paired; the conflict is reported in :attr:`PairingReport.conflicts` and the files
are listed as unpaired. Image and mask sizes are read from the headers (after EXIF orientation) and
pairs of different sizes are reported in :attr:`PairingReport.size_mismatches`. Hidden files (``.x``,
including macOS ``._x.jpg``), folders and files whose extension is not in
:data:`moleseg.core.config.IMAGE_EXTENSIONS` are ignored; a file whose path is not UTF-8 text is left out with
a warning.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from moleseg.core.config import IMAGE_EXTENSIONS
from moleseg.core.errors import NOT_TEXT_PATH, folder_not_found, is_text_path, printable, shown_name
from moleseg.core.imageio import ImageReadError, image_size
from moleseg.core.words import count_of

__all__ = [
    "IMAGE_WORDS",
    "MASK_WORDS",
    "RULE_SAME_NAME",
    "RULE_SORTED",
    "RULE_SUFFIX",
    "RULE_TOKEN",
    "Pair",
    "PairingError",
    "PairingReport",
    "list_images",
    "natural_key",
    "pair_folders",
    "split_sizes",
]

RULE_SAME_NAME = "same name"
RULE_SUFFIX = "mask suffix"
RULE_TOKEN = "token swap"
RULE_SORTED = "sorted order"
_RULE_ORDER = (RULE_SAME_NAME, RULE_SUFFIX, RULE_TOKEN, RULE_SORTED)

#: Words that mark a mask file (suffix, prefix or token of its stem), compared case-insensitively.
MASK_WORDS: tuple[str, ...] = (
    "segmentation", "segmentations", "seg", "lesion", "lesions", "mask", "masks", "gt",
    "groundtruth", "ground_truth", "ground-truth", "truth", "label", "labels", "annotation",
    "annotations", "annot", "manual", "binary", "target",
)  # fmt: skip
#: Words that mark an image file, stripped or swapped like the mask words.
IMAGE_WORDS: tuple[str, ...] = (
    "image", "images", "img", "imgs", "im", "frame", "frames", "orig", "original", "input",
    "raw", "rgb", "photo", "dermoscopy", "dermoscopic",
)  # fmt: skip

_SEPARATOR = r"[ _\-.]"
_MAX_LISTED = 10


def _words_pattern(words: Iterable[str]) -> str:
    ordered = sorted(words, key=len, reverse=True)
    return "(?:" + "|".join(re.escape(w).replace(r"_", _SEPARATOR).replace(r"\-", _SEPARATOR)
                            for w in ordered) + ")"


def _affix_regexes(words: Iterable[str]) -> tuple[re.Pattern[str], re.Pattern[str]]:
    pattern = _words_pattern(words)
    suffix = re.compile(rf"^(?P<base>.*?[^ _\-.])(?:{_SEPARATOR}+{pattern})+$", re.IGNORECASE)
    prefix = re.compile(rf"^(?:{pattern}{_SEPARATOR}+)+(?P<base>[^ _\-.].*)$", re.IGNORECASE)
    return suffix, prefix


_MASK_SUFFIX, _MASK_PREFIX = _affix_regexes(MASK_WORDS)
_IMAGE_SUFFIX, _IMAGE_PREFIX = _affix_regexes(IMAGE_WORDS)
_MASK_TOKENS = frozenset(w.casefold() for w in MASK_WORDS if w.isalpha())
_IMAGE_TOKENS = frozenset(w.casefold() for w in IMAGE_WORDS if w.isalpha())
_TOKEN = re.compile(r"[^\W\d_]+|\d+|[\W_]+")


class PairingError(ValueError):
    """A folder is missing or empty, or no image could be paired with a mask.

    :attr:`report` holds the :class:`PairingReport` when pairing was attempted (else None).
    """

    def __init__(self, message: str, report: PairingReport | None = None) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class Pair:
    """One image with its mask.

    Attributes
    ----------
    image, mask : pathlib.Path
        The two files.
    rule : str
        The rule that paired them: ``"same name"``, ``"mask suffix"``, ``"token swap"`` or
        ``"sorted order"``.
    image_size, mask_size : tuple of int or None
        ``(width, height)`` in pixels from the headers (after EXIF orientation); None when unreadable.
    """

    image: Path
    mask: Path
    rule: str
    image_size: tuple[int, int] | None = None
    mask_size: tuple[int, int] | None = None

    @property
    def size_mismatch(self) -> bool:
        """True when both sizes are known and differ."""
        return (
            self.image_size is not None
            and self.mask_size is not None
            and tuple(self.image_size) != tuple(self.mask_size)
        )


@dataclass
class PairingReport:
    """Result of :func:`pair_folders`.

    Attributes
    ----------
    pairs : list of Pair
        In natural order of the image names.
    unpaired_images, unpaired_masks : list of pathlib.Path
        Files left without a partner (including those of conflicts).
    warnings : list of str
        Things to check by eye (pairs made by sorted order, unreadable headers, a refused sorted order).
    conflicts : list of str
        Ambiguous names: several images for one mask, or several masks for one image (none paired).
    """

    pairs: list[Pair]
    unpaired_images: list[Path] = field(default_factory=list)
    unpaired_masks: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)

    @property
    def size_mismatches(self) -> list[Pair]:
        """Pairs whose image and mask sizes differ."""
        return [p for p in self.pairs if p.size_mismatch]

    @property
    def rule_counts(self) -> dict[str, int]:
        """Number of pairs made by each rule, in rule order, rules that made none left out."""
        counts: dict[str, int] = {}
        for pair in self.pairs:
            counts[pair.rule] = counts.get(pair.rule, 0) + 1
        order = {rule: i for i, rule in enumerate(_RULE_ORDER)}
        return dict(sorted(counts.items(), key=lambda item: order.get(item[0], len(order))))

    @property
    def ok(self) -> bool:
        """True when there is at least one pair and no problem (unpaired, conflict, size, warning)."""
        return bool(self.pairs) and not (
            self.unpaired_images
            or self.unpaired_masks
            or self.conflicts
            or self.warnings
            or self.size_mismatches
        )

    def summary(self) -> str:
        """Human-readable text: counts by rule, then every kind of problem (lists cut at 10 names), one line each
        (a name's control characters escaped, :func:`moleseg.core.errors.printable`)."""
        n = len(self.pairs)
        by_rule = ", ".join(f"{count} by {rule}" for rule, count in self.rule_counts.items())
        lines = [count_of(n, "pair") + (f" ({by_rule})" if by_rule else "") + "."]
        mismatches = self.size_mismatches
        if mismatches:
            lines.append(f"{count_of(len(mismatches), 'size mismatch', 'size mismatches')}:")
            for p in mismatches[:_MAX_LISTED]:
                lines.append(
                    f"  image {printable(p.image.name)} is {_size_text(p.image_size)}, "
                    f"mask {printable(p.mask.name)} is {_size_text(p.mask_size)}"
                )
            if len(mismatches) > _MAX_LISTED:
                lines.append(f"  ... and {len(mismatches) - _MAX_LISTED} more")
        for title, files in (
            ("unpaired image", self.unpaired_images),
            ("unpaired mask", self.unpaired_masks),
        ):
            if files:
                lines.append(f"{count_of(len(files), title)}: {_names(files)}")
        if self.conflicts:
            lines.append(f"{count_of(len(self.conflicts), 'ambiguous name')}:")
            lines.extend(f"  {printable(c)}" for c in self.conflicts[:_MAX_LISTED])
            if len(self.conflicts) > _MAX_LISTED:
                lines.append(f"  ... and {len(self.conflicts) - _MAX_LISTED} more")
        if self.warnings:
            lines.append("Warnings:")
            lines.extend(f"  {printable(w)}" for w in self.warnings)
        if len(lines) == 1 and n:
            lines.append("No problems found.")
        return "\n".join(lines)


def _size_text(size: tuple[int, int] | None) -> str:
    return "unreadable" if size is None else f"{size[0]} x {size[1]} px"


def _names(files: list[Path]) -> str:
    shown = ", ".join(printable(f.name) for f in files[:_MAX_LISTED])
    if len(files) > _MAX_LISTED:
        shown += f", ... and {len(files) - _MAX_LISTED} more"
    return shown


def natural_key(name: str) -> tuple[object, ...]:
    """Sort key comparing runs of digits as numbers and letters case-insensitively.

    ``img2 < img10``; for zero-padded names the order equals plain (Matlab datastore) order.
    """
    parts = re.split(r"(\d+)", name)
    key: list[object] = []
    for i, part in enumerate(parts):
        key.append((int(part), len(part)) if i % 2 else part.casefold())
    return (tuple(key), name)


def _is_hidden(path: Path) -> bool:
    return path.name.startswith(".")


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files of a folder, in natural order.

    Parameters
    ----------
    folder : str or os.PathLike
        The folder; not searched recursively.

    Returns
    -------
    list of pathlib.Path
        Regular, non-hidden files whose extension (any case) is in
        :data:`moleseg.core.config.IMAGE_EXTENSIONS`. The files are not opened.

    Raises
    ------
    PairingError
        The folder does not exist or is not a folder.
    """
    root = Path(folder)
    if not root.exists():
        raise PairingError(folder_not_found(root))
    if not root.is_dir():
        raise PairingError(f"not a folder: {root}")
    files = [
        p
        for p in root.iterdir()
        if not _is_hidden(p) and p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
    ]
    return sorted(files, key=lambda p: natural_key(p.name))


# --------------------------------------------------------------------------------------------------
# Name keys, one per rule (None: the rule does not apply to the file)


def _same_name_key(path: Path) -> str:
    return path.stem.casefold()


def _strip_affix(stem: str, suffix: re.Pattern[str], prefix: re.Pattern[str]) -> str | None:
    match = suffix.match(stem) or prefix.match(stem)
    return match.group("base") if match else None


def _mask_affix_key(path: Path) -> str | None:
    base = _strip_affix(path.stem, _MASK_SUFFIX, _MASK_PREFIX)
    return base.casefold() if base else None


def _image_affix_key(path: Path) -> str:
    base = _strip_affix(path.stem, _IMAGE_SUFFIX, _IMAGE_PREFIX)
    return (base or path.stem).casefold()


def _token_key(path: Path, words: frozenset[str]) -> str | None:
    replaced = False
    parts: list[str] = []
    for token in _TOKEN.findall(path.stem):
        folded = token.casefold()
        if folded in words:
            parts.append("*")
            replaced = True
        elif not token[0].isalnum():
            parts.append("_")
        else:
            parts.append(folded)
    return "".join(parts) if replaced else None


def _is_mask_name(path: Path) -> bool:
    return _mask_affix_key(path) is not None or _token_key(path, _MASK_TOKENS) is not None


def _numbers(path: Path) -> list[int]:
    return [int(d) for d in re.findall(r"\d+", path.stem)]


# --------------------------------------------------------------------------------------------------
# Matching


class _Matcher:
    """Holds the files still unpaired and applies one rule at a time."""

    def __init__(self, images: list[Path], masks: list[Path]) -> None:
        self.images = list(images)
        self.masks = list(masks)
        self.pairs: list[Pair] = []
        self.conflicts: list[str] = []
        self.conflicted_images: list[Path] = []
        self.conflicted_masks: list[Path] = []

    def apply(
        self,
        rule: str,
        image_key: Callable[[Path], str | None],
        mask_key: Callable[[Path], str | None],
    ) -> None:
        images_by_key: dict[str, list[Path]] = defaultdict(list)
        masks_by_key: dict[str, list[Path]] = defaultdict(list)
        for image in self.images:
            key = image_key(image)
            if key is not None:
                images_by_key[key].append(image)
        for mask in self.masks:
            key = mask_key(mask)
            if key is not None:
                masks_by_key[key].append(mask)
        used_images: set[Path] = set()
        used_masks: set[Path] = set()
        for key in sorted(set(images_by_key) & set(masks_by_key), key=natural_key):
            images, masks = images_by_key[key], masks_by_key[key]
            if len(images) == 1 and len(masks) == 1:
                self.pairs.append(Pair(images[0], masks[0], rule))
            else:
                self.conflicts.append(
                    f"{rule}: image{'s' if len(images) > 1 else ''} {_names(images)} and "
                    f"mask{'s' if len(masks) > 1 else ''} {_names(masks)} all match the name "
                    f"{key!r}; none paired (rename the files so that each image has one mask)"
                )
                self.conflicted_images.extend(images)
                self.conflicted_masks.extend(masks)
            used_images.update(images)
            used_masks.update(masks)
        self.images = [p for p in self.images if p not in used_images]
        self.masks = [p for p in self.masks if p not in used_masks]

    def apply_sorted_order(self, warnings: list[str]) -> None:
        images = sorted(self.images, key=lambda p: natural_key(p.name))
        masks = sorted(self.masks, key=lambda p: natural_key(p.name))
        disagreements = [
            (image, mask)
            for image, mask in zip(images, masks)
            if _numbers(image) and _numbers(mask) and _numbers(image)[-1] != _numbers(mask)[-1]
        ]
        if disagreements:
            image, mask = disagreements[0]
            warnings.append(
                f"names do not match and pairing by sorted order was refused: it would pair "
                f"{count_of(len(disagreements), 'image')} with a mask of another number, e.g. image "
                f"{image.name} with mask {mask.name}"
            )
            return
        for image, mask in zip(images, masks):
            self.pairs.append(Pair(image, mask, RULE_SORTED))
        warnings.append(
            f"{len(images)} pairs were made by sorted order only, because the names do not match "
            f"(e.g. image {images[0].name} with mask {masks[0].name}): check a few pairs by eye"
        )
        self.images, self.masks = [], []


def pair_folders(
    images_dir: str | os.PathLike[str], masks_dir: str | os.PathLike[str]
) -> PairingReport:
    """Pair the images of ``images_dir`` with the masks of ``masks_dir``.

    Parameters
    ----------
    images_dir, masks_dir : str or os.PathLike
        The two folders (not searched recursively). They may be the same folder: then files whose name
        carries a mask word (``_segmentation``, ``_mask``, ``gt``, ...) are the masks, the others images.

    Returns
    -------
    PairingReport
        Pairs with the rule that made each and both sizes from the headers, unpaired files, conflicts
        and warnings; see the module docstring for the rules.

    Raises
    ------
    PairingError
        A folder is missing, holds no image file, or not a single pair could be made (the message says
        why; :attr:`PairingError.report` holds the report).
    """
    images_root, masks_root = Path(images_dir), Path(masks_dir)
    for title, root in (("images", images_root), ("masks", masks_root)):
        if not root.exists():
            raise PairingError(f"{title} folder not found: {root}")
        if not root.is_dir():
            raise PairingError(f"{title} folder is not a folder: {root}")
    images = list_images(images_root)
    if images_root.resolve() == masks_root.resolve():
        masks = [p for p in images if _is_mask_name(p)]
        images = [p for p in images if not _is_mask_name(p)]
    else:
        masks = list_images(masks_root)
    extensions = ", ".join(IMAGE_EXTENSIONS)
    if not images:
        raise PairingError(f"no image files in {images_root} (looked for {extensions})")
    if not masks:
        raise PairingError(f"no mask files in {masks_root} (looked for {extensions})")
    warnings: list[str] = []
    images, masks = _text_named(images, "image", warnings), _text_named(masks, "mask", warnings)

    matcher = _Matcher(images, masks)
    matcher.apply(RULE_SAME_NAME, _same_name_key, _same_name_key)
    matcher.apply(RULE_SUFFIX, _image_affix_key, _mask_affix_key)
    matcher.apply(
        RULE_TOKEN,
        lambda p: _token_key(p, _IMAGE_TOKENS),
        lambda p: _token_key(p, _MASK_TOKENS),
    )
    if (
        not matcher.pairs
        and not matcher.conflicts
        and len(matcher.images) == len(matcher.masks)
    ):
        matcher.apply_sorted_order(warnings)

    pairs = sorted(matcher.pairs, key=lambda p: natural_key(p.image.name))
    for pair in pairs:
        pair.image_size = _header_size(pair.image, "image", warnings)
        pair.mask_size = _header_size(pair.mask, "mask", warnings)
    report = PairingReport(
        pairs=pairs,
        unpaired_images=sorted(
            matcher.images + matcher.conflicted_images, key=lambda p: natural_key(p.name)
        ),
        unpaired_masks=sorted(
            matcher.masks + matcher.conflicted_masks, key=lambda p: natural_key(p.name)
        ),
        warnings=warnings,
        conflicts=matcher.conflicts,
    )
    if not pairs:
        reason = (
            f"no image could be paired with a mask: {count_of(len(images), 'image')} in {images_root}, "
            f"{count_of(len(masks), 'mask')} in {masks_root}"
        )
        if not matcher.conflicts and len(images) != len(masks) and not warnings:
            reason += (
                f"; no names match (e.g. image {images[0].name}, mask {masks[0].name}) and the "
                f"counts differ, so sorted order cannot be used"
            )
        details = [*matcher.conflicts, *warnings]
        if details:
            reason += "; " + "; ".join(details)
        raise PairingError(reason, report)
    return report


def _text_named(paths: list[Path], title: str, warnings: list[str]) -> list[Path]:
    """``paths`` less those whose path is not UTF-8 text, each of these said in ``warnings`` (they could be neither
    shown nor written in the results)."""
    kept = []
    for path in paths:
        if is_text_path(path):
            kept.append(path)
        else:
            warnings.append(f"{title} {shown_name(path.name)} is left out: {NOT_TEXT_PATH}")
    return kept


def _header_size(path: Path, title: str, warnings: list[str]) -> tuple[int, int] | None:
    try:
        return image_size(path)
    except ImageReadError as exc:
        warnings.append(f"cannot read the header of {title} {exc}")
        return None


def split_sizes(n_pairs: int, validation_fraction: float, test_fraction: float = 0.0) -> tuple[int, int, int]:
    """``(train, validation, test)`` counts of a split of ``n_pairs`` pairs by fractions of the whole (0..1):
    each non-zero fraction gets at least one pair, the training set what is left.

    Raises
    ------
    ValueError
        When no pair would be left to train on (the message says how many pairs there are).
    """
    n_validation = max(1, round(n_pairs * validation_fraction)) if validation_fraction > 0 else 0
    n_test = max(1, round(n_pairs * test_fraction)) if test_fraction > 0 else 0
    if n_validation + n_test >= n_pairs:
        raise ValueError(f"{n_pairs} {'pair is' if n_pairs == 1 else 'pairs are'} too few to split off "
                         f"{'validation and test sets' if n_test else 'a validation set'} and keep one to train on")
    return n_pairs - n_validation - n_test, n_validation, n_test
