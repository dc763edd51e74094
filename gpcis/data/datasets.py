"""Readers for the standard interactive-segmentation data layouts.

Every reader yields :class:`Sample` objects: an RGB ``uint8`` image, the object mask(s)
to segment, an ignore mask, and the *other* annotated objects of the image (``others``,
used only by the training click sampler for negative clicks; never evaluated). Readers of
instance-annotated layouts (SBD, PASCAL VOC) yield one sample per instance: ``masks`` is
that instance, ``others`` the rest of the image's instances.

Layouts (as RITM distributes them):

=============  ====================================================================
GrabCut        ``data_GT/`` images, ``boundary_GT/*.bmp`` masks; 128 = ignore, >128 = object
Berkeley       ``images/``, ``masks/``; same values as GrabCut
DAVIS          ``img/``, ``gt/``; any nonzero value = object
COCO_MVal      ``img/``, ``gt/``; any nonzero value = object
SBD            ``img/*.jpg``, ``inst/*.mat`` (``GTinst.Segmentation``), ``train.txt``/``val.txt``
PascalVOC      ``JPEGImages/``, ``SegmentationObject/*.png`` (palette indices, 255 = ignore),
               ``ImageSets/Segmentation/{train,val}.txt``
ImageFolder    ``images/``, ``masks/`` (a user's own data); nonzero = object
=============  ====================================================================

Images and masks are paired by file stem, so names with spaces and any of the suffixes
in :data:`IMAGE_SUFFIXES` (in any case: ``.JPG``, ``.bmp``...) work. Every problem
(missing folder, image without mask, unreadable file, size mismatch) raises a
``ValueError`` naming the file; with ``skip_bad=True`` the reader instead checks every
pair up front, drops the bad ones, lists them in :attr:`SegmentationDataset.skipped` and
emits one warning.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import cv2
import numpy as np

__all__ = [
    "IMAGE_SUFFIXES",
    "Sample",
    "SegmentationDataset",
    "GrabCutDataset",
    "BerkeleyDataset",
    "DavisDataset",
    "CocoMValDataset",
    "SBDDataset",
    "PascalVOCDataset",
    "ImageFolderDataset",
    "DATASET_NAMES",
    "get_dataset",
    "read_image",
    "read_mask",
]

IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclass
class Sample:
    """One segmentation sample.

    Attributes:
        image: ``(H, W, 3)`` uint8 RGB image.
        masks: the objects to segment, each ``(H, W)`` bool (one for every reader here;
            evaluation treats each as a separate object).
        ignore: ``(H, W)`` bool, ``True`` where the label is unknown (excluded from
            losses, metrics and click sampling).
        name: an identifier (the image file stem, plus ``#k`` for instance ``k``).
        others: other annotated objects of the image, each ``(H, W)`` bool (sources of
            negative training clicks; not segmentation targets).
    """

    image: np.ndarray
    masks: list[np.ndarray]
    ignore: np.ndarray
    name: str
    others: list[np.ndarray] = field(default_factory=list)

    @property
    def mask(self) -> np.ndarray:
        """The target object mask ``masks[0]`` (``(H, W)`` bool)."""
        return self.masks[0]

    def validate(self) -> None:
        """Raise ``ValueError`` if shapes or dtypes are inconsistent or the target object
        (``masks[0]``) has no pixel outside the ignore region."""
        if self.image.ndim != 3 or self.image.shape[2] != 3 or self.image.dtype != np.uint8:
            raise ValueError(f"sample {self.name!r}: image must be (H, W, 3) uint8, got "
                             f"{self.image.shape} {self.image.dtype}")
        hw = self.image.shape[:2]
        if not self.masks:
            raise ValueError(f"sample {self.name!r}: no object masks")
        for label, group in (("masks", self.masks), ("others", self.others)):
            for k, m in enumerate(group):
                if m.shape != hw or m.dtype != bool:
                    raise ValueError(f"sample {self.name!r}: {label}[{k}] must be {hw} bool, got {m.shape} {m.dtype}")
        if self.ignore.shape != hw or self.ignore.dtype != bool:
            raise ValueError(f"sample {self.name!r}: ignore must be {hw} bool, got "
                             f"{self.ignore.shape} {self.ignore.dtype}")
        if not (self.masks[0] & ~self.ignore).any():
            raise ValueError(f"sample {self.name!r}: the object mask is empty (no object pixel outside the "
                             "ignore region)")


def _imread_any(path: Path, flags: int) -> np.ndarray:
    # np.fromfile + imdecode copes with any file name (spaces, non-ASCII) on every OS.
    if not path.is_file():
        raise ValueError(f"file not found: {path}")
    try:
        buf = np.fromfile(str(path), dtype=np.uint8)
    except OSError as err:
        raise ValueError(f"cannot read file {path}: {err}") from err
    img = cv2.imdecode(buf, flags) if buf.size else None
    if img is None:
        raise ValueError(f"cannot decode image file {path} (unreadable or not an image)")
    return img


def read_image(path: str | Path, orientation: bool = True) -> np.ndarray:
    """Read an image file as ``(H, W, 3)`` uint8 RGB.

    Args:
        path: the file.
        orientation: apply the EXIF orientation (a phone photo as it is shown). The
            benchmark readers pass ``False``: their masks were drawn on the stored pixels
            (:func:`read_mask` does not rotate), and an image turned by its EXIF tag would no
            longer match its mask (silently for a 180-degree turn); :class:`ImageFolderDataset`
            keeps ``True``, the frame of the masks ``gpcis segment`` and the demo save.

    Raises:
        ValueError: naming ``path`` if it is missing or cannot be decoded.
    """
    path = Path(path)
    flags = cv2.IMREAD_COLOR if orientation else cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    img = _imread_any(path, flags)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_mask(path: str | Path) -> np.ndarray:
    """Read a mask file as ``(H, W)`` uint8: grey-level files as they are, label-map palette
    images (PNG mode ``P`` with colours, e.g. VOC / DAVIS annotations) as their palette
    indices (a grey palette is read by its grey values), other colour
    files as the maximum over their colour channels (RITM's DAVIS reader; the alpha channel
    is dropped), so an object of any colour is nonzero. (Channel 0 alone, OpenCV's blue,
    lost red objects and read a VOC boundary band as the object.) Floating-point masks: integer
    levels in 0..255 as they are, soft masks in [0, 1] as ``>= 0.5`` = object (255), others
    as nonzero = object; 16-bit masks that are 8-bit levels times 257 (or 256) by those levels; other
    integer masks with values outside 0..255 as nonzero = object.

    Raises:
        ValueError: naming ``path`` if it is missing or cannot be decoded.
    """
    path = Path(path)
    m = _imread_any(path, cv2.IMREAD_UNCHANGED)
    if m.ndim == 3:
        indices = _palette_indices(path)
        if indices is not None and indices.shape == m.shape[:2]:
            return indices
        m = m[:, :, :3].max(axis=2) if m.shape[2] >= 3 else m[:, :, 0]
    if m.dtype != np.uint8:
        if np.issubdtype(m.dtype, np.floating):
            if not np.isfinite(m).all():
                raise ValueError(f"mask {path} has NaN or Inf values")
            if m.size and m.min() >= 0 and m.max() <= 255 and (m == np.round(m)).all():
                m = m.astype(np.uint8)  # integer levels (e.g. GrabCut's 0 / 128 / 255) as they are
            elif m.size and m.min() >= 0 and m.max() <= 1:
                m = (m >= 0.5).astype(np.uint8) * 255  # a soft mask (e.g. a TIFF of 0 / 0.8): p >= 0.5
            else:
                m = (m != 0).astype(np.uint8) * 255
        elif m.size and m.max() > 255 and m.min() >= 0 and not (m % 257).any():
            m = (m // 257).astype(np.uint8)  # an 8-bit mask scaled to 16 bits (x 257): its levels, e.g. 128
        elif m.size and 255 < m.max() <= 65280 and m.min() >= 0 and not (m % 256).any():
            m = (m // 256).astype(np.uint8)  # ... or shifted by 8 bits (x 256)
        elif m.size and (m.max() > 255 or m.min() < 0):  # wider integers: nonzero is the object
            m = (m != 0).astype(np.uint8) * 255
        else:
            m = m.astype(np.uint8)
    return m


def _palette_indices(path: Path) -> Optional[np.ndarray]:
    """The palette indices of a label-map palette image (PIL mode ``P`` whose used colours
    are not all grey: VOC, DAVIS), else ``None`` (a grey-level or binary mask that was only
    stored with a palette is read by its grey values, as before)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.mode != "P":
                return None
            indices = np.array(im, dtype=np.uint8)
            palette = np.array(im.getpalette() or [], dtype=np.int64)
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    colours = np.zeros((256, 3), np.int64)
    rgb = palette[: (palette.size // 3) * 3].reshape(-1, 3)[:256]
    colours[: len(rgb)] = rgb
    used = colours[np.unique(indices)]
    grey = (used[:, 0] == used[:, 1]).all() and (used[:, 1] == used[:, 2]).all()
    return None if grey else indices


def _require_dir(path: Path) -> Path:
    if not path.is_dir():
        raise ValueError(f"data folder not found: {path}")
    return path


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)


def _index_by_stem(files: Sequence[Path]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in files:
        if p.stem in out:
            raise ValueError(f"two files share the stem {p.stem!r}: {out[p.stem]} and {p}")
        out[p.stem] = p
    return out


@dataclass
class _Entry:
    """What a reader needs to load one sample (paths plus reader-specific extras)."""

    name: str
    image: Path
    mask: Path
    extra: dict = field(default_factory=dict)


class SegmentationDataset:
    """Base class: a list of entries and a per-layout loader.

    Subclasses build ``self.entries`` and implement :meth:`_load`. Indexing returns a
    validated :class:`Sample`.

    Args:
        skip_bad: when ``True``, every entry is loaded once up front; entries that fail
            (unreadable file, size mismatch, ...) are dropped, recorded in
            :attr:`skipped` as ``(file, reason)`` and reported by one warning. When
            ``False`` (default) problems raise ``ValueError`` naming the file.
    """

    name: str = "dataset"
    #: apply the images' EXIF orientation (:func:`read_image`): ``False`` for the benchmark
    #: sets, whose masks were drawn on the stored pixels; a user's own folder
    #: (:class:`ImageFolderDataset`) is read as shown, the frame of the masks that
    #: ``gpcis segment`` and the demo write
    exif_orientation: bool = False

    def __init__(self, entries: list[_Entry], skip_bad: bool = False,
                 skipped: list[tuple[str, str]] | None = None) -> None:
        self.entries = entries
        self.skip_bad = skip_bad
        self.skipped: list[tuple[str, str]] = list(skipped or [])
        if skip_bad:
            good = []
            for e in entries:
                try:
                    self._load(e).validate()
                except ValueError as err:
                    self.skipped.append((str(e.image), str(err)))
                else:
                    good.append(e)
            self.entries = good
        if self.skipped:
            warnings.warn(f"{type(self).__name__}: skipped {len(self.skipped)} bad item(s); first: "
                          f"{self.skipped[0][0]} ({self.skipped[0][1]}); see .skipped", stacklevel=2)

    def __len__(self) -> int:
        return len(self.entries)

    def image_key(self, index: int) -> str:
        """Which image sample ``index`` shows: samples with the same key are objects of one
        image (a training run holds out whole images for validation). The image file's path;
        layouts that copy an image per object override it."""
        return str(self.entries[index].image)

    def __getitem__(self, index: int) -> Sample:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        sample = self._load(self.entries[index])
        sample.validate()
        return sample

    def _load(self, entry: _Entry) -> Sample:  # pragma: no cover - abstract
        raise NotImplementedError

    @staticmethod
    def _check_size(image: np.ndarray, mask: np.ndarray, entry: _Entry) -> None:
        if image.shape[:2] != mask.shape[:2]:
            raise ValueError(f"size mismatch: image {entry.image} is {image.shape[1]}x{image.shape[0]} "
                             f"but mask {entry.mask} is {mask.shape[1]}x{mask.shape[0]} (WxH)")


def _pair_folders(image_dir: Path, mask_dir: Path, skip_bad: bool
                  ) -> tuple[list[_Entry], list[tuple[str, str]]]:
    """Pair every image in ``image_dir`` with the mask of the same stem in ``mask_dir``."""
    _require_dir(image_dir)
    _require_dir(mask_dir)
    images = _list_images(image_dir)
    masks = _index_by_stem(_list_images(mask_dir))
    entries, skipped = [], []
    for img in images:
        mask = masks.get(img.stem)
        if mask is None:
            msg = f"image {img} has no mask named {img.stem}.* in {mask_dir}"
            if not skip_bad:
                raise ValueError(msg)
            skipped.append((str(img), msg))
            continue
        entries.append(_Entry(img.stem, img, mask))
    if not entries and not skipped:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {image_dir}")
    return entries, skipped


class _PairedFolderDataset(SegmentationDataset):
    """Images and single-object masks in two folders, paired by stem."""

    images_dir: str = "images"
    masks_dir: str = "masks"

    def __init__(self, root: str | Path, skip_bad: bool = False) -> None:
        self.root = _require_dir(Path(root))
        entries, skipped = _pair_folders(self.root / self.images_dir, self.root / self.masks_dir, skip_bad)
        super().__init__(entries, skip_bad=skip_bad, skipped=skipped)

    def _decode(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map raw mask values to ``(object, ignore)``; default: nonzero = object."""
        return raw > 0, np.zeros(raw.shape, dtype=bool)

    def _load(self, entry: _Entry) -> Sample:
        image = read_image(entry.image, orientation=self.exif_orientation)  # the masks' frame
        raw = read_mask(entry.mask)
        self._check_size(image, raw, entry)
        obj, ignore = self._decode(raw)
        return Sample(image, [obj], ignore, entry.name)


class GrabCutDataset(_PairedFolderDataset):
    """GrabCut: ``data_GT/`` images, ``boundary_GT/`` masks (0 bg, 128 ignore band, 255 object)."""

    name = "GrabCut"
    images_dir = "data_GT"
    masks_dir = "boundary_GT"

    def _decode(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return raw > 128, raw == 128


class BerkeleyDataset(GrabCutDataset):
    """Berkeley: ``images/``, ``masks/`` (same values as GrabCut)."""

    name = "Berkeley"
    images_dir = "images"
    masks_dir = "masks"


class DavisDataset(_PairedFolderDataset):
    """DAVIS (RITM's 345-frame set): ``img/``, ``gt/``; nonzero = object."""

    name = "DAVIS"
    images_dir = "img"
    masks_dir = "gt"


class CocoMValDataset(DavisDataset):
    """COCO-MVal: ``img/``, ``gt/``; nonzero = object. Files are named
    ``<category><k>_<COCO image id>``, one copy of the image per object."""

    name = "COCO_MVal"

    def image_key(self, index: int) -> str:
        """The COCO image id (the stem after its last ``_``): ``airplane00_000000281693`` and
        ``airplane01_000000281693`` are two objects of one image."""
        stem = Path(self.entries[index].image).stem
        return stem.rsplit("_", 1)[-1] if "_" in stem else stem


class ImageFolderDataset(_PairedFolderDataset):
    """A user's own data: images and masks in two folders, paired by file stem.

    Args:
        root: folder containing ``images_dir`` and ``masks_dir``.
        images_dir: sub-folder of images.
        masks_dir: sub-folder of masks (same stems, any image suffix).
        ignore_value: mask value meaning "unknown" (e.g. 255 for VOC-style masks);
            ``None`` (default): no ignore label. Any other nonzero value = object.
        skip_bad: see :class:`SegmentationDataset`.
    """

    name = "ImageFolder"
    exif_orientation = True  # as shown: the frame of the masks gpcis segment / the demo save

    def __init__(self, root: str | Path, images_dir: str = "images", masks_dir: str = "masks",
                 ignore_value: int | None = None, skip_bad: bool = False) -> None:
        if ignore_value is not None and not 0 < int(ignore_value) <= 255:
            raise ValueError(f"ignore_value must be in 1..255 or None, got {ignore_value}")
        self.images_dir = images_dir
        self.masks_dir = masks_dir
        self.ignore_value = ignore_value
        super().__init__(root, skip_bad=skip_bad)

    def _decode(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.ignore_value is None:
            return raw > 0, np.zeros(raw.shape, dtype=bool)
        ignore = raw == self.ignore_value
        return (raw > 0) & ~ignore, ignore


def _read_split(path: Path) -> list[str]:
    if not path.is_file():
        raise ValueError(f"split file not found: {path}")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _instances_sample(image: np.ndarray, inst: np.ndarray, ignore: np.ndarray, ks: Sequence[int],
                      name: str) -> Sample:
    """The instances ``ks`` as the targets (``masks``), the image's other instances ``others``."""
    ids = [i for i in np.unique(inst) if i not in (0, 255) and i not in ks]
    return Sample(image, [inst == k for k in ks], ignore, name, others=[inst == i for i in ids])


class _InstanceDataset(SegmentationDataset):
    """Shared logic of instance-annotated layouts: one sample per (image, instance id)."""

    def _read_instances(self, entry: _Entry) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover
        raise NotImplementedError

    def _build(self, pairs: list[_Entry], skip_bad: bool, skipped: list[tuple[str, str]],
               progress: bool) -> list[_Entry]:
        entries = []
        it = pairs
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(pairs, desc=f"indexing {self.name}", leave=False)
        for e in it:
            try:
                inst, _ = self._read_instances(e)
            except ValueError as err:
                if not skip_bad:
                    raise
                skipped.append((str(e.mask), str(err)))
                continue
            for k in np.unique(inst):
                if k == 0 or k == 255:
                    continue
                entries.append(_Entry(e.name, e.image, e.mask, {"instance": int(k)}))
        return entries

    def _read(self, entry: _Entry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        image = read_image(entry.image, orientation=self.exif_orientation)  # the masks' frame
        inst, ignore = self._read_instances(entry)
        self._check_size(image, inst, entry)
        return image, inst, ignore

    def _load(self, entry: _Entry) -> Sample:
        k = entry.extra["instance"]
        return _instances_sample(*self._read(entry), [k], f"{entry.name}#{k}")

    def image_sample(self, indices: Sequence[int]) -> Sample:
        """One :class:`Sample` of the objects ``indices`` (samples of one image), read once:
        each of them a target (``masks``), the image's other instances ``others``."""
        entries = [self.entries[i] for i in indices]
        if len({(e.image, e.mask) for e in entries}) != 1:
            raise ValueError(f"image_sample: samples {list(indices)} are not of one image")
        sample = _instances_sample(*self._read(entries[0]), [e.extra["instance"] for e in entries],
                                   entries[0].name)
        sample.validate()
        return sample


def _pair_listed(
    ids: list[str],
    images: dict[str, Path],
    mask_of: Callable[[str, Path], tuple[Path | None, str]],
    listing: str,
    img_dir: Path,
    skip_bad: bool,
) -> tuple[list["_Entry"], list[tuple[str, str]]]:
    """Pair the image ids of a split listing with their annotation files.

    ``mask_of(id, image)`` returns the annotation path (``None`` if missing) and the
    message to report when it is missing. A missing image or annotation raises
    ``ValueError`` naming the file, or with ``skip_bad`` is recorded in ``skipped``.
    """
    pairs, skipped = [], []
    for i in ids:
        img = images.get(i)
        problem = None
        if img is None:
            problem = f"image {i!r} listed in {listing} not found in {img_dir}"
        else:
            mask, missing = mask_of(i, img)
            if mask is None:
                problem = missing
        if problem:
            if not skip_bad:
                raise ValueError(problem)
            skipped.append((str(img or i), problem))
            continue
        pairs.append(_Entry(i, img, mask))
    return pairs, skipped


class SBDDataset(_InstanceDataset):
    """SBD: ``img/<id>.jpg``, ``inst/<id>.mat`` (``GTinst.Segmentation``), ``<split>.txt``.

    One sample per instance; ``others`` are the other instances of the image. Indexing
    reads every ``.mat`` once at construction (a tqdm bar shows progress).

    Args:
        root: the SBD ``dataset`` folder.
        split: ``"train"`` or ``"val"`` (reads ``<root>/<split>.txt``).
        skip_bad: see :class:`SegmentationDataset`.
        progress: show a progress bar while indexing.
        min_fill: instances covering less than this share of their bounding box become
            background (RITM's SBD training reader, ``buggy_mask_thresh = 0.08``: such
            masks are mostly annotation errors); 0 keeps every instance (evaluation).
    """

    name = "SBD"

    def __init__(self, root: str | Path, split: str = "train", skip_bad: bool = False,
                 progress: bool = True, min_fill: float = 0.0) -> None:
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        if not 0.0 <= float(min_fill) < 1.0:
            raise ValueError(f"min_fill must be in [0, 1), got {min_fill!r}")
        self.min_fill = float(min_fill)
        self.root = _require_dir(Path(root))
        img_dir = _require_dir(self.root / "img")
        inst_dir = _require_dir(self.root / "inst")
        ids = _read_split(self.root / f"{split}.txt")
        images = _index_by_stem(_list_images(img_dir))

        def instance_file(i: str, img: Path) -> tuple[Path | None, str]:
            mat = inst_dir / f"{i}.mat"
            return (mat if mat.is_file() else None), f"image {img} has no instance file {mat}"

        pairs, skipped = _pair_listed(ids, images, instance_file, f"{split}.txt", img_dir, skip_bad)
        entries = self._build(pairs, skip_bad, skipped, progress)
        super().__init__(entries, skip_bad=skip_bad, skipped=skipped)

    def _read_instances(self, entry: _Entry) -> tuple[np.ndarray, np.ndarray]:
        from scipy.io import loadmat

        try:
            mat = loadmat(str(entry.mask))
            inst = np.asarray(mat["GTinst"][0]["Segmentation"][0]).astype(np.int32)
        except Exception as err:  # scipy raises many types on corrupt files
            raise ValueError(f"cannot read SBD instance file {entry.mask}: {err}") from err
        if inst.ndim != 2:
            raise ValueError(f"SBD instance file {entry.mask}: Segmentation is not 2-D ({inst.shape})")
        if self.min_fill > 0:
            for k in np.unique(inst):
                if k == 0:
                    continue
                rows, cols = np.nonzero(inst == k)
                box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
                if rows.size / box < self.min_fill:
                    inst[inst == k] = 0  # as RITM's remove_buggy_masks: background
        return inst, np.zeros(inst.shape, dtype=bool)


class PascalVOCDataset(_InstanceDataset):
    """PASCAL VOC: ``JPEGImages/``, ``SegmentationObject/*.png`` (palette indices; 255 = ignore).

    One sample per instance; ``others`` are the other instances of the image.

    Args:
        root: the ``VOC2012`` folder.
        split: ``"train"`` / ``"val"`` / ``"trainval"``
            (``ImageSets/Segmentation/<split>.txt``).
        skip_bad: see :class:`SegmentationDataset`.
        progress: show a progress bar while indexing.
    """

    name = "PascalVOC"

    def __init__(self, root: str | Path, split: str = "val", skip_bad: bool = False,
                 progress: bool = True) -> None:
        self.root = _require_dir(Path(root))
        img_dir = _require_dir(self.root / "JPEGImages")
        obj_dir = _require_dir(self.root / "SegmentationObject")
        ids = _read_split(self.root / "ImageSets" / "Segmentation" / f"{split}.txt")
        images = _index_by_stem(_list_images(img_dir))
        masks = _index_by_stem(_list_images(obj_dir))

        def object_mask(i: str, img: Path) -> tuple[Path | None, str]:
            return masks.get(i), f"image {img} has no mask {i}.png in {obj_dir}"

        pairs, skipped = _pair_listed(ids, images, object_mask, f"{split}.txt", img_dir, skip_bad)
        entries = self._build(pairs, skip_bad, skipped, progress)
        super().__init__(entries, skip_bad=skip_bad, skipped=skipped)

    def _read_instances(self, entry: _Entry) -> tuple[np.ndarray, np.ndarray]:
        # Palette PNGs: the indices are the instance ids; OpenCV would convert them to
        # colours, so read them with Pillow (a torchvision dependency).
        from PIL import Image, UnidentifiedImageError

        if not entry.mask.is_file():
            raise ValueError(f"file not found: {entry.mask}")
        try:
            with Image.open(entry.mask) as im:
                mode = im.mode
                if mode in ("P", "L"):  # palette indices / grey levels are the instance ids
                    inst = np.array(im).astype(np.int32)
        except (OSError, UnidentifiedImageError) as err:
            raise ValueError(f"cannot read mask file {entry.mask}: {err}") from err
        if mode not in ("P", "L"):
            # a colour rendering of the ids (e.g. re-saved as RGB): its luminance made VOC's void
            # colour (224, 224, 192) instance 220 instead of the ignore label 255
            raise ValueError(f"instance mask {entry.mask} is a {mode} image: VOC's SegmentationObject masks are "
                             "palette (mode P) or grey-level PNGs whose values are the instance ids (255: void)")
        return inst, inst == 255


_READERS: dict[str, Callable[..., SegmentationDataset]] = {
    "GrabCut": GrabCutDataset,
    "Berkeley": BerkeleyDataset,
    "DAVIS": DavisDataset,
    "SBD": SBDDataset,
    "COCO_MVal": CocoMValDataset,
    "PascalVOC": PascalVOCDataset,
    "ImageFolder": ImageFolderDataset,
}
DATASET_NAMES: tuple[str, ...] = tuple(_READERS)


def get_dataset(name: str, root: str | Path, **kwargs: Any) -> SegmentationDataset:
    """Build the reader for a named layout.

    Args:
        name: one of :data:`DATASET_NAMES` (case-insensitive): GrabCut, Berkeley, DAVIS,
            SBD, COCO_MVal, PascalVOC, ImageFolder.
        root: the data set folder.
        **kwargs: passed to the reader (``skip_bad``, ``split``...).

    Raises:
        ValueError: for an unknown ``name`` (the message lists the known names) or any
            problem with the data.
    """
    lookup = {k.lower(): v for k, v in _READERS.items()}
    reader = lookup.get(str(name).lower())
    if reader is None:
        raise ValueError(f"unknown dataset name {name!r}; known names: {', '.join(DATASET_NAMES)}")
    return reader(root, **kwargs)
