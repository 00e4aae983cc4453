"""Fuzzing of the readers and the core invariants with hypothesis: only the documented error type
escapes, and the invariants hold for any input.

CI runs a few thousand cases in all (``FUZZ_EXAMPLES`` per test). A longer run, e.g. 100,000 cases
per test::

    MOLESEG_FUZZ_EXAMPLES=100000 python -m pytest -q -p no:cacheprovider tests/test_fuzz.py
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from moleseg.core.cleanup import CleanupSettings, cleanup
from moleseg.core.config import BACK, BORDER, INSIDE
from moleseg.core.imageio import ImageReadError, read_image, read_mask
from moleseg.core.imagewrite import encode_png
from moleseg.core.pairing import PairingError, pair_folders
from moleseg.core.targets import make_targets
from moleseg.engine.session import ArchiveError, extract_zip

#: Examples per fuzz test; the CI default keeps each test to a few seconds.
FUZZ_EXAMPLES = int(os.environ.get("MOLESEG_FUZZ_EXAMPLES", "1000"))
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])


def _seeds() -> list[bytes]:
    """Valid files of each kind the reader opens, as starting points for mutations."""
    from PIL import Image

    rng = np.random.default_rng(0)
    files = [encode_png(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)), encode_png(np.eye(4, dtype=bool))]
    for fmt in ("JPEG", "BMP", "GIF", "TIFF", "WEBP"):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)).save(buffer, format=fmt)
        files.append(buffer.getvalue())
    return files


SEEDS = _seeds()


@st.composite
def mutated_files(draw) -> bytes:
    """A valid image with a few bytes changed, cut or inserted, or plain random bytes."""
    if draw(st.booleans()) and draw(st.booleans()):
        return draw(st.binary(max_size=300))
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        position = draw(st.integers(0, max(0, len(data) - 1)))
        action = draw(st.sampled_from(("flip", "cut", "insert", "truncate")))
        if action == "flip" and data:
            data[position] = draw(st.integers(0, 255))
        elif action == "cut":
            del data[position:position + draw(st.integers(1, 16))]
        elif action == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
        else:
            del data[position:]
    return bytes(data)


@FUZZ
@given(data=mutated_files())
def test_image_reader_lets_only_image_read_error_escape(data):
    for reader in (read_image, read_mask):
        try:
            values = reader(data, name="f.png") if reader is read_image else reader(data, allow_empty=True)
        except ImageReadError as error:
            assert str(error).startswith(("f.png: ", "image: ")) and error.reason
            continue
        if reader is read_image:
            assert values.dtype == np.uint8 and values.ndim == 3 and values.shape[2] == 3
        else:
            assert values.dtype == np.bool_ and values.ndim == 2
        assert values.flags.c_contiguous and values.flags.writeable and min(values.shape[:2]) >= 1


@FUZZ
@given(mask=st.tuples(st.integers(1, 24), st.integers(1, 24)).flatmap(lambda s: arrays(np.bool_, s)),
       width=st.integers(0, 5), shape=st.sampled_from(("diamond", "disk", "square")), edge=st.booleans())
def test_targets_keep_the_lesion_and_use_only_their_classes(mask, width, shape, edge):
    labels = make_targets(mask, classes=3, border_width_px=width, shape=shape, border_at_image_edge=edge)
    assert labels.shape == mask.shape
    assert set(np.unique(labels)) <= {BACK, BORDER, INSIDE}
    np.testing.assert_array_equal(labels != BACK, mask)
    if width == 0:
        assert not (labels == BORDER).any()
    two = make_targets(mask, classes=2, border_width_px=width, shape=shape)
    np.testing.assert_array_equal(two.astype(bool), mask)


@FUZZ
@given(labels=st.tuples(st.integers(1, 28), st.integers(1, 28)).flatmap(
           lambda s: arrays(np.uint8, s, elements=st.integers(0, 2))),
       n_classes=st.sampled_from((2, 3)), radius=st.integers(0, 6), rule=st.sampled_from(("article", "grow_inside")),
       holes=st.booleans(), largest=st.booleans())
def test_cleanup_invariants(labels, n_classes, radius, rule, holes, largest):
    if n_classes == 2:
        labels = np.minimum(labels, 1)
    result = cleanup(labels, n_classes, CleanupSettings(rule=rule, closing_radius_px=radius, fill_holes=holes,
                                                        largest_component=largest))
    for part in (result.lesion, result.border, result.inside):
        assert part.shape == labels.shape and part.dtype == np.bool_
    assert not (result.border & ~result.lesion).any()
    np.testing.assert_array_equal(result.inside, result.lesion & ~result.border)
    if not (labels > 0).any():
        assert not result.lesion.any()


NAME_PARTS = st.text(alphabet=st.sampled_from("abAB01_- .é"), min_size=1, max_size=8)
MASK_WORDS = st.sampled_from(("", "_mask", "_segmentation", "_gt", "_Lesion", "-label"))


@settings(max_examples=max(20, FUZZ_EXAMPLES // 8), deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(images=st.lists(NAME_PARTS, min_size=1, max_size=5, unique_by=str.casefold),
       words=st.lists(MASK_WORDS, min_size=5, max_size=5), extra=st.lists(NAME_PARTS, max_size=2),
       same=st.booleans())
def test_pairing_pairs_each_file_at_most_once(tmp_path_factory, images, words, extra, same):
    root = tmp_path_factory.mktemp("pairs")
    image_dir, mask_dir = root / "images", (root / "images" if same else root / "masks")
    image_dir.mkdir(exist_ok=True)
    mask_dir.mkdir(exist_ok=True)
    png = encode_png(np.zeros((2, 2), np.uint8))
    for index, stem in enumerate(images):
        (image_dir / f"{stem}.png").write_bytes(png)
        (mask_dir / f"{stem}{words[index] or ('_mask' if same else '')}.png").write_bytes(png)
    for stem in extra:
        (mask_dir / f"x{stem}_gt.png").write_bytes(png)
    try:
        report = pair_folders(image_dir, mask_dir)
    except PairingError as error:
        assert str(error)
        return
    used_images = [Path(p.image) for p in report.pairs]
    used_masks = [Path(p.mask) for p in report.pairs]
    assert len(set(used_images)) == len(used_images) and len(set(used_masks)) == len(used_masks)
    assert not set(used_images) & set(used_masks)
    assert all(p.exists() for p in used_images + used_masks)


def _zip_seed() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("set/images/a.png", encode_png(np.zeros((4, 4), np.uint8)))
        archive.writestr("set/masks/a.png", b"m" * 200)
        archive.writestr("set/readme.txt", "x")
    return buffer.getvalue()


ZIP_SEED = _zip_seed()


@st.composite
def mutated_zips(draw) -> bytes:
    data = bytearray(ZIP_SEED)
    for _ in range(draw(st.integers(1, 8))):
        position = draw(st.integers(0, len(data) - 1))
        if draw(st.booleans()):
            data[position] = draw(st.integers(0, 255))
        else:
            data[position:position + draw(st.integers(1, 4))] = draw(st.binary(max_size=4))
    return bytes(data)


@FUZZ
@given(data=st.one_of(mutated_zips(), st.binary(max_size=200)))
def test_zip_reader_lets_only_archive_error_escape_and_stays_inside(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("zip")
    destination = folder / "out"
    try:
        extraction = extract_zip(data, destination)
    except ArchiveError as error:
        assert str(error)
        assert not [p for p in destination.rglob("*") if p.is_file()]
        return
    root = destination.resolve()
    for path in extraction.files:
        assert path.resolve().is_relative_to(root) and path.is_file()
    assert sorted(p.name for p in folder.iterdir()) == ["out"]
