"""The reference-data builder: IDX parsing checked against torchvision's reader, and the committed data."""
from __future__ import annotations

import gzip
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torchvision.datasets.mnist import read_image_file, read_label_file

from conftest import REFERENCE
from grader.build_reference import get_args_parser, main
from grader.reference import FASHION_MNIST_CLASSES, ReferenceDataError, load_q1, load_q2, read_idx


def write_idx(path: Path, array: np.ndarray, code: int) -> None:
    header = bytes([0, 0, code, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    data = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def test_idx_reader_agrees_with_torchvision(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=7).astype(np.uint8)
    write_idx(tmp_path / "img", images, 0x08)
    write_idx(tmp_path / "lab", labels, 0x08)
    write_idx(tmp_path / "img.gz", images, 0x08)
    assert np.array_equal(read_idx(tmp_path / "img"), read_image_file(str(tmp_path / "img")).numpy())
    assert np.array_equal(read_idx(tmp_path / "lab"), read_label_file(str(tmp_path / "lab")).numpy())
    assert np.array_equal(read_idx(tmp_path / "img.gz"), images)


def test_idx_reader_refuses_bad_files(tmp_path: Path) -> None:
    (tmp_path / "bad").write_bytes(b"\x08\x03\x00\x00")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    write_idx(tmp_path / "short", np.zeros((3, 4), np.uint8), 0x08)
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-1])
    with pytest.raises(ValueError, match="expected 24 bytes"):
        read_idx(tmp_path / "short")


def test_committed_q1_is_the_official_test_set() -> None:
    ref = load_q1(REFERENCE / "q1")
    assert ref.images.shape == (10000, 28, 28) and ref.classes == list(FASHION_MNIST_CLASSES)
    assert np.bincount(ref.labels).tolist() == [1000] * 10
    assert ref.labels[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]  # as PROVENANCE.md of the IDX files says
    # The IDX payload of the official t10k images has md5 8181f5470baa50b63fa0f6fddb340f0a.
    header = bytes([0, 0, 8, 3]) + np.array([10000, 28, 28], ">u4").tobytes()
    assert hashlib.md5(header + ref.images.tobytes()).hexdigest() == "8181f5470baa50b63fa0f6fddb340f0a"


def test_committed_q2_is_the_assignment_val_split() -> None:
    ref = load_q2(REFERENCE / "q2")
    assert ref.images.shape == (100, 224, 224, 3) and ref.labels.shape == (100, 224, 224)
    assert ref.classes == ["background", "sports", "accessory", "animal", "vehicle", "person"]
    assert ref.names[:4] == ["0", "1", "10", "11"]  # the course's sorted glob order


def test_rebuild_matches_committed_data(tmp_path: Path, shared_data: Path) -> None:
    args = get_args_parser().parse_args(["--fashion-mnist", str(shared_data / "fashion-mnist"),
                                         "--seg-split", str(shared_data / "mp4-seg" / "val"), "--out", str(tmp_path)])
    assert main(args) == 0
    for rel in ("q1/images.npy", "q1/labels.npy", "q1/classes.txt", "q2/classes.txt", "q2/images/0.jpg", "q2/labels/99.png"):
        assert (tmp_path / rel).read_bytes() == (REFERENCE / rel).read_bytes(), rel


def test_q2_builder_and_loader_refuse_bad_labels(tmp_path: Path) -> None:
    split = tmp_path / "split"
    split.mkdir()
    Image.new("RGB", (8, 8)).save(split / "0.jpg")
    Image.fromarray(np.full((8, 8), 9, np.uint8)).save(split / "0.png")
    (tmp_path / "classes.txt").write_text("a\nb\n")
    args = get_args_parser().parse_args(["--seg-split", str(split), "--out", str(tmp_path / "out")])
    with pytest.raises(ValueError, match="ids < 2"):
        main(args)
    out = tmp_path / "ref"
    shutil.copytree(REFERENCE / "q2", out, ignore=shutil.ignore_patterns("[1-9]*"))
    (out / "labels" / "0.png").unlink()
    with pytest.raises(ReferenceDataError, match="0.png is missing"):
        load_q2(out)
