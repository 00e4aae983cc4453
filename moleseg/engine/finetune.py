"""Fine-tuning a model on the user's corrections dataset (:mod:`moleseg.core.dataset`), optionally with the
data it was trained on, as a training configuration for :func:`moleseg.engine.launch.start_training` or
:class:`moleseg.network.train.TrainConfig`. No TensorFlow here.

The new training starts from the model file's weights (``weights``), keeps its network, targets,
cleanup and inference options (its ``moleseg.json`` training configuration) and trains for a few epochs
at a small learning rate (:data:`moleseg.core.config.FINETUNE_EPOCHS`, ``FINETUNE_LEARNING_RATE``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from moleseg.core import options
from moleseg.core.config import FINETUNE_EPOCHS, FINETUNE_LEARNING_RATE, corrections_dir
from moleseg.core.dataset import IMAGES, MASKS, read_provenance
from moleseg.core.modelinfo import ModelFileError, read_info
from moleseg.core.pairing import PairingError, pair_folders, split_sizes
from moleseg.core.roots import OutsideRootsError, check_links_inside, resolve_inside_roots
from moleseg.core.words import count_of
from moleseg.engine.runs import RunFiles, read_json, write_json

__all__ = ["BaseComparison", "FinetunePlan", "corrections_pairs", "finetune_config", "finetune_plan", "inherited_image_hashes",
           "read_base_comparison", "training_folders"]


def corrections_pairs(folder: str | Path | None = None) -> int:
    """Number of image/mask pairs in the corrections dataset (0 when it is missing or empty)."""
    folder = Path(folder or corrections_dir())
    if not (folder / IMAGES).is_dir() or not (folder / MASKS).is_dir():
        return 0
    try:
        return len(pair_folders(folder / IMAGES, folder / MASKS).pairs)
    except (PairingError, OSError):
        return 0


def _corrected_by_hand(folder: Path, stem: str) -> bool:
    """Whether the saved pair ``stem`` was corrected by hand (its provenance record says so; False when it
    was accepted as the model drew it, or has no readable record)."""
    return (read_provenance(folder, stem) or {}).get("corrected_by_hand") is True


@dataclass(frozen=True)
class FinetunePlan:
    """What a fine-tune on the corrections dataset would train and validate on, said before it starts.

    Attributes
    ----------
    pairs : int
        Image/mask pairs in the dataset (corrected by hand or accepted as the model drew them).
    corrected : int
        Of them, those corrected by hand.
    n_train, n_validation : int
        The split of the pairs the training makes (0, 0 when there are too few: :attr:`ready` is False).
    minimum : int
        The fewest pairs that leave one to train on and one to validate on.
    """

    pairs: int
    corrected: int
    n_train: int
    n_validation: int
    minimum: int

    @property
    def ready(self) -> bool:
        """Whether the dataset gives at least one training and one validation image."""
        return self.n_train > 0 and self.n_validation > 0

    @property
    def accepted(self) -> int:
        """The pairs accepted as the model drew them (not corrected by hand)."""
        return self.pairs - self.corrected

    def sentence(self) -> str:
        """The plan in words, e.g. ``"5 images in your dataset (1 corrected by hand, 4 accepted as the model
        drew them): 4 train the model and 1 image is held back to validate it. ..."``, or how many are needed."""
        have = (f"{count_of(self.pairs, 'image')} in your dataset ({self.corrected} corrected by hand, "
                f"{self.accepted} accepted as the model drew them)")
        if not self.ready:
            return (f"Fine-tuning needs at least {count_of(self.minimum, 'saved image')} (one to train on and one "
                    f"held back to validate the new model); {have}.")
        held, one = count_of(self.n_validation, "image"), self.n_validation == 1
        return (f"{have}: {self.n_train} train the model and {held} {'is' if one else 'are'} held back to "
                f"validate it. Its validation FM will come from {'that' if one else 'those'} {held} only: compare "
                "it with the model you start from on the Evaluate page ('Compare with').")


def finetune_plan(folder: str | Path | None = None, validation_fraction: float | None = None) -> FinetunePlan:
    """The :class:`FinetunePlan` of the corrections dataset in ``folder`` (default
    :func:`moleseg.core.config.corrections_dir`), split as the training splits it (``validation_fraction`` of the
    pairs held back, default the option's; no test split: the test is the Evaluate page's)."""
    folder = Path(folder or corrections_dir())
    fraction = options.default("validation_split") if validation_fraction is None else validation_fraction
    pairs = corrections_pairs(folder)
    corrected = sum(_corrected_by_hand(folder, path.stem) for path in sorted((folder / IMAGES).glob("*.png"))) \
        if pairs else 0
    minimum = next(n for n in range(1, 1000) if _split_or_none(n, fraction) is not None)
    n_train, n_validation, _ = _split_or_none(pairs, fraction) or (0, 0, 0)
    return FinetunePlan(pairs=pairs, corrected=min(corrected, pairs), n_train=n_train, n_validation=n_validation,
                        minimum=minimum)


def _split_or_none(n_pairs: int, fraction: float) -> tuple[int, int, int] | None:
    try:
        return split_sizes(n_pairs, fraction)
    except ValueError:
        return None


@dataclass(frozen=True)
class BaseComparison:
    """A fine-tune's validation images scored by the model it started from and by the new model, through the
    same prediction and cleanup (:func:`moleseg.engine.evaluate.evaluate_pairs`).

    Attributes
    ----------
    base_model : str
        The ``.keras`` file the fine-tune started from.
    n : int
        Validation images scored.
    base_fm, fm : float
        Mean FM (0..1) of the starting model and of the new one on them.
    """

    base_model: str
    n: int
    base_fm: float
    fm: float

    def write(self, run_dir: str | Path) -> Path:
        """Write the run's :attr:`moleseg.engine.runs.RunFiles.base_comparison` atomically."""
        return write_json(RunFiles(run_dir).base_comparison, asdict(self))

    def text(self) -> str:
        """E.g. ``"the model it started from: FM 0.981 on the same 1 image (this one 0.974)"``."""
        return (f"the model it started from: FM {self.base_fm:.3f} on the same {count_of(self.n, 'image')} "
                f"(this one {self.fm:.3f})")


def read_base_comparison(run_dir: str | Path) -> BaseComparison | None:
    """The run's :class:`BaseComparison`; None when there is none or it cannot be read."""
    value = read_json(RunFiles(run_dir).base_comparison)
    try:
        return BaseComparison(base_model=str(value["base_model"]), n=int(value["n"]),
                              base_fm=float(value["base_fm"]), fm=float(value["fm"]))
    except (TypeError, KeyError, ValueError):
        return None


def inherited_image_hashes(weights: str | Path) -> list[str]:
    """The image digests a ``.keras`` start (``weights`` of a fine-tune) records as seen in its own training
    (``moleseg.json``: ``training.image_sha256``), so that a fine-tuned model keeps the provenance of every
    image that shaped it; ``[]`` for ``"imagenet"``, ``"none"`` or an unreadable file."""
    if Path(str(weights)).suffix != ".keras":
        return []
    try:
        training = read_info(weights).training or {}
    except ModelFileError:
        return []
    return [str(digest) for digest in training.get("image_sha256") or []]


def _checked(folder: str, roots: Sequence[Path] | None) -> str | None:
    """``folder`` when it is a folder (resolved inside ``roots`` when given, holding no link out of them),
    else None."""
    if roots is None:
        return folder if Path(folder).is_dir() else None
    if not Path(folder).is_absolute():
        return None
    try:
        resolved = resolve_inside_roots(folder, roots)
        check_links_inside(resolved, roots)
    except OutsideRootsError:
        return None
    return str(resolved)


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
        "validation_split": options.default("validation_split"), "test_split": 0.0, "validation_fold": 0,
        "epochs": int(epochs), "learning_rate": float(learning_rate), "cache_dir": None,
        "name": name or f"{model.stem}-corrections",
    })
    return config
