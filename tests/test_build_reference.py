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
                                         "--seg-split", str(shared_data / "mp4-seg" / "val"), "--out", str(tmp_path / "ref")])
    assert main(args) == 0
    for rel in ("q1/images.npy", "q1/labels.npy", "q1/classes.txt", "q2/classes.txt", "q2/images/0.jpg", "q2/labels/99.png"):
        assert (tmp_path / "ref" / rel).read_bytes() == (REFERENCE / rel).read_bytes(), rel


def _split(folder: Path, stems: range, label: int = 1) -> Path:
    folder.mkdir(parents=True)
    for stem in stems:
        Image.new("RGB", (8, 8)).save(folder / f"{stem}.jpg")
        Image.fromarray(np.full((8, 8), label, np.uint8)).save(folder / f"{stem}.png")
    (folder.parent / "classes.txt").write_text("a\nb\n")
    return folder


def build(*argv: str) -> int:
    return main(get_args_parser().parse_args(list(argv)))


def test_q2_builder_and_loader_refuse_bad_labels(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    split = _split(tmp_path / "split", range(1), label=9)
    assert build("--seg-split", str(split), "--out", str(tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert "ids < 2" in err and err.count("\n") == 1 and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classes.txt", "split"]  # no half-built folder left
    out = tmp_path / "ref"
    shutil.copytree(REFERENCE / "q2", out, ignore=shutil.ignore_patterns("[1-9]*"))
    (out / "labels" / "0.png").unlink()
    with pytest.raises(ReferenceDataError, match="0.png is missing"):
        load_q2(out)


def test_an_existing_folder_is_never_merged_into(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The trap: a 30-image secret split built over the 100 public images gave 130 graded images."""
    out = tmp_path / "ref"
    assert build("--seg-split", str(_split(tmp_path / "public", range(5))), "--out", str(out)) == 0
    secret = _split(tmp_path / "secret" / "val", range(100, 103))
    assert build("--seg-split", str(secret), "--out", str(out)) == 2
    assert "exists; it is never merged into" in capsys.readouterr().err
    assert len(load_q2(out / "q2")) == 5
    assert build("--seg-split", str(secret), "--out", str(out), "--replace") == 0
    assert load_q2(out / "q2").names == ["100", "101", "102"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classes.txt", "public", "ref", "secret"]


def test_a_wrong_path_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert build("--fashion-mnist", str(tmp_path / "nowhere"), "--out", str(tmp_path / "ref")) == 2
    err = capsys.readouterr().err
    assert err.startswith("build_reference: ") and err.count("\n") == 1 and "nowhere" in err
    assert not (tmp_path / "ref").exists()
