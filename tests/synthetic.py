"""Synthetic data of the tests: images, masks, datasets, segmenters without a network and study folders
without training; the one copy of each maker (import it as a module: ``from synthetic import disk``; the
tests folder is on ``sys.path`` under pytest). The dermoscopy-like picture and the ellipse are the package's
(:mod:`moleseg.tools.synthetic`)."""

from __future__ import annotations

import functools
import io
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from moleseg.core.cleanup import CleanupSettings
from moleseg.core.imagewrite import write_png
from moleseg.core.pairing import Pair
from moleseg.engine import studystats
from moleseg.engine.runs import write_history, write_json
from moleseg.tools.synthetic import ellipse

#: Colours (RGB) of the app tests' moles.
SKIN = (224, 172, 150)
MOLE = (90, 55, 40)


def disk(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    """Boolean mask (H, W) of the pixels within ``radius`` px of ``centre`` (row, col)."""
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2


def mole_image(height: int = 96, width: int = 112, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A dark ellipse on skin colour with a little noise: ``(image (H, W, 3) uint8, mask (H, W) bool)``."""
    rng = np.random.default_rng(seed)
    cy = height / 2 + rng.uniform(-0.08, 0.08) * height
    cx = width / 2 + rng.uniform(-0.08, 0.08) * width
    ry, rx = height * rng.uniform(0.2, 0.3), width * rng.uniform(0.2, 0.3)
    mask = ellipse((height, width), (cy, cx), (rx, ry))
    image = np.empty((height, width, 3), dtype=np.float64)
    image[:] = SKIN
    image[mask] = MOLE
    image += rng.normal(0.0, 5.0, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), mask


def png_bytes(array: np.ndarray) -> bytes:
    """``array`` encoded as a PNG file."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def make_dataset(folder: Path, count: int = 6, size: int = 96, mask_suffix: str = "") -> Path:
    """``folder/images/m<i>.png`` (:func:`mole_image`) and ``folder/masks/m<i><mask_suffix>.png`` (0/255)."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    for index in range(count):
        image, mask = mole_image(size, size, seed=index)
        Image.fromarray(image).save(folder / "images" / f"m{index}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(folder / "masks" / f"m{index}{mask_suffix}.png")
    return folder


def lesion_dataset(folder: Path, n: int = 8, size: int = 64, seed: int = 0, vary: bool = False,
                   names: list[str] | None = None) -> tuple[Path, Path]:
    """``n`` dermoscopy-like pairs (dark disk on light skin, ``size`` px square): ``folder/images/<i>.png``
    and ``folder/masks/<i>.png`` (or the file ``names`` given); returns (images dir, masks dir).

    Without ``vary`` every pair has the same disk (only the noise differs): every batch then has the same
    BatchNorm statistics, so the end-of-training BatchNorm check of a two-step training compares like with
    like and cannot fail by chance (with disks of random sizes it sometimes does).
    """
    rng = np.random.default_rng(seed)
    images, masks = folder / "images", folder / "masks"
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(names or [f"{i:03d}.png" for i in range(n)]):
        centre = rng.integers(size * 3 // 8, size * 5 // 8, 2) if vary else (size * 7 // 16, size // 2)
        radius = rng.integers(size // 6, size // 3) if vary else size * 7 // 32
        mask = disk((size, size), centre, radius)
        image = np.where(mask[..., None], np.array([90, 60, 40]), np.array([210, 180, 170]))
        image = np.clip(image + rng.integers(-10, 11, image.shape), 0, 255).astype(np.uint8)
        write_png(images / name, image)
        write_png(masks / name, mask)
    return images, masks


def lesion_scene(*, radius_px: float = 60.0, angle_deg: float = 0.0, shift_px: tuple[float, float] = (0.0, 0.0),
                  size_px: int = 320, seed: int = 0):
    """A textured skin image with a brown, slightly ragged lesion, seen rotated and shifted.

    The scene (skin texture, pigment dots, the lesion of mean radius ``radius_px``) is drawn on a canvas
    twice the size, rotated by ``angle_deg`` (counter-clockwise as displayed) about the canvas centre,
    moved by ``shift_px`` (dx, dy), and the central ``size_px`` square is cut out, so no edge is blank.
    The lesion's texture is the same for every radius (grow the radius to grow the lesion).

    Returns
    -------
    image : (size_px, size_px, 3) uint8
    lesion : (size_px, size_px) bool
        The true lesion.
    """
    image, lesion = _lesion_scene(float(radius_px), float(angle_deg), tuple(map(float, shift_px)), size_px, seed)
    return image.copy(), lesion.copy()


@functools.lru_cache(maxsize=64)
def _lesion_scene(radius_px: float, angle_deg: float, shift_px: tuple[float, float], size_px: int, seed: int):
    """:func:`lesion_scene`, drawn once per test process for the same arguments (the tests draw the same
    scenes many times; a caller gets its own copies)."""
    import cv2
    import numpy as np

    canvas = 2 * size_px
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.standard_normal((canvas, canvas)).astype(np.float32), (0, 0), 3.0)
    noise = noise / noise.std()
    fine = cv2.GaussianBlur(rng.standard_normal((canvas, canvas)).astype(np.float32), (0, 0), 1.0)
    fine = fine / fine.std()
    skin = np.stack([215 + 10 * noise + 5 * fine, 170 + 10 * noise + 5 * fine, 150 + 10 * noise + 5 * fine], -1)
    for _ in range(250):  # freckle-like dots all over the skin: texture the features can hold on to
        x, y = rng.uniform(0, canvas, 2)
        cv2.circle(skin, (int(x), int(y)), int(rng.integers(1, 4)), (170.0, 120.0, 100.0), -1)
    rows, cols = np.mgrid[:canvas, :canvas].astype(np.float32)
    centre = canvas / 2
    angles = np.arctan2(rows - centre, cols - centre)
    wobble = 1 + 0.06 * np.sin(3 * angles + 0.5) + 0.04 * np.sin(5 * angles + 1.3)
    lesion = np.hypot(rows - centre, cols - centre) <= radius_px * wobble
    pigment = np.stack([110 + 12 * noise, 65 + 10 * noise, 45 + 8 * noise], -1)
    image = np.where(lesion[..., None], pigment, skin)
    matrix = cv2.getRotationMatrix2D((centre, centre), angle_deg, 1.0)
    matrix[:, 2] += shift_px
    image = cv2.warpAffine(np.clip(image, 0, 255).astype(np.float32), matrix, (canvas, canvas),
                           flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
    lesion = cv2.warpAffine(lesion.astype(np.float32), matrix, (canvas, canvas), flags=cv2.INTER_LINEAR) >= 0.5
    start = (canvas - size_px) // 2
    crop = slice(start, start + size_px)
    return np.clip(np.round(image[crop, crop]), 0, 255).astype(np.uint8), lesion[crop, crop]


# Fake segmenters (no network) and the pairs they are scored on

def two_class(foreground: np.ndarray) -> np.ndarray:
    """Probabilities (H, W, 2) float32 of a two-class network whose foreground probability is
    ``foreground`` (H, W), in [0, 1]."""
    return np.stack([1 - foreground, foreground], axis=-1).astype(np.float32)


class RedChannelSegmenter:
    """Two classes; the foreground probability of a pixel is its red value / 255 (no network)."""

    n_classes = 2
    class_names = ("background", "foreground")
    name = "red"

    def __init__(self, info: dict | None = None) -> None:
        self.info = info or {}
        self.cleanup_defaults = CleanupSettings(closing_radius_px=0, fill_holes=False, largest_component=False)

    def predict_probabilities(self, images):
        return [two_class(image[..., 0].astype(np.float32) / 255.0) for image in images]


class ThreeClassRed(RedChannelSegmenter):
    """Three classes: the red value / 255 is the INSIDE probability, BORDER is never predicted (a lesion
    model, not cells mode)."""

    n_classes = 3
    class_names = ("back", "border", "inside")

    def predict_probabilities(self, images):
        lesion = [image[..., 0].astype(np.float32) / 255.0 for image in images]
        return [np.stack([1 - p, np.zeros_like(p), p], axis=-1) for p in lesion]


def disk_pairs(tmp_path: Path) -> list[Pair]:
    """Four 40 x 40 images of a disk: three drawn crisply (probability 1 inside, 0 outside), one blurred
    so that a wide ring is undecided and the arg-max lesion is too small."""
    truth = disk((40, 40), (20, 20), 12)
    rows, cols = np.ogrid[:40, :40]
    distance = np.sqrt((rows - 20) ** 2 + (cols - 20) ** 2)
    blurred = np.clip((12 - distance) / 12 + 0.3, 0, 1)  # p = 0.5 at distance 9.6 px, not 12
    pairs = []
    for index, foreground in enumerate([truth.astype(float)] * 3 + [blurred]):
        image = np.zeros((40, 40, 3), np.uint8)
        image[..., 0] = np.round(foreground * 255).astype(np.uint8)
        image_path, mask_path = tmp_path / f"{index}.png", tmp_path / f"{index}_mask.png"
        write_png(image_path, image)
        write_png(mask_path, truth)
        pairs.append(Pair(image=image_path, mask=mask_path, rule="test", image_size=None, mask_size=None))
    return pairs


class TruthSegmenter(RedChannelSegmenter):
    """Predicts the true disk of :func:`disk_pairs` whatever the image."""

    def predict_probabilities(self, images):
        return [two_class(disk((40, 40), (20, 20), 12).astype(np.float32)) for _ in images]


# Study files and study runs that never trained

def write_study(path: Path, **fields) -> Path:
    """A study file at ``path`` (YAML): two solvers at 32 px, one epoch, data in train/ and test/ beside it;
    ``fields`` replace its top-level entries."""
    document = {"name": "t", "data": {"train": {"images": "train/images", "masks": "train/masks"},
                                      "test": {"images": "test/images", "masks": "test/masks"}},
                "base": {"epochs": 1, "batch_size": 2, "model": {"input_size": 32}},
                "factors": {"solver": ["sgdm", "adam"]}}
    document.update(fields)
    path.write_text(yaml.safe_dump(document))
    return path


def fake_run(out: Path, run_id: str, per_image: dict[str, float], seconds: float = 10.0) -> None:
    """The files of a finished study run ``run_id`` in the study folder ``out``, without training: its
    evaluation (F-measure in [0, 1] per image name), state (``seconds`` of training) and one-epoch history."""
    run = out / studystats.RUNS_SUBDIR / run_id
    values = list(per_image.values())
    write_json(run / "evaluation.json", {
        "fm": {"mean": float(np.mean(values)), "max": max(values), "min": min(values), "std": float(np.std(values))},
        "cm": {"mean": 0.9}, "cr": {"mean": 0.8}, "jaccard": {"mean": 0.7}, "best_val_fm": values[0],
        "per_image": [{"image": k, "fm": v} for k, v in per_image.items()]})
    write_json(run / "state.json", {"epoch": 1, "training_seconds": seconds})
    write_history(run / "history.csv", [{"epoch": 1, "val_fm": values[0]}])


# A tiny network (built once per seed in a test session)

#: Input size (px) of :func:`tiny_model_file`'s network.
TINY_MODEL_SIZE = 32


@functools.cache
def _tiny_model_bytes(seed: int, size: int, n_classes: int, classifier_bias: tuple[float, ...] | None) -> bytes:
    import tempfile

    import keras

    from moleseg.network.build import ModelConfig, build_model
    from moleseg.network.io import save_model

    keras.utils.set_random_seed(seed)
    # ResNet18: half MobileNetV2's layers, so its graphs (folded, ONNX, SavedModel) are traced in half the time
    config = ModelConfig(backbone="resnet18", input_size=size, n_classes=n_classes, decoder_width=8,
                         aspp_rates=(1, 2, 3))
    model = build_model(config, weights="none")
    if classifier_bias is not None:
        model.get_layer("classifier").bias.assign(np.array(classifier_bias, np.float32))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "tiny.keras"
        save_model(model, path, {"name": "tiny", "n_classes": n_classes, "input_size": size,
                                 "model": config.to_dict()})
        return path.read_bytes()


def tiny_model_file(folder: Path, seed: int = 0, *, size: int = TINY_MODEL_SIZE, n_classes: int = 3,
                    classifier_bias: tuple[float, ...] | None = None) -> Path:
    """``folder/tiny<seed>.keras``: a small DeepLabV3+ on ResNet18 with ``n_classes`` classes at ``size``
    px and random weights drawn from ``seed`` (its classifier's biases set to ``classifier_bias`` when
    given); the same file for the same arguments in one test session, built once."""
    path = folder / f"tiny{seed}.keras"
    path.write_bytes(_tiny_model_bytes(seed, size, n_classes, classifier_bias))
    return path


def dicom_bytes(pixels: np.ndarray, *, photometric: str = "RGB", spacing: tuple[float, float] | None = (0.02, 0.02),
                sop_class: str | None = None, compress: str | None = None, patient_name: str = "Doe^Jane") -> bytes:
    """A DICOM file of ``pixels`` (RGB or YBR_FULL samples; Dermoscopic Photography unless ``sop_class``) with a
    patient (``patient_name``, ID P123) and a spacing; ``compress``: a transfer syntax (JPEG Baseline: a JPEG
    made by Pillow)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import DermoscopicPhotographyImageStorage, ExplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid

    sop_class = sop_class or DermoscopicPhotographyImageStorage
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID = sop_class
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID = generate_uid()
    dataset.StudyInstanceUID, dataset.SeriesInstanceUID = generate_uid(), generate_uid()
    dataset.PatientName, dataset.PatientID, dataset.StudyDate, dataset.Modality = patient_name, "P123", "20260102", "XC"
    dataset.Rows, dataset.Columns = pixels.shape[:2]
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation, dataset.PlanarConfiguration = 3, photometric, 0
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 8, 8, 7, 0
    if spacing is not None:
        dataset.PixelSpacing = list(spacing)
    if compress == JPEGBaseline8Bit:  # a JPEG made by Pillow, as a camera's: YBR_FULL_422
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", quality=95)
        dataset.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        dataset.PhotometricInterpretation = "YBR_FULL_422"
        dataset.PixelData = encapsulate([buffer.getvalue()])
        dataset["PixelData"].VR = "OB"
    else:
        dataset.PixelData = pixels.tobytes()
        if compress is not None:
            dataset.compress(compress)
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
