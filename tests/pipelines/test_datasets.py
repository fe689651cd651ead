"""Dataset layouts, the seeded three-way split, NEU box scaling and clear errors on corrupt data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipelines.datasets import (
    DatasetError,
    fold_split,
    kfold,
    load_arrays,
    load_dataset,
    parse_voc,
    prepare,
    read_image,
    split_dataset,
    split_from_manifest,
)


def test_tiles_layout(tiles: Path):
    ds = load_dataset(tiles)
    assert ds.layout == "magnetic-tile" and ds.kind == "classification"
    assert ds.labels == ("good", "blowhole", "crack")
    assert sum(s.is_good for s in ds.samples) == 8
    assert all(s.mask_path and s.mask_path.is_file() for s in ds.samples)


def test_split_is_seeded_stratified_and_disjoint(tiles: Path):
    ds = load_dataset(tiles)
    a = split_dataset(ds, 7, (0.5, 0.25, 0.25))
    b = split_dataset(ds, 7, (0.5, 0.25, 0.25))
    c = split_dataset(ds, 8, (0.5, 0.25, 0.25))
    assert a == b
    assert a != c
    parts = [set(a[k]) for k in ("train", "val", "test")]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert set().union(*parts) == set(range(len(ds.samples)))
    for k in ("val", "test"):
        labels = [ds.samples[i].label for i in a[k]]
        assert sorted(set(labels)) == ["blowhole", "crack", "good"]
        assert all(labels.count(c) == 2 for c in set(labels))


def test_neu_boxes_scaled_from_annotated_frame(neu: Path):
    ds = load_dataset(neu)
    assert ds.layout == "neu-det" and len(ds.samples) == 24
    s = ds.samples[0]
    image = read_image(s.path)
    assert image.shape[:2] == (96, 96)  # on disk twice the annotated 48x48
    # Boxes are normalised by the annotated size: in image pixels they land on the drawn box.
    x1, y1, x2, y2 = (s.boxes[0] * 96).round().astype(int)
    gray = image[..., 0].astype(int)
    inside = gray[y1 + 2 : y2 - 2, x1 + 2 : x2 - 2].mean()
    outside = np.median(gray)
    assert abs(inside - outside) > 30


def test_prepare_matches_runtime_blob(tiles: Path):
    import cv2

    image = read_image(next((tiles / "crack").glob("*.jpg")))
    blob = cv2.dnn.blobFromImage(image, 1.0, (40, 24))
    assert np.array_equal(prepare(image, 40, 24), blob[0, 0].astype(np.uint8))


def test_missing_mask_names_the_file(tiles: Path):
    victim = tiles / "crack" / "crack_3.png"
    victim.unlink()
    with pytest.raises(DatasetError, match=r"crack_3\.jpg: its mask crack_3\.png is missing"):
        load_dataset(tiles)


def test_bad_xml_names_the_file(neu: Path):
    bad = neu / "annotations" / "patches_1.xml"
    bad.write_text("<annotation><object><name>patches</name>")
    with pytest.raises(DatasetError, match=r"patches_1\.xml: unreadable VOC XML"):
        load_dataset(neu)


def test_unknown_class_in_xml_names_the_file(tmp_path: Path):
    xml = tmp_path / "a.xml"
    xml.write_text(
        "<annotation><size><width>10</width><height>10</height></size><object>"
        "<name>dent</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax>"
        "</bndbox></object></annotation>"
    )
    with pytest.raises(DatasetError, match=r"a\.xml: bad VOC annotation: unknown class 'dent'"):
        parse_voc(xml, (10, 10))


def test_unreadable_image_names_the_file(tiles: Path):
    victim = tiles / "blowhole" / "blowhole_2.jpg"
    victim.write_bytes(b"this is not a jpeg")
    ds = load_dataset(tiles)
    with pytest.raises(DatasetError, match=r"blowhole_2\.jpg: unreadable image"):
        load_arrays(ds, range(len(ds.samples)), 32, 32, with_masks=True)


def test_missing_folder_and_wrong_layout(tmp_path: Path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="neither layout"):
        load_dataset(tmp_path / "empty")


def test_kfold_is_seeded_stratified_and_partitions_the_pool(tiles: Path):
    ds = load_dataset(tiles)
    split = split_dataset(ds, 7, (0.5, 0.25, 0.25))
    pool = split["train"] + split["val"]
    folds = kfold(ds, pool, 3, seed=1)
    assert kfold(ds, pool, 3, seed=1) == folds
    assert kfold(ds, pool, 3, seed=2) != folds
    assert sorted(i for f in folds for i in f) == sorted(pool)
    assert max(map(len, folds)) - min(map(len, folds)) <= 1
    for label in ("good", "blowhole", "crack"):  # 6 of each in the pool: 2 per fold
        assert [sum(ds.samples[i].label == label for i in f) for f in folds] == [2, 2, 2]
    with pytest.raises(ValueError, match="at least 2 folds"):
        kfold(ds, pool, 1, seed=0)


def test_fold_split_holds_out_one_fold_and_never_touches_test(tiles: Path):
    ds = load_dataset(tiles)
    split = split_dataset(ds, 7, (0.5, 0.25, 0.25))
    folds = kfold(ds, split["train"] + split["val"], 3, seed=4)
    for k in range(3):
        member = fold_split(split, ds, 3, k, 4)
        assert member["val"] == folds[k]
        assert not set(member["train"]) & set(member["val"])
        assert sorted(member["train"] + member["val"]) == sorted(split["train"] + split["val"])
        assert member["test"] == split["test"]
        training = {
            "split": {"seed": 7, "fractions": [0.5, 0.25, 0.25]},
            "fold": {"k": k, "n": 3, "seed": 4},
        }
        assert split_from_manifest(ds, training) == member
    with pytest.raises(ValueError, match="not in 0..2"):
        fold_split(split, ds, 3, 3, 4)
