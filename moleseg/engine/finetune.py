"""Fine-tuning a model on the user's corrections dataset (:mod:`moleseg.core.dataset`), optionally with the
data it was trained on, as a training configuration for :func:`moleseg.engine.launch.start_training` or
:class:`moleseg.network.train.TrainConfig`. No TensorFlow here.

The new training starts from the model file's weights (``weights``), keeps its network, targets,
cleanup and inference options (its ``moleseg.json`` training configuration) and trains for a few epochs
at a small learning rate (:data:`moleseg.core.config.FINETUNE_EPOCHS`, ``FINETUNE_LEARNING_RATE``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from moleseg.core import options
from moleseg.core.config import FINETUNE_EPOCHS, FINETUNE_LEARNING_RATE, corrections_dir
from moleseg.core.dataset import IMAGES, MASKS
from moleseg.core.modelinfo import ModelFileError, read_info
from moleseg.core.pairing import PairingError, pair_folders
from moleseg.core.roots import OutsideRootsError, resolve_inside_roots

__all__ = ["corrections_pairs", "finetune_config", "training_folders"]


def corrections_pairs(folder: str | Path | None = None) -> int:
    """Number of image/mask pairs in the corrections dataset (0 when it is missing or empty)."""
    folder = Path(folder or corrections_dir())
    if not (folder / IMAGES).is_dir() or not (folder / MASKS).is_dir():
        return 0
    try:
        return len(pair_folders(folder / IMAGES, folder / MASKS).pairs)
    except (PairingError, OSError):
        return 0


def _checked(folder: str, roots: Sequence[Path] | None) -> str | None:
    """``folder`` when it is a folder (resolved inside ``roots`` when given), else None."""
    if roots is None:
        return folder if Path(folder).is_dir() else None
    if not Path(folder).is_absolute():
        return None
    try:
        return str(resolve_inside_roots(folder, roots))
    except OutsideRootsError:
        return None


def training_folders(model: str | Path, roots: Sequence[Path] | None = None) -> list[tuple[str, str]]:
    """``(images, masks)`` folders a model file was trained on, as its ``moleseg.json`` records them, those
    that still exist (and, with ``roots``, lie inside them: :func:`moleseg.core.roots.resolve_inside_roots`,
    for a model file that is not trusted). Masks not recorded are looked for in a ``masks`` folder beside an
    ``images`` one."""
    try:
        config = read_info(model).train_config
    except ModelFileError:
        return []
    images = [str(folder) for folder in config.get("images") or []]
    masks = [str(folder) for folder in config.get("masks") or []]
    if len(masks) != len(images):
        masks = [str(Path(folder).parent / MASKS) if Path(folder).name == IMAGES else "" for folder in images]
    checked = [(_checked(image, roots), _checked(mask, roots)) for image, mask in zip(images, masks) if mask]
    return [(image, mask) for image, mask in checked if image and mask]


def finetune_config(model: str | Path, corrections: str | Path | None = None, *, with_training_data: bool = False,
                    epochs: int = FINETUNE_EPOCHS, learning_rate: float = FINETUNE_LEARNING_RATE,
                    name: str | None = None, roots: Sequence[Path] | None = None) -> dict[str, Any]:
    """The training configuration that fine-tunes ``model`` on the corrections dataset.

    Parameters
    ----------
    model : path
        A moleseg ``.keras`` file (its weights are the start, its options are kept).
    corrections : path, optional
        The dataset folder (``images/`` + ``masks/``); default :func:`moleseg.core.config.corrections_dir`.
    with_training_data : bool
        Also train on the folders the model was trained on (:func:`training_folders`), so that it does not
        forget them.
    epochs, learning_rate
        Epochs and learning rate per step.
    name : str, optional
        Run name; default ``<model stem>-corrections``.
    roots : sequence of paths, optional
        The folders the training data may come from (a browser user's: the data roots and their own
        dataset); the model's recorded folders outside them are left out. None: every recorded folder.

    Raises
    ------
    ValueError
        A model file that cannot be read, or a corrections folder without ``images/`` and ``masks/``.
    """
    model = Path(model)
    folder = Path(corrections or corrections_dir())
    try:
        info = read_info(model)
    except ModelFileError as error:
        raise ValueError(f"{model}: cannot fine-tune it ({error})") from error
    if not (folder / IMAGES).is_dir() or not (folder / MASKS).is_dir():
        raise ValueError(f"{folder}: no {IMAGES}/ and {MASKS}/ folders: save corrected images there first "
                         "(Analyse page, 'Save to my dataset')")
    config = options.merged(info.train_config)
    pairs = [(str(folder / IMAGES), str(folder / MASKS))]
    if with_training_data:
        pairs += [pair for pair in training_folders(model, roots) if Path(pair[0]) != folder / IMAGES]
    config.update({
        "weights": str(model.resolve()), "images": [image for image, _ in pairs], "masks": [mask for _, mask in pairs],
        "validation_images": [], "validation_masks": [], "test_images": [], "test_masks": [],
        "epochs": int(epochs), "learning_rate": float(learning_rate), "cache_dir": None,
        "name": name or f"{model.stem}-corrections",
    })
    return config
