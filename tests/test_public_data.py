"""Public held-out data is recognised (#27): the committed fingerprints match the public sets they were made
from, a set drawn from one is named with its share, an instructor's own arrays build a held-out set, and a
self-grade on public labels says that it is one."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from conftest import REFERENCE, config_with, grade, make_reference, write_submission
from grader import build_reference, public_data
from grader.public_data import PUBLIC_SHARE, fingerprints, public_share
from grader.reference import load_reference


def test_the_committed_reference_data_is_recognised_as_public() -> None:
    q1, q2 = (public_share(load_reference(REFERENCE, q)) for q in ("q1", "q2"))
    assert (q1.public_set, q1.share, q1.images) == ("Fashion-MNIST t10k", 1.0, 10000)
    assert (q2.public_set, q2.share, q2.images) == ("assignment segmentation val", 1.0, 100)
    assert q1.too_public and q2.too_public


def test_an_own_set_is_not_and_a_mixture_gets_its_share(tmp_path: Path) -> None:
    own = make_reference(tmp_path / "own", n_q1=200, n_q2=3, own=True)
    assert public_share(load_reference(own, "q1")).share == 0 and public_share(load_reference(own, "q2")).share == 0
    mixed = np.load(own / "q1" / "images.npy")
    mixed[:10] = np.load(REFERENCE / "q1" / "images.npy")[5000:5010]  # 10 of 200 public: 5 %
    np.save(own / "q1" / "images.npy", mixed)
    share = public_share(load_reference(own, "q1"))
    assert share.share == pytest.approx(10 / 200) and share.too_public and PUBLIC_SHARE < 10 / 200


def test_the_fingerprints_are_the_public_sets_own(tmp_path: Path, shared_data: Path) -> None:
    out = tmp_path / "fingerprints.npz"
    args = argparse.Namespace(fashion_mnist=shared_data / "fashion-mnist", seg=shared_data / "mp4-seg", out=out)
    assert public_data.main(args) == 0
    rebuilt, committed = np.load(out), np.load(public_data.FINGERPRINTS)
    assert sorted(rebuilt.files) == sorted(committed.files)
    for name in committed.files:
        assert np.array_equal(rebuilt[name], committed[name]), name
    assert len(committed["Fashion-MNIST train"]) == 60000 and len(committed["assignment segmentation test"]) == 100


def test_a_fingerprint_is_sha256_of_the_pixels() -> None:
    import hashlib

    image = np.arange(784, dtype=np.uint8).reshape(1, 28, 28)
    assert fingerprints(image)[0] == int.from_bytes(hashlib.sha256(bytes(range(256)) * 3 + bytes(range(16))).digest()[:8],
                                                    "big")


def _build(tmp_path: Path, *argv: str) -> int:
    return build_reference.main(build_reference.get_args_parser().parse_args([*argv, "--out", str(tmp_path / "out")]))


def test_an_instructors_own_arrays_build_a_held_out_set(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (50, 28, 28), dtype=np.uint8), rng.integers(0, 10, 50)
    np.save(tmp_path / "x.npy", images)
    np.save(tmp_path / "y.npy", labels)
    assert _build(tmp_path, "--q1-images", str(tmp_path / "x.npy"), "--q1-labels", str(tmp_path / "y.npy")) == 0
    assert "q1: 50 images from" in capsys.readouterr().out
    ref = load_reference(tmp_path / "out", "q1")
    assert np.array_equal(ref.images, images) and np.array_equal(ref.labels, labels)
    assert not public_share(ref).too_public


@pytest.mark.parametrize("images, labels, message", [
    (np.zeros((5, 28, 28), np.float32), np.zeros(5, np.int64), "expected uint8 images of shape (N, 28, 28)"),
    (np.zeros((5, 32, 32), np.uint8), np.zeros(5, np.int64), "expected uint8 images of shape (N, 28, 28)"),
    (np.zeros((5, 28, 28), np.uint8), np.zeros(4, np.int64), "expected 5 integer labels, one per image"),
    (np.zeros((5, 28, 28), np.uint8), np.full(5, 10), "labels must name one of the 10 classes"),
    (np.zeros((5, 28, 28), np.uint8), np.zeros(5, np.float32), "expected 5 integer labels"),
])
def test_bad_arrays_are_refused_with_a_clear_message(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                     images: np.ndarray, labels: np.ndarray, message: str) -> None:
    np.save(tmp_path / "x.npy", images)
    np.save(tmp_path / "y.npy", labels)
    assert _build(tmp_path, "--q1-images", str(tmp_path / "x.npy"), "--q1-labels", str(tmp_path / "y.npy")) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_a_self_grade_on_public_labels_says_so(tmp_path: Path) -> None:
    submission = write_submission(tmp_path / "submission", "def predict_q1(images):\n    return images.flatten(1)[:, :10]\n")
    for data, public in ((make_reference(tmp_path / "public", n_q1=20), True),
                         (make_reference(tmp_path / "own", n_q1=20, own=True), False)):
        rc, report = grade(submission, data, tmp_path / "results.json", "--config", str(config_with(tmp_path, "q1")),
                           "--isolation", "process")
        assert rc == 0
        assert ("this is a self-grade on public labels, not the course's grade" in report["output"]) == public
