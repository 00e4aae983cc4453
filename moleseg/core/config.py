"""Every default of moleseg, in one place, with its unit in its name."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

from moleseg.core import settings
from moleseg.core.memorylimit import available_memory_bytes, memory_limit_bytes

#: Largest image accepted by the reader, in pixels (width x height), checked from the file's header
#: before decoding (a 6000 x 4000 camera image is 24 MP).
DEFAULT_MAX_PIXELS: int = 25_000_000
#: Peak memory of analysing one image, in bytes per pixel (measured: ``moleseg predict --model classical``
#: on a 7000 x 7000 PNG peaked at about 2.4 GB, 49 bytes per pixel).
ANALYSIS_BYTES_PER_PIXEL: int = 50
#: Most files one Analyse upload takes (its files, or a folder's images): each is held in the session's memory (up
#: to Streamlit's per-file ``server.maxUploadSize``) and goes through the network of the one shared server; 200 is
#: a day's clinic, and more is refused whole, with the count and this limit: none analysed.
MAX_UPLOAD_FILES: int = 200
#: Largest pixel size a user may give, in mm per px (the app's inputs, a device profile, ``--pixel-size-mm``): a
#: 1000 px picture would be 10 m wide; a larger value is a unit mistake (micrometres typed as millimetres).
MAX_PIXEL_SIZE_MM: float = 10.0
#: Smallest image side analysed, in pixels: smaller images are refused with "image too small".
MIN_IMAGE_SIDE_PX: int = 32
#: Earliest visit date the Analyse page takes (archive photographs; Streamlit's own range is ten years).
EARLIEST_VISIT_DATE: date = date(1950, 1, 1)
#: Network input side, in px, at which a training's px sizes (border width, closing radius) are given; they
#: scale with the actual input size (:func:`moleseg.core.options.scaled_px`).
SIZE_REFERENCE_PX: int = 256
#: Width of the BORDER band of three-class targets, in pixels (radius of the structuring element).
DEFAULT_BORDER_WIDTH_PX: int = 4
#: Shape of the structuring element used to erode masks into BORDER / INSIDE.
DEFAULT_SHAPE: str = "diamond"
#: Radius of the disk that closes the cleaned border (the article: 15).
DEFAULT_CLOSING_RADIUS_PX: int = 15
#: Images a network predicts at once when a folder is analysed, evaluated or predicted (CLI and app).
INFERENCE_BATCH_SIZE: int = 4
#: Number of classes of the dermoscopy (moles) targets: BACK, BORDER, INSIDE.
DEFAULT_CLASS_COUNT: int = 3

#: Ceilings of the training options a study file, a ``config.json``, ``moleseg train`` or the Train page can set
#: (:mod:`moleseg.core.options` takes them; more is refused with one sentence). Largest network input side, in px:
#: activations grow with the square of the side, 16x those of the default 256 px, and dermoscopy borders gain
#: nothing from more (the images themselves are 768 x 560 in PH2).
MAX_INPUT_SIZE_PX: int = 1024
#: Largest mini-batch, in images: a batch is held in memory at once, and 256 is already beyond what one GPU
#: holds at the largest input (batch statistics settle long before).
MAX_BATCH_SIZE: int = 256
#: Most passes over the training pairs: the shipped models trained 30 and 40; 1000 is the most a study's factor
#: may ask of a shared machine (many times that is weeks of its CPUs or its one GPU).
MAX_EPOCHS: int = 1000
#: Most datasets (folders) one folder list of a training takes (its training, validation or test images, and their
#: masks): each is resolved, searched and checked for links on every run of the Train page, some 2 ms a line, so a
#: pasted list of 10,000 lines (30 kB) held the server's CPU for 14 s a run, every user's pages waiting.
MAX_DATASETS: int = 100

#: A lesion counts as reaching the image's edge where it comes within this share (0..1) of the image's
#: shorter side of the frame (see :func:`moleseg.core.edgecontact.edge_contact_ratio`).
EDGE_BAND_SHARE: float = 0.03
#: A lesion is flagged "may extend beyond the picture" (its area and diameters are then lower bounds) when
#: the length of image edge it reaches is at least this share (0..1) of its equivalent diameter. Calibrated
#: with :data:`EDGE_BAND_SHARE` on the 211 shared training moles (models/dermoscopy.md, "May extend beyond
#: the picture"): it marks 48 of the 50 lesions whose true mask touches the frame.
EDGE_CONTACT_RATIO: float = 0.05
#: Lesion probabilities (``1 - P(BACK)``, 0..1) between these two count as undecided pixels for the
#: per-image confidence (see :func:`moleseg.engine.segmenter.border_confidence`).
UNDECIDED_PROBABILITY_RANGE: tuple[float, float] = (0.2, 0.8)
#: Share (0..1) of the validation images, the least confident, that the confidence threshold flags
#: "check this border" (see :mod:`moleseg.engine.calibrate`).
DEFAULT_CHECK_SHARE: float = 0.15
#: An image whose FM is below this (0..1) counts as badly segmented when the confidence is calibrated.
BAD_IMAGE_FM: float = 0.85
#: An image loses to the classical baseline when its FM is more than this (0..1) below the baseline's.
BASELINE_MARGIN: float = 0.1

#: Longer side in px above which cleanup runs on a resized copy (its radii scaled alike).
CLEANUP_MAX_SIDE_PX: int = 1024

#: A session folder (uploads unpacked on the server) untouched for this long is removed by the app's sweep,
#: in seconds. An open browser tab touches its folder every :data:`SESSION_HEARTBEAT_S`, so this is how long
#: a folder outlives a closed tab (or a crashed server, at the next start).
SESSION_IDLE_TIMEOUT_S: float = 10 * 60.0
#: How often an open browser tab marks its session folder as in use, in seconds.
SESSION_HEARTBEAT_S: float = 60.0
#: Longest a sign-in with Streamlit's ``st.login`` is believed, in seconds from its identity token's issue time:
#: Streamlit keeps it for 30 days and checks no time in it, so an account the clinic closes would stay in.
SIGN_IN_MAX_AGE_S: float = 12 * 3600.0
#: How often the app's sweep looks for idle session folders, in seconds.
SESSION_SWEEP_INTERVAL_S: float = 60.0
#: Media ids (the pictures and downloads of ``/media/<id>`` URLs) the media gate remembers as sent to one owner (a
#: user named by the proxy, or one browser): past this the oldest is forgotten, and its URL is refused to them until
#: a page sends it again. A day's clinic of 200 analysed images is some 1,000 (a picture and downloads each).
MEDIA_IDS_PER_OWNER: int = 1000
#: Owners the media gate remembers (:class:`moleseg.app.mediagate.SentMedia`): past this the one sent media longest
#: ago is forgotten whole. Measured at about 155 bytes per id (tracemalloc, 500 owners of 1000 ids: 74 MiB), the gate
#: then holds at most some 78 MB, and at most 57 MB (54 MiB) more for the ids owners named themselves (as many
#: owners and ids per owner; only a hand-made client names any).
MEDIA_OWNERS: int = 500
#: Bytes of uploaded files one user's open pages may hold in the server's memory at once (Streamlit keeps each file
#: until its page removes it or its session ends; :mod:`moleseg.app.uploads`): a day's clinic of
#: MAX_UPLOAD_FILES photographs of a few MB each, beside a dataset ZIP on the Prepare page, with room.
UPLOAD_BYTES_PER_USER: int = 2 * 1024**3

#: Label values of three-class targets.
BACK: int = 0
BORDER: int = 1
INSIDE: int = 2
CLASS_NAMES_3: tuple[str, ...] = ("back", "border", "inside")
CLASS_NAMES_2: tuple[str, ...] = ("background", "foreground")

#: zlib level (0..9) of the PNGs moleseg writes: 1 encodes an overlay several times faster than Pillow's
#: default 6 for slightly larger files (masks and class maps compress well at any level; ``docs/performance.md``).
PNG_COMPRESSION_LEVEL = 1
#: zlib level (0..9) of the overlay PNGs of an analysis (``<stem>_overlay.png``, a picture, encoded for every
#: image): 0 stores the pixels unchanged in about 2 ms, against about 13 ms at level 1, for a file about
#: twice as large (1.3 MB against 0.7 MB for a PH2 image; still lossless; ``docs/performance.md``).
OVERLAY_PNG_COMPRESSION_LEVEL = 0
#: How the file of each result of an analysis of image ``<stem>`` ends: the overlay, the lesion mask (0 / 255),
#: the class map, the PDF report and the DICOM bundle (:func:`result_file_name`).
RESULT_FILE_ENDINGS: dict[str, str] = {"overlay": "_overlay.png", "mask": "_mask.png", "classes": "_classes.png",
                                       "report": "_report.pdf", "dicom": "_dicom.zip"}


def result_file_name(stem: str, kind: str) -> str:
    """``<stem>`` with the ending of the result ``kind`` (a key of :data:`RESULT_FILE_ENDINGS`)."""
    return stem + RESULT_FILE_ENDINGS[kind]


#: File extensions read as images (lower case, with the dot).
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".dcm")

#: The ``moleseg`` package folder, and the folder holding it: the checkout's root, or ``site-packages``.
_PACKAGE_DIR: Path = Path(__file__).resolve().parents[1]
_PACKAGE_PARENT: Path = _PACKAGE_DIR.parent
#: True when moleseg runs from a source checkout (``PYTHONPATH`` or ``pip install -e .``), not from a wheel.
FROM_CHECKOUT: bool = (_PACKAGE_PARENT / "pyproject.toml").is_file()
#: The user's data folder, the default of the app's own data folder (``data_dir`` of
#: :mod:`moleseg.core.settings`): ``$XDG_DATA_HOME/moleseg`` (``~/.local/share/moleseg``), never the program's folder.
USER_DATA_DIR: Path = settings.user_data_dir()

#: Folder of the shipped models: the checkout's ``models/``, or ``moleseg/models`` inside an installed wheel
#: (the wheel carries them as package data); ``MOLESEG_MODELS_DIR`` overrides it.
MODELS_DIR: Path = Path(os.environ.get("MOLESEG_MODELS_DIR")
                        or (_PACKAGE_PARENT if FROM_CHECKOUT else _PACKAGE_DIR) / "models")
#: File name of the shipped mole model in the models folder: the default model of the app and the CLI.
DERMOSCOPY_MODEL: str = "dermoscopy.keras"
#: File name of the shipped two-class (cells, nuclei) model in the models folder.
CELLS_MODEL: str = "cells.keras"
#: The shipped model of each number of classes, by file name: a new training of that many classes
#: fine-tunes from it when it is installed.
SHIPPED_MODELS: dict[int, str] = {DEFAULT_CLASS_COUNT: DERMOSCOPY_MODEL, 2: CELLS_MODEL}
#: The classical segmenter (thresholding, no network) of each number of classes, by the name that loads it
#: (:func:`moleseg.network.loading.load_segmenter`) and that it carries.
CLASSICAL_MODELS: dict[int, str] = {DEFAULT_CLASS_COUNT: "classical", 2: "classical2"}
#: Every name that loads a classical segmenter, with its number of classes: those of :data:`CLASSICAL_MODELS` and
#: ``classical3`` (the three classes spelled out, as ``classical2``).
CLASSICAL_NAMES: dict[str, int] = {**{name: n for n, name in CLASSICAL_MODELS.items()}, "classical3": 3}
#: What the app and the command line call a classical segmenter scored beside a model.
BASELINE_NAME: str = "classical baseline"
#: The study files shipped with moleseg: the checkout's ``studies/``, or ``moleseg/studies`` inside an installed
#: wheel (package data, as the models).
STUDIES_DIR: Path = (_PACKAGE_PARENT if FROM_CHECKOUT else _PACKAGE_DIR) / "studies"
#: Studies one user's runs folder may have running at once (each a background process, some 60 MB, waiting its
#: turn for the training lock): the app refuses another, so that one user cannot fill the server's memory.
MAX_RUNNING_STUDIES: int = 2
#: Seconds a measure of a user's disk usage (for the ``user_quota_gb`` setting) is believed before the folders are
#: walked again: several saves in a row cost one walk, and a user over quota sees space they freed within this.
USER_USAGE_CACHE_S: float = 5.0
#: Background tasks (evaluations, dataset scans, their own models' preparations) one user may have running or
#: waiting at once in the server's task registry (:class:`moleseg.engine.tasks.TaskRegistry`, two worker threads):
#: another is refused until one ends, so that one user cannot queue work ahead of everyone.
MAX_TASKS_PER_USER: int = 2
#: Datasets unpacked from uploaded ZIPs one user may hold at once, one per browser session (each up to the
#: uploads' budget, 4 GiB, in the server's temporary folder until its session ends): another session's upload is
#: refused, since a script can open any number of sessions.
MAX_SESSION_DATASETS: int = 2
#: Seconds the app waits for a study process it started to take its folder's lock (a start counted at once).
STUDY_START_WAIT_S: float = 30.0
#: Seconds a study process waits for its folder's lock: another start's check holds it for an instant.
STUDY_LOCK_WAIT_S: float = 0.5
#: What a study's ``--data-root`` option is (the command line's and the background study process's help).
STUDY_DATA_ROOT_HELP: str = ("folder the study's data paths are relative to (default: the root its data section "
                             "names, from the file's folder; without one, that folder)")
#: The Streamlit app's entry point, ``app.py`` beside the package in a checkout (a wheel does not carry the app).
APP_FILE: Path = _PACKAGE_PARENT / "app.py"
#: What ``moleseg serve`` runs: ``app.py`` as Streamlit's ASGI app behind :class:`moleseg.app.mediagate.MediaGate`
#: (``serve_app.py`` beside it).
SERVE_FILE: Path = _PACKAGE_PARENT / "serve_app.py"
#: Environment variable naming the app's own data folder (records, runs, "My dataset").
DATA_DIR_ENV: str = settings.ENV_PREFIX + "DATA_DIR"
#: Sub-folder of the data folder holding the training runs (the app lists them in its model picker).
RUNS_FOLDER_NAME: str = "runs"
#: Sub-folder of the data folder holding the user's own dataset of corrected (or accepted) lesions.
CORRECTIONS_FOLDER_NAME: str = "corrections"
#: File name of the records database inside the data folder.
RECORDS_DB_NAME: str = "records.sqlite"


def data_dir() -> Path:
    """The app's own data folder (saved records, runs, "My dataset"): ``MOLESEG_DATA_DIR`` when set now (read
    at every call), else the settings' ``data_dir`` (:func:`moleseg.core.settings.load_settings`)."""
    value = os.environ.get(DATA_DIR_ENV)
    return Path(value) if value else settings.load_settings().data_dir


def models_dir() -> Path:
    """:data:`MODELS_DIR`, or ``MOLESEG_MODELS_DIR`` when it is set now (read at every call)."""
    value = os.environ.get("MOLESEG_MODELS_DIR")
    return Path(value) if value else MODELS_DIR


def installed_dermoscopy_model(models: str | Path | None = None) -> Path | None:
    """The shipped dermoscopy model's file in ``models`` (default :func:`models_dir`), when it is installed."""
    path = Path(models or models_dir()) / DERMOSCOPY_MODEL
    return path if path.is_file() else None


def default_model_spec(models: str | Path | None = None) -> str:
    """The model the app and the command line use unless told otherwise: the shipped dermoscopy model when it
    is installed in ``models`` (default :func:`models_dir`), else the three-class classical baseline (a
    shipped cells model is never the default of a mole tool)."""
    shipped = installed_dermoscopy_model(models)
    return str(shipped) if shipped else CLASSICAL_MODELS[DEFAULT_CLASS_COUNT]


def cache_dir() -> Path:
    """Folder of moleseg's caches (decoded training examples, compiled inference graphs): ``MOLESEG_CACHE``
    when it is set now (read at every call), else ``~/.cache/moleseg``."""
    return settings.cache_root()


#: Sub-folder of :func:`cache_dir` holding the resized training examples; a named cache of the Train page
#: is a sub-folder of it.
EXAMPLES_CACHE_NAME: str = "examples"


def example_cache_dir() -> Path:
    """Folder of the cached training examples: :data:`EXAMPLES_CACHE_NAME` in :func:`cache_dir`."""
    return cache_dir() / EXAMPLES_CACHE_NAME


def runs_dir() -> Path:
    """Folder of the training runs: ``MOLESEG_RUNS_DIR`` when it is set now (read at every call), else
    :data:`RUNS_FOLDER_NAME` in :func:`data_dir`."""
    value = os.environ.get("MOLESEG_RUNS_DIR")
    return Path(value) if value else data_dir() / RUNS_FOLDER_NAME


#: Share of the memory the server may use (:func:`moleseg.core.memorylimit.memory_limit_bytes`: the machine's or
#: its container's limit, whichever is smaller) that the analyses one user's open Analyse pages hold may take
#: together on a shared server (:class:`moleseg.app.heldmemory.HeldAnalyses`): each holds its image, the network's
#: probabilities, its masks and pictures (``moleseg.app.heldmemory.HELD_BYTES_PER_PIXEL`` a pixel) however small
#: its file, so that 200 files of a few kB each, in as many tabs as a script opens, took all of it, and every other user's
#: images were refused as too large for the memory left.
ANALYSIS_MEMORY_SHARE: float = 0.25
#: The analyses' share of one user, in bytes, when the memory the server may use cannot be read.
ANALYSIS_BYTES_UNKNOWN_MEMORY: int = 8 * 1024**3


def analysis_bytes_per_user(root: Path = Path("/")) -> int:
    """Bytes of analyses one user's open Analyse pages may hold at once on a shared server:
    :data:`ANALYSIS_MEMORY_SHARE` of the memory the server may use (``root``: where ``/proc`` and ``/sys`` are
    read, :func:`moleseg.core.memorylimit.memory_limit_bytes`), or :data:`ANALYSIS_BYTES_UNKNOWN_MEMORY`."""
    total = memory_limit_bytes(root)
    return ANALYSIS_BYTES_UNKNOWN_MEMORY if total is None else int(total * ANALYSIS_MEMORY_SHARE)


def max_image_pixels() -> int:
    """Largest image the readers accept now, in pixels: :data:`DEFAULT_MAX_PIXELS`, lowered to what the
    available memory can analyse (``available / ANALYSIS_BYTES_PER_PIXEL``, the machine's or the container's,
    :func:`moleseg.core.memorylimit.available_memory_bytes`) on a machine short of memory."""
    available = available_memory_bytes()
    if available is None:
        return DEFAULT_MAX_PIXELS
    return max(1, min(DEFAULT_MAX_PIXELS, available // ANALYSIS_BYTES_PER_PIXEL))


def class_names(n_classes: int) -> tuple[str, ...]:
    """Names of the classes of a two- or three-class model."""
    if n_classes == 3:
        return CLASS_NAMES_3
    if n_classes == 2:
        return CLASS_NAMES_2
    raise ValueError(f"moleseg models have 2 or 3 classes, not {n_classes}")


def corrections_dir() -> Path:
    """Folder of the user's own dataset ("My dataset": ``images/`` + ``masks/`` of corrected or accepted
    lesions): ``MOLESEG_CORRECTIONS_DIR`` when it is set now (read at every call), else
    :data:`CORRECTIONS_FOLDER_NAME` in :func:`data_dir`."""
    value = os.environ.get("MOLESEG_CORRECTIONS_DIR")
    return Path(value) if value else data_dir() / CORRECTIONS_FOLDER_NAME

#: Fine-tuning a model on the corrections dataset: epochs and learning rate (per step; a tenth of a
#: training from ImageNet, so that a few corrected images adjust the model without undoing it).
FINETUNE_EPOCHS: int = 8
FINETUNE_LEARNING_RATE: float = 1e-4

#: Fewest simulated second photographs of each visit that estimate a lesion's own measurement noise (a
#: variance needs two values); 0 passes means the published repeatability alone.
MIN_NOISE_PASSES: int = 2
#: Most simulated second photographs of each visit: 2 x 100 segmentations take about 2 minutes on 2 CPU cores
#: (docs/repeatability.md); a larger number would run for hours without a word.
MAX_NOISE_PASSES: int = 100
