"""The duplicate checks against brute-force counts, and the file hashing against what it must skip."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from grader.duplicates import WEIGHT_MIN_BYTES, file_hashes, identical_files, similar_predictions
from grader.upload import UploadLimits, open_regular

LIMITS = UploadLimits(max_files=100, max_bytes=2**20, max_depth=8, max_file_bytes=2**19)


def test_shared_error_overlap_matches_a_count_by_hand() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 500)
    preds = {name: np.where(rng.random(500) < 0.7, labels, rng.integers(0, 10, 500)).astype(np.uint8) for name in "abc"}
    preds["copy_of_a"] = preds["a"].copy()
    pairs = {(p.a, p.b): p for p in similar_predictions("q1", preds, labels)}
    assert len(pairs) == 6
    for (a, b), pair in pairs.items():
        either = sum(1 for i in range(500) if preds[a][i] != labels[i] or preds[b][i] != labels[i])
        shared = sum(1 for i in range(500) if preds[a][i] != labels[i] and preds[a][i] == preds[b][i])
        assert pair.overlap == shared / either
        assert pair.agreement == sum(preds[a][i] == preds[b][i] for i in range(500)) / 500
    assert pairs[("a", "copy_of_a")].overlap == 1.0 and pairs[("a", "b")].overlap < 0.5


def test_q2_compares_a_fixed_sample_of_pixels_and_skips_wrong_shapes() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 6, (10, 224, 224)).astype(np.uint8)
    a = rng.integers(0, 6, labels.shape).astype(np.uint8)
    pairs = similar_predictions("q2", {"a": a, "a2": a.copy(), "bad": a[:5]}, labels)
    assert [(p.a, p.b, p.overlap, p.agreement) for p in pairs] == [("a", "a2", 1.0, 1.0)]


def test_file_hashes_skip_small_files_links_and_fifos(tmp_path: Path) -> None:
    weights = os.urandom(WEIGHT_MIN_BYTES)
    (tmp_path / "a" / "sub").mkdir(parents=True)
    (tmp_path / "a" / "sub" / "w.pt").write_bytes(weights)
    (tmp_path / "a" / "predict.py").write_text("x = 1\n")
    (tmp_path / "a" / "link.pt").symlink_to(tmp_path / "a" / "sub" / "w.pt")
    os.mkfifo(tmp_path / "a" / "pipe")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "mine.pt").write_bytes(weights)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "other.pt").write_bytes(os.urandom(WEIGHT_MIN_BYTES))
    hashes = {n: file_hashes(tmp_path / n, LIMITS) for n in "abc"}
    sha = hashlib.sha256(weights).hexdigest()
    assert hashes["a"] == [(sha, WEIGHT_MIN_BYTES, "sub/w.pt")]
    assert identical_files(hashes) == [(sha, WEIGHT_MIN_BYTES, [("a", "sub/w.pt"), ("b", "mine.pt")])]


def test_only_regular_files_are_ever_opened(tmp_path: Path, monkeypatch) -> None:
    """As root over a whole export: a device node's open can act on the device, a FIFO's can block. The
    copy check and the resume key's digest open regular files only."""
    import stat

    from grader.batch.submissions import submission_digest

    (tmp_path / "weights.bin").write_bytes(b"w" * WEIGHT_MIN_BYTES)
    os.mkfifo(tmp_path / "fifo")
    if os.geteuid() == 0:
        os.mknod(tmp_path / "device", 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # what /dev/null is
    opened: list[str] = []
    real_open = os.open

    def recording_open(path, *args, **kwargs):
        opened.append(os.path.basename(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", recording_open)
    assert [name for _, _, name in file_hashes(tmp_path, LIMITS)] == ["weights.bin"]
    before = submission_digest(tmp_path, LIMITS)
    assert set(opened) == {"weights.bin"}
    (tmp_path / "weights.bin").write_bytes(b"v" * WEIGHT_MIN_BYTES)
    assert submission_digest(tmp_path, LIMITS) != before  # a replaced file is a new submission


def test_a_file_past_the_upload_caps_is_never_read(tmp_path: Path, monkeypatch) -> None:
    """A sparse file of 5 TiB (no disk, all hole) in a submission folder: the upload is refused on its size
    alone, so neither the copy check nor the resume key's digest opens it (reading it would take hours)."""
    from grader import duplicates
    from grader.batch import submissions
    from grader.batch.submissions import submission_digest

    (tmp_path / "weights.bin").write_bytes(b"w" * WEIGHT_MIN_BYTES)
    with open(tmp_path / "huge.pt", "wb") as f:
        f.truncate(5 * 2**40)
    opened: list[str] = []

    def recording(path):
        opened.append(Path(path).name)
        return open_regular(path)

    for module in (duplicates, submissions):
        monkeypatch.setattr(module, "open_regular", recording)
    assert [name for _, _, name in file_hashes(tmp_path, LIMITS)] == ["weights.bin"]
    before = submission_digest(tmp_path, LIMITS)
    assert "huge.pt" not in opened and "weights.bin" in opened
    with open(tmp_path / "huge.pt", "r+b") as f:
        f.truncate(4 * 2**40)
    assert submission_digest(tmp_path, LIMITS) != before  # its size is still part of the key
