"""Loading and validating the two dataset layouts, and the seeded three-way split.

Runtime dependencies only (numpy, OpenCV): `pipelines.evaluate` imports this module, and the
appliance's evaluation path must not pull in torch.

Layouts
-------
- **magnetic-tile** (classification + masks): one subfolder per class, ``free`` = good; every
  ``X.jpg`` has its pixel mask ``X.png`` beside it (255 = defect, JPEG-like noise in between, so
  masks are binarised at 128).
- **neu-det** (detection): ``images/*.jpg`` and Pascal VOC ``annotations/*.xml``.

NEU-DET coordinate frame: the images on disk are 416x416 (upscaled) while every XML says
``<size>`` 200x200 and all box coordinates are <= 200, i.e. the boxes are in the *annotated*
frame. We therefore scale each box by (actual image size / annotated size) per axis, and store
boxes normalised to [0, 1] of the image, which is what the detection contract uses anyway.

Preprocessing mirrors `appliance.inference.runtime.ModelRunner.blob` exactly (colour to gray with
``cv2.cvtColor`` when the model is gray, then ``cv2.dnn.blobFromImage`` stretch-resize,
INTER_LINEAR), so that training and serving see the same pixels.
"""

from __future__ import annotations

import hashlib
import json
import os
import xml.etree.ElementTree as ET  # noqa: S405 - local, trusted annotation files
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

GOOD_FOLDER = "free"
GOOD_LABEL = "good"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
NEU_CLASSES = ("crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches")
SPLITS = ("train", "val", "test", "all")
DEFAULT_FRACTIONS = {"classification": (0.6, 0.2, 0.2), "detection": (0.7, 0.15, 0.15)}


class DatasetError(Exception):
    """A dataset folder is missing, has the wrong layout, or holds a corrupt file (named)."""


def datasets_root() -> Path:
    """Where the shared datasets live: env APPLIANCE_DATASETS, else <repo>/../shared/datasets."""
    env = os.environ.get("APPLIANCE_DATASETS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


@dataclass(frozen=True)
class Sample:
    """One image: its class (stratification key), optional mask, optional normalised boxes."""

    path: Path
    label: str
    mask_path: Path | None = None
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    box_labels: tuple[str, ...] = ()

    @property
    def is_good(self) -> bool:
        """True for a defect-free part."""
        return self.label == GOOD_LABEL


@dataclass(frozen=True)
class Dataset:
    """All samples of a folder, with its layout and label list (good label first if any)."""

    root: Path
    layout: str  # "magnetic-tile" or "neu-det"
    kind: str  # "classification" or "detection"
    labels: tuple[str, ...]
    samples: tuple[Sample, ...]

    def digest(self) -> str:
        """sha256 of the sorted relative file names: identifies the exact file list split."""
        names = "\n".join(sorted(self.name(i) for i in range(len(self.samples))))
        return hashlib.sha256(names.encode()).hexdigest()

    def name(self, index: int) -> str:
        """A sample's path relative to the folder: how score files (OOF, teacher) name it."""
        return str(self.samples[index].path.relative_to(self.root))

    def defect_flags(self, names: list[str], source: str) -> np.ndarray:
        """True for a defect, False for a good image, per name; exits naming unknown ones."""
        by_name = {self.name(i): s for i, s in enumerate(self.samples)}
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise SystemExit(f"{source}: {len(unknown)} images not in {self.root}, e.g. {unknown[0]}")
        return np.array([not by_name[n].is_good for n in names])


def read_scores(
    path: str | Path, names: list[str] | None, what: str = "score"
) -> tuple[list[str], np.ndarray]:
    """`what` of `names` (default: every image, sorted) from a {image name: score} JSON file."""
    held = json.loads(Path(path).read_text(encoding="utf-8"))
    names = sorted(held) if names is None else names
    missing = [n for n in names if n not in held]
    if missing:
        raise SystemExit(f"{path}: no {what} for {len(missing)} images, e.g. {missing[0]}")
    return names, np.array([held[n] for n in names], np.float64)


def detect_layout(root: Path) -> str:
    """'neu-det' if the folder has images/ and annotations/, else 'magnetic-tile'."""
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder does not exist")
    if (root / "images").is_dir() and (root / "annotations").is_dir():
        return "neu-det"
    if any(p.is_dir() for p in root.iterdir()):
        return "magnetic-tile"
    raise DatasetError(
        f"{root}: neither layout: expected class subfolders (magnetic-tile) or "
        "images/ + annotations/ (neu-det)"
    )


def load_dataset(root: Path | str) -> Dataset:
    """Index a dataset folder in either layout, checking that every referenced file exists."""
    root = Path(root)
    layout = detect_layout(root)
    return _load_neu(root) if layout == "neu-det" else _load_tiles(root)


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.suffix != ".png")


def _load_tiles(root: Path) -> Dataset:
    samples: list[Sample] = []
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    names = [p.name for p in folders]
    if GOOD_FOLDER not in names:
        raise DatasetError(f"{root}: magnetic-tile layout needs a '{GOOD_FOLDER}' folder of good parts")
    for folder in folders:
        label = GOOD_LABEL if folder.name == GOOD_FOLDER else folder.name
        images = _images_in(folder)
        for image in images:
            mask = image.with_suffix(".png")
            if not mask.is_file():
                raise DatasetError(f"{image}: its mask {mask.name} is missing")
            samples.append(Sample(image, label, mask_path=mask))
    if not samples:
        raise DatasetError(f"{root}: no images found")
    defects = sorted({s.label for s in samples} - {GOOD_LABEL})
    if not defects:
        raise DatasetError(f"{root}: only good images; need at least one defect class folder")
    return Dataset(root, "magnetic-tile", "classification", (GOOD_LABEL, *defects), tuple(samples))


def parse_voc(xml_path: Path, image_size: tuple[int, int]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Boxes of one VOC file, normalised to [0,1] of the annotated frame; raise naming the file.

    `image_size` (width, height) is only a fallback when the XML lacks <size>. Because boxes are
    normalised by the *annotated* size, they land correctly on an image of any actual size.
    """
    try:
        root = ET.parse(xml_path).getroot()  # noqa: S314 - trusted local files
    except (ET.ParseError, OSError) as exc:
        raise DatasetError(f"{xml_path}: unreadable VOC XML: {exc}") from exc
    try:
        size = root.find("size")
        if size is not None and size.findtext("width") and size.findtext("height"):
            aw, ah = float(size.findtext("width")), float(size.findtext("height"))
        else:
            aw, ah = float(image_size[0]), float(image_size[1])
        if aw <= 0 or ah <= 0:
            raise ValueError(f"bad <size> {aw}x{ah}")
        boxes, labels = [], []
        for obj in root.findall("object"):
            name = (obj.findtext("name") or "").strip()
            if name not in NEU_CLASSES:
                raise ValueError(f"unknown class {name!r}")
            bb = obj.find("bndbox")
            if bb is None:
                raise ValueError("object without <bndbox>")
            x1, y1, x2, y2 = (float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
            if x2 <= x1 or y2 <= y1:
                raise ValueError(f"degenerate box {x1, y1, x2, y2}")
            boxes.append([x1 / aw, y1 / ah, x2 / aw, y2 / ah])
            labels.append(name)
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"{xml_path}: bad VOC annotation: {exc}") from exc
    arr = np.clip(np.asarray(boxes, np.float32).reshape(-1, 4), 0.0, 1.0)
    return arr, tuple(labels)


def _load_neu(root: Path) -> Dataset:
    samples: list[Sample] = []
    for image in _images_in(root / "images"):
        xml_path = root / "annotations" / (image.stem + ".xml")
        if not xml_path.is_file():
            raise DatasetError(f"{image}: its annotation {xml_path.name} is missing")
        boxes, labels = parse_voc(xml_path, (0, 0))
        if not labels:
            raise DatasetError(f"{xml_path}: no objects annotated")
        # Each NEU image shows one defect type; stratify on it (the filename prefix agrees).
        samples.append(Sample(image, labels[0], boxes=boxes, box_labels=labels))
    if not samples:
        raise DatasetError(f"{root}: no images in images/")
    return Dataset(root, "neu-det", "detection", NEU_CLASSES, tuple(samples))


def split_dataset(dataset: Dataset, seed: int, fractions: Sequence[float]) -> dict[str, list[int]]:
    """Deterministic stratified train/val/test indices (fractions sum to 1), plus 'all'.

    Per class (sorted by name), the sample indices (already sorted by path) are permuted by one
    numpy Generator seeded with `seed`; the first round(n*test) go to test, the next round(n*val)
    to val, the rest to train. Classes with >= 3 images get at least one in val and in test.
    """
    train_f, val_f, test_f = (float(f) for f in fractions)
    if min(train_f, val_f, test_f) < 0 or abs(train_f + val_f + test_f - 1.0) > 1e-6:
        raise ValueError(f"split fractions {fractions} must be >= 0 and sum to 1")
    rng = np.random.default_rng(seed)
    out: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    by_class: dict[str, list[int]] = {}
    for i, s in enumerate(dataset.samples):
        by_class.setdefault(s.label, []).append(i)
    for label in sorted(by_class):
        idx = np.asarray(by_class[label])[rng.permutation(len(by_class[label]))]
        n = len(idx)
        n_test, n_val = round(n * test_f), round(n * val_f)
        if n >= 3:
            n_test, n_val = max(n_test, 1 if test_f > 0 else 0), max(n_val, 1 if val_f > 0 else 0)
        out["test"] += idx[:n_test].tolist()
        out["val"] += idx[n_test : n_test + n_val].tolist()
        out["train"] += idx[n_test + n_val :].tolist()
    result = {k: sorted(v) for k, v in out.items()}
    result["all"] = list(range(len(dataset.samples)))
    return result


def kfold(dataset: Dataset, pool: Sequence[int], n_folds: int, seed: int) -> list[list[int]]:
    """`n_folds` disjoint, class-stratified folds of the indices `pool` (cross-validation).

    Per class (sorted by name) the pool's indices are permuted by one numpy Generator seeded with
    `seed` and dealt round-robin, the next class starting where the previous one stopped, so fold
    sizes differ by at most one and every class is spread as evenly as its count allows.
    """
    if n_folds < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, not {n_folds}")
    if len(pool) < n_folds:
        raise ValueError(f"{len(pool)} images cannot fill {n_folds} folds")
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[int]] = {}
    for i in sorted(pool):
        by_class.setdefault(dataset.samples[i].label, []).append(i)
    folds: list[list[int]] = [[] for _ in range(n_folds)]
    turn = 0
    for label in sorted(by_class):
        idx = np.asarray(by_class[label])[rng.permutation(len(by_class[label]))]
        for i in idx.tolist():
            folds[turn % n_folds].append(i)
            turn += 1
    return [sorted(f) for f in folds]


def fold_split(
    split: dict[str, list[int]], dataset: Dataset, n_folds: int, fold: int, seed: int
) -> dict[str, list[int]]:
    """The split of cross-validation member `fold`: train on train+val minus the fold, hold it out.

    The returned 'val' is the held-out fold (what the member is scored on: out-of-fold), 'train'
    the rest of train+val; 'test' and 'all' are unchanged, so the test split stays untouched.
    """
    if not 0 <= fold < n_folds:
        raise ValueError(f"fold {fold} is not in 0..{n_folds - 1}")
    folds = kfold(dataset, split["train"] + split["val"], n_folds, seed)
    held = folds[fold]
    train = sorted(i for k, f in enumerate(folds) if k != fold for i in f)
    return {"train": train, "val": held, "test": split["test"], "all": split["all"]}


def refit_split(split: dict[str, list[int]]) -> dict[str, list[int]]:
    """The split of a refit on the whole cross-validation pool: train on train+val.

    'val' is the same pool (in-sample: kept only so that tools expecting a val split still run;
    the refit's held-out figures are the cross-fit members' out-of-fold ones); 'test' unchanged.
    """
    pool = sorted(split["train"] + split["val"])
    return {"train": pool, "val": list(pool), "test": split["test"], "all": split["all"]}


def split_from_manifest(dataset: Dataset, training: dict) -> dict[str, list[int]]:
    """Re-create the split a package recorded (`training.split`, plus `fold` or `refit` if any)."""
    info = training["split"]
    split = split_dataset(dataset, int(info["seed"]), info["fractions"])
    fold = training.get("fold")
    if fold:
        split = fold_split(split, dataset, int(fold["n"]), int(fold["k"]), int(fold["seed"]))
    elif training.get("refit"):
        split = refit_split(split)
    return split


def read_image(path: Path) -> np.ndarray:
    """Read an image as the folder camera source does (IMREAD_UNCHANGED); raise naming the file."""
    data = np.fromfile(str(path), dtype=np.uint8) if path.is_file() else None
    if data is None or data.size == 0:
        raise DatasetError(f"{path}: missing or empty image file")
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DatasetError(f"{path}: unreadable image (corrupt or not an image)")
    return image


def to_gray(image: np.ndarray) -> np.ndarray:
    """Gray uint8 as the runtime makes it (cv2.cvtColor BGR2GRAY / BGRA2GRAY)."""
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return image.reshape(image.shape[0], image.shape[1])


def prepare(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Gray uint8 HxW stretch-resized exactly as ModelRunner.blob does (INTER_LINEAR)."""
    blob = cv2.dnn.blobFromImage(to_gray(image), scalefactor=1.0, size=(width, height))
    return np.clip(np.rint(blob[0, 0]), 0, 255).astype(np.uint8)


def read_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """Binary mask (1 = defect) of an image of `shape` (h, w); raise naming the file."""
    mask = read_image(path)
    mask = to_gray(mask)
    if mask.shape[:2] != shape:
        raise DatasetError(f"{path}: mask is {mask.shape[1]}x{mask.shape[0]}, image is {shape[1]}x{shape[0]}")
    return (mask >= 128).astype(np.uint8)


def validate_files(dataset: Dataset, indices: Sequence[int]) -> None:
    """Decode every indexed image (and its mask) so a corrupt file fails early, by name.

    Training calls this for the test split too: only integrity is checked, nothing is learnt.
    """
    for i in indices:
        sample = dataset.samples[i]
        image = read_image(sample.path)
        if sample.mask_path is not None:
            read_mask(sample.mask_path, image.shape[:2])


def load_arrays(
    dataset: Dataset,
    indices: Sequence[int],
    width: int,
    height: int,
    with_masks: bool = False,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Prepared images [N,H,W] uint8 (and masks [N,H,W] in {0,1} at the same size)."""
    images = np.zeros((len(indices), height, width), np.uint8)
    masks = np.zeros((len(indices), height, width), np.uint8) if with_masks else None
    for j, i in enumerate(indices):
        sample = dataset.samples[i]
        raw = read_image(sample.path)
        images[j] = prepare(raw, width, height)
        if masks is not None and sample.mask_path is not None:
            full = read_mask(sample.mask_path, raw.shape[:2]).astype(np.float32)
            small = cv2.resize(full, (width, height), interpolation=cv2.INTER_AREA)
            # Keep thin defects: any pixel with >= 25% defect coverage counts.
            masks[j] = (small >= 0.25).astype(np.uint8)
        if progress and (j + 1) % 200 == 0:
            import sys

            print(f"  loaded {j + 1}/{len(indices)} images", file=sys.stderr, flush=True)
    return images, masks
