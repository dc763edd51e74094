"""Readers on small generated folders in each layout, their errors, and the shared data."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from gpcis.data.datasets import (
    DATASET_NAMES,
    BerkeleyDataset,
    CocoMValDataset,
    DavisDataset,
    GrabCutDataset,
    ImageFolderDataset,
    PascalVOCDataset,
    SBDDataset,
    get_dataset,
    read_image,
    read_mask,
)
from tests.folders import coco_mval_like, shared_folder


def _rgb(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _write(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = array[..., ::-1] if array.ndim == 3 else array  # RGB -> BGR for OpenCV
    ok, buf = cv2.imencode(path.suffix, img)
    assert ok
    buf.tofile(str(path))


def _grabcut_mask(h: int, w: int) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[4:12, 5:15] = 255
    m[3, 5:15] = 128  # ignore band
    m[12, 5:15] = 128
    return m


def _make_two_folder(root: Path, img_dir: str, mask_dir: str, mask_fn, mask_suffix: str) -> dict:
    """Three images with spaces in names and mixed suffixes; returns name -> (image, mask)."""
    specs = {"plain one": ".jpg", "UPPER": ".JPG", "bitmap 2": ".bmp"}
    out = {}
    for k, (stem, suf) in enumerate(specs.items()):
        h, w = 16 + k, 20
        img = _rgb(h, w, k)
        # bmp/png are lossless; jpg is not, so only compare masks exactly
        _write(root / img_dir / f"{stem}{suf}", img)
        m = mask_fn(h, w)
        _write(root / mask_dir / f"{stem}{mask_suffix}", m)
        out[stem] = (img, m)
    (root / img_dir / "notes.txt").write_text("not an image")
    return out


@pytest.mark.parametrize(
    "cls,img_dir,mask_dir,suffix",
    [(GrabCutDataset, "data_GT", "boundary_GT", ".bmp"), (BerkeleyDataset, "images", "masks", ".png")],
)
def test_grabcut_like_readers(tmp_path, cls, img_dir, mask_dir, suffix):
    data = _make_two_folder(tmp_path, img_dir, mask_dir, _grabcut_mask, suffix)
    ds = cls(tmp_path)
    assert len(ds) == 3
    names = set()
    for s in ds:
        img, m = data[s.name]
        names.add(s.name)
        assert s.image.shape == img.shape and s.image.dtype == np.uint8
        np.testing.assert_array_equal(s.mask, m > 128)
        np.testing.assert_array_equal(s.ignore, m == 128)
        assert s.ignore.sum() == 20 and s.mask.sum() == 80
    assert names == set(data)
    # lossless bmp image is read back exactly, in RGB order
    bmp = next(s for s in ds if s.name == "bitmap 2")
    np.testing.assert_array_equal(bmp.image, data["bitmap 2"][0])


@pytest.mark.parametrize("cls", [DavisDataset, CocoMValDataset])
def test_davis_like_readers_nonzero_is_object(tmp_path, cls):
    def mask_fn(h, w):
        m = np.zeros((h, w), np.uint8)
        m[2:6, 2:9] = 1  # any nonzero value is object
        m[8:10, 2:4] = 255
        return m

    data = _make_two_folder(tmp_path, "img", "gt", mask_fn, ".png")
    ds = cls(tmp_path)
    assert len(ds) == 3
    for s in ds:
        np.testing.assert_array_equal(s.mask, data[s.name][1] > 0)
        assert not s.ignore.any()


def test_image_folder_with_ignore_value(tmp_path):
    def mask_fn(h, w):
        m = np.zeros((h, w), np.uint8)
        m[1:5, 1:5] = 1
        m[6, :] = 255
        return m

    data = _make_two_folder(tmp_path, "pics", "labels", mask_fn, ".png")
    ds = ImageFolderDataset(tmp_path, images_dir="pics", masks_dir="labels", ignore_value=255)
    for s in ds:
        raw = data[s.name][1]
        np.testing.assert_array_equal(s.mask, (raw > 0) & (raw != 255))
        np.testing.assert_array_equal(s.ignore, raw == 255)
    with pytest.raises(ValueError, match="ignore_value"):
        ImageFolderDataset(tmp_path, "pics", "labels", ignore_value=0)


def test_sbd_one_sample_per_instance(tmp_path):
    from scipy.io import savemat

    inst = np.zeros((12, 14), np.uint8)
    inst[1:4, 1:4] = 1
    inst[6:10, 6:12] = 2
    inst[0, 10:14] = 3
    _write(tmp_path / "img" / "2008_000001.jpg", _rgb(12, 14, 0))
    _write(tmp_path / "img" / "2008_000002.jpg", _rgb(12, 14, 1))
    (tmp_path / "inst").mkdir()
    savemat(tmp_path / "inst" / "2008_000001.mat", {"GTinst": {"Segmentation": inst}})
    savemat(tmp_path / "inst" / "2008_000002.mat", {"GTinst": {"Segmentation": (inst == 2).astype(np.uint8)}})
    (tmp_path / "train.txt").write_text("2008_000001\n2008_000002\n")
    (tmp_path / "val.txt").write_text("2008_000002\n")
    ds = SBDDataset(tmp_path, split="train", progress=False)
    assert len(ds) == 4
    first = [ds[i] for i in range(3)]
    for k, s in zip((1, 2, 3), first):
        np.testing.assert_array_equal(s.mask, inst == k)
        assert len(s.masks) == 1 and len(s.others) == 2  # the other instances, for negatives
        assert sorted(int(inst[m].max()) for m in s.others) == sorted({1, 2, 3} - {k})
    # one image's instances read at once (training's per-image items): each a target, the rest others
    whole = ds.image_sample([0, 2])
    assert [int(inst[m].max()) for m in whole.masks] == [1, 3] and [int(inst[m].max()) for m in whole.others] == [2]
    np.testing.assert_array_equal(whole.image, first[0].image)
    with pytest.raises(ValueError, match="not of one image"):
        ds.image_sample([0, 3])
    assert len(SBDDataset(tmp_path, split="val", progress=False)) == 1
    # RITM's buggy-mask filter (training): instance 3, one row of 4 pixels, fills its box;
    # a diagonal instance filling 4 of its 16 box pixels (0.25) is dropped at min_fill 0.3
    diag = inst.copy()
    for r, c in zip(range(8, 12), range(0, 4)):
        diag[r, c] = 4
    savemat(tmp_path / "inst" / "2008_000001.mat", {"GTinst": {"Segmentation": diag}})
    assert len(SBDDataset(tmp_path, split="train", progress=False)) == 5
    filtered = SBDDataset(tmp_path, split="train", progress=False, min_fill=0.3)
    assert len(filtered) == 4 and not any(s.mask[8, 0] for s in filtered)
    assert all(not o[8, 0] for s in filtered for o in s.others)  # background now, not an "other"
    savemat(tmp_path / "inst" / "2008_000001.mat", {"GTinst": {"Segmentation": inst}})
    with pytest.raises(ValueError, match="min_fill"):
        SBDDataset(tmp_path, split="train", progress=False, min_fill=1.0)
    (tmp_path / "val.txt").write_text("2008_000002\nmissing_id\n")
    with pytest.raises(ValueError, match="missing_id"):
        SBDDataset(tmp_path, split="val", progress=False)
    with pytest.warns(UserWarning, match="skipped 1"):
        ds = SBDDataset(tmp_path, split="val", progress=False, skip_bad=True)
    assert len(ds) == 1 and "missing_id" in ds.skipped[0][1]


def test_pascal_voc_palette_and_ignore(tmp_path):
    from PIL import Image

    inst = np.zeros((10, 12), np.uint8)
    inst[1:4, 1:5] = 1
    inst[5:9, 6:11] = 2
    inst[4, :] = 255  # VOC "void" boundary
    _write(tmp_path / "JPEGImages" / "2007_000032.jpg", _rgb(10, 12, 3))
    (tmp_path / "SegmentationObject").mkdir()
    im = Image.fromarray(inst, mode="P")
    im.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [224, 224, 192] * 253)
    im.save(tmp_path / "SegmentationObject" / "2007_000032.png")
    (tmp_path / "ImageSets" / "Segmentation").mkdir(parents=True)
    (tmp_path / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000032\n")
    ds = PascalVOCDataset(tmp_path, split="val", progress=False)
    assert len(ds) == 2
    s = ds[1]
    np.testing.assert_array_equal(s.mask, inst == 2)
    assert len(s.masks) == 1 and len(s.others) == 1
    np.testing.assert_array_equal(s.others[0], inst == 1)
    np.testing.assert_array_equal(s.ignore, inst == 255)
    # the same mask re-saved as RGB: its luminance made the void colour an instance (220)
    im.convert("RGB").save(tmp_path / "SegmentationObject" / "2007_000032.png")
    with pytest.raises(ValueError, match="2007_000032.png is a RGB image: VOC's SegmentationObject masks are palette"):
        PascalVOCDataset(tmp_path, split="val", progress=False)


def test_errors_name_the_file(tmp_path):
    with pytest.raises(ValueError, match="data folder not found"):
        GrabCutDataset(tmp_path / "nowhere")
    _make_two_folder(tmp_path, "img", "gt", lambda h, w: np.full((h, w), 255, np.uint8), ".png")
    # image without a mask
    _write(tmp_path / "img" / "lonely cat.png", _rgb(8, 8, 9))
    with pytest.raises(ValueError, match="lonely cat.png has no mask"):
        DavisDataset(tmp_path)
    with pytest.warns(UserWarning):
        ds = DavisDataset(tmp_path, skip_bad=True)
    assert len(ds) == 3 and "lonely cat" in ds.skipped[0][0]
    (tmp_path / "img" / "lonely cat.png").unlink()
    # size mismatch
    _write(tmp_path / "gt" / "UPPER.png", np.zeros((5, 5), np.uint8))
    ds = DavisDataset(tmp_path)
    i = [e.name for e in ds.entries].index("UPPER")
    with pytest.raises(ValueError, match=r"size mismatch.*UPPER\.JPG.*UPPER\.png"):
        ds[i]
    # unreadable (corrupt) file
    (tmp_path / "img" / "plain one.jpg").write_bytes(b"definitely not a jpeg")
    with pytest.raises(ValueError, match="cannot decode.*plain one.jpg"):
        read_image(tmp_path / "img" / "plain one.jpg")
    with pytest.warns(UserWarning, match="skipped 2"):
        ds = DavisDataset(tmp_path, skip_bad=True)
    assert [s.name for s in ds] == ["bitmap 2"]
    assert {Path(f).stem for f, _ in ds.skipped} == {"UPPER", "plain one"}


def test_get_dataset_names(tmp_path):
    _make_two_folder(tmp_path, "img", "gt", lambda h, w: np.full((h, w), 255, np.uint8), ".png")
    assert isinstance(get_dataset("COCO_MVal", tmp_path), CocoMValDataset)
    assert isinstance(get_dataset("davis", tmp_path), DavisDataset)
    assert set(DATASET_NAMES) >= {"GrabCut", "Berkeley", "DAVIS", "SBD", "COCO_MVal", "PascalVOC"}
    with pytest.raises(ValueError, match="unknown dataset name 'LVIS'.*GrabCut.*PascalVOC"):
        get_dataset("LVIS", tmp_path)


def test_shared_datasets(shared_datasets):
    grabcut = get_dataset("GrabCut", shared_folder(shared_datasets, "GrabCut"))
    coco = get_dataset("COCO_MVal", shared_folder(shared_datasets, "COCO_MVal"))
    assert len(grabcut) == 50
    assert len(coco) == 800
    with_ignore = 0
    for s in grabcut:
        assert s.mask.any() and s.image.shape[:2] == s.mask.shape
        with_ignore += bool(s.ignore.any())
    assert with_ignore == 42  # the README: 42 masks contain the 128 band
    spaced = [i for i, e in enumerate(coco.entries) if " " in e.name]
    assert spaced, "COCO_MVal has names with spaces"
    s = coco[spaced[0]]
    assert s.mask.any() and not s.ignore.any()


def test_read_mask_reads_float_and_wide_integer_masks_as_nonzero_objects(tmp_path):
    """A float TIFF of 0 / 0.8 read back as all zeros (cast to uint8) before session 12; a
    32-bit integer mask with values above 255 wrapped around."""
    obj = np.zeros((10, 12), bool)
    obj[2:6, 3:9] = True
    cv2.imwrite(str(tmp_path / "soft.tiff"), obj.astype(np.float32) * 0.8)
    np.testing.assert_array_equal(read_mask(tmp_path / "soft.tiff"), obj.astype(np.uint8) * 255)
    soft = obj.astype(np.float32) * 0.8
    soft[2, 3] = 0.3  # an anti-aliased fringe pixel below 0.5 is background
    cv2.imwrite(str(tmp_path / "fringe.tiff"), soft)
    expected = obj.copy()
    expected[2, 3] = False
    np.testing.assert_array_equal(read_mask(tmp_path / "fringe.tiff"), expected.astype(np.uint8) * 255)
    levels = np.where(obj, 255.0, 0.0).astype(np.float32)
    levels[8] = 128.0  # GrabCut's ignore band stored as float levels stays 128
    cv2.imwrite(str(tmp_path / "levels.tiff"), levels)
    np.testing.assert_array_equal(read_mask(tmp_path / "levels.tiff"), levels.astype(np.uint8))
    wide = obj.astype(np.uint16) * 1000
    cv2.imwrite(str(tmp_path / "wide.png"), wide)
    np.testing.assert_array_equal(read_mask(tmp_path / "wide.png"), obj.astype(np.uint8) * 255)
    wide32 = obj.astype(np.int32) * 70000  # wrapped around in the uint8 cast before session 12
    cv2.imwrite(str(tmp_path / "wide32.tiff"), wide32)
    assert cv2.imread(str(tmp_path / "wide32.tiff"), cv2.IMREAD_UNCHANGED).dtype == np.int32
    np.testing.assert_array_equal(read_mask(tmp_path / "wide32.tiff"), obj.astype(np.uint8) * 255)
    small = obj.astype(np.uint16) * 7  # instance ids within 0..255 stay ids
    cv2.imwrite(str(tmp_path / "ids.png"), small)
    np.testing.assert_array_equal(read_mask(tmp_path / "ids.png"), obj.astype(np.uint8) * 7)
    bad = obj.astype(np.float32)
    bad[0, 0] = np.nan
    cv2.imwrite(str(tmp_path / "nan.tiff"), bad)
    with pytest.raises(ValueError, match="nan.tiff has NaN or Inf"):
        read_mask(tmp_path / "nan.tiff")


def test_read_mask_keeps_objects_of_any_colour_and_palette_indices(tmp_path):
    """Grey masks as they are; colour masks: an object of any colour is nonzero (the max
    over colour channels; channel 0 alone -- OpenCV's blue -- lost a red object); palette
    PNGs (VOC / DAVIS): their indices, so a VOC boundary band (index 255, drawn in a light
    colour) is 255 and the object (index 1, dark red) is 1; RGBA: alpha dropped."""
    from PIL import Image

    obj = np.zeros((10, 12), bool)
    obj[2:6, 3:9] = True
    grey = obj.astype(np.uint8) * 255
    _write(tmp_path / "grey.png", grey)
    np.testing.assert_array_equal(read_mask(tmp_path / "grey.png"), grey)
    red = np.zeros((10, 12, 3), np.uint8)
    red[obj] = (255, 0, 0)  # RGB red: blue channel 0
    _write(tmp_path / "red.png", red)
    np.testing.assert_array_equal(read_mask(tmp_path / "red.png") > 0, obj)
    rgba = np.zeros((10, 12, 4), np.uint8)
    rgba[..., 3] = 255  # opaque everywhere: alpha must not count as object
    rgba[obj, 1] = 200
    cv2.imencode(".png", rgba)[1].tofile(str(tmp_path / "rgba.png"))
    np.testing.assert_array_equal(read_mask(tmp_path / "rgba.png") > 0, obj)
    index = obj.astype(np.uint8)
    index[6] = 255  # a VOC-style boundary band below the object
    pal = Image.fromarray(index, mode="P")
    palette = [0, 0, 0, 128, 0, 0] + [0, 0, 0] * 253 + [224, 224, 192]
    pal.putpalette(palette)
    pal.save(tmp_path / "voc.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "voc.png"), index)
    ds_root = tmp_path / "folder"
    _write(ds_root / "images" / "a.jpg", _rgb(10, 12, 0))
    (ds_root / "masks").mkdir(parents=True)
    pal.save(ds_root / "masks" / "a.png")
    sample = ImageFolderDataset(ds_root, ignore_value=255)[0]
    np.testing.assert_array_equal(sample.masks[0], obj)
    np.testing.assert_array_equal(sample.ignore, index == 255)
    # a grey-level mask stored with a (grey) palette is read by its grey values, as before:
    # GrabCut's 0 / 128 / 255, and a binary mask whose palette index 0 is white
    gc = np.zeros((10, 12), np.uint8)
    gc[obj] = 255
    gc[7] = 128
    Image.fromarray(gc, mode="L").convert("P").save(tmp_path / "grey_palette.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "grey_palette.png"), gc)
    inverted = Image.fromarray((~obj).astype(np.uint8), mode="P")
    inverted.putpalette([255, 255, 255, 0, 0, 0] + [0, 0, 0] * 254)  # index 0 white (the object)
    inverted.save(tmp_path / "binary_palette.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "binary_palette.png") > 0, obj)


def test_dataset_images_are_read_in_their_masks_frame_whatever_their_exif_orientation(tmp_path):
    """read_image applied the EXIF orientation and read_mask did not: a JPEG tagged "rotated
    180" loaded with its benchmark mask turned away (IoU 0) without any error. Benchmark
    readers (here the DAVIS layout) take images as stored, like their masks; a user's own
    folder (ImageFolder) as shown, the frame of the masks gpcis segment and the demo save."""
    from PIL import Image

    img = np.zeros((40, 60, 3), np.uint8)
    img[2:10, 3:13] = 255  # a block in the top-left of the stored pixels
    stored = np.zeros((40, 60), np.uint8)
    stored[2:10, 3:13] = 255
    shown = stored[::-1, ::-1].copy()  # the same block where a viewer shows it
    exif = Image.Exif()
    exif[0x0112] = 3  # orientation: rotated 180 degrees
    for layout, reader, mask in ((("img", "gt"), DavisDataset, stored), (("images", "masks"), ImageFolderDataset, shown)):
        root = tmp_path / reader.__name__
        (root / layout[0]).mkdir(parents=True)
        Image.fromarray(img).save(root / layout[0] / "a.jpg", exif=exif.tobytes(), quality=95)
        _write(root / layout[1] / "a.png", mask)
        sample = reader(root)[0]
        bright = sample.image.mean(axis=2) > 128
        assert (bright & sample.masks[0]).sum() > 0.9 * sample.masks[0].sum(), reader.__name__
    as_shown = read_image(tmp_path / "DavisDataset" / "img" / "a.jpg")  # default: as a viewer shows it
    assert as_shown.mean(axis=2)[30:38, 47:57].mean() > 128


def test_a_coco_mval_folder_under_another_name_is_read_as_coco_mval(tmp_path):
    """Read as DAVIS (the img/ + gt/ layout), its copies of one image per object were held
    out and trained on alike: the validation split by image needs COCO_MVal's image ids."""
    from gpcis.training.trainer import _guess_type

    root = coco_mval_like(tmp_path / "my_subset")
    assert all(re.match(r".+_\d{12}$", p.stem) for p in (root / "gt").iterdir())
    assert _guess_type(root) == "COCO_MVal"
    (root / "gt" / "extra.png").write_bytes((root / "gt" / next(iter(sorted(p.name for p in (root / "gt").iterdir())))).read_bytes())
    assert _guess_type(root) == "DAVIS"  # a name without an id: a DAVIS-like folder


def test_a_16_bit_mask_of_8_bit_levels_keeps_its_ignore_band(tmp_path):
    """0 / 128 / 255 stored as 16 bits (x 257) read as nonzero = object, the ignore band lost."""
    levels = np.zeros((10, 12), np.uint8)
    levels[2:6, 3:9] = 255
    levels[6] = 128
    cv2.imwrite(str(tmp_path / "m16.png"), levels.astype(np.uint16) * 257)
    np.testing.assert_array_equal(read_mask(tmp_path / "m16.png"), levels)


def test_coco_guess_ignores_stray_files_and_16_bit_shifted_masks_keep_levels(tmp_path):
    from gpcis.training.trainer import _guess_type

    root = coco_mval_like(tmp_path / "subset")
    (root / "gt" / "Thumbs.db").write_bytes(b"x")  # not a mask: does not make it DAVIS
    (root / "gt" / "README").write_text("notes")
    assert _guess_type(root) == "COCO_MVal"
    levels = np.zeros((10, 12), np.uint8)
    levels[2:6, 3:9] = 255
    levels[6] = 128
    cv2.imwrite(str(tmp_path / "m16s.png"), levels.astype(np.uint16) * 256)  # shifted by 8 bits
    np.testing.assert_array_equal(read_mask(tmp_path / "m16s.png"), levels)
