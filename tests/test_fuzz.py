"""Every malformed input is the student's error: odd uploads, prediction files and Gradescope metadata each
end in exit 0 and a valid results.json (conftest.grade validates it against Gradescope's schema), never in
"the autograder itself failed". Seeded, so a failure reproduces."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import config_with, grade, make_reference, write_submission

ZEROS = "def predict_q1(images):\n    import torch\n    return torch.zeros(len(images), 10)\n"
FILE_MODE = {'mode = "code"': 'mode = "predictions"'}


def _deep_path(root: Path) -> None:
    """A relative path of about 4,000 bytes: within every count, size and depth cap, past what a copy into a
    scratch folder can name (PATH_MAX is 4096)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    for i in range(16):  # made one level at a time, relative to the last: the whole path is too long to name
        name = chr(ord("a") + i) * 250
        os.mkdir(name, dir_fd=fd)
        fd, old = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd), fd
        os.close(old)
    os.close(os.open("weights.bin", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
    os.close(fd)


def _odd_names(root: Path) -> None:
    for name in ("new\nline.py", "bad\udcffbyte.bin", "\u202eevil.txt", "-rf", "=cmd.csv", " "):
        (root / os.fsencode(name).decode("utf-8", "surrogateescape")).write_bytes(b"x")


UPLOADS = {
    "deep_path": (_deep_path, "is a path of"),
    "odd_names": (_odd_names, None),
    "predict_is_a_folder": (lambda r: (r / "predict.py").unlink() or (r / "predict.py").mkdir(), "No predict.py"),
    "empty_predict": (lambda r: (r / "predict.py").write_text(""), "has no function predict_q1"),
    "binary_predict": (lambda r: (r / "predict.py").write_bytes(b"\x00\xff\xfe" * 100), "importing predict.py failed"),
    "empty_folders": (lambda r: [(r / f"d{i}").mkdir() for i in range(15)], None),
}


@pytest.mark.parametrize("case", sorted(UPLOADS))
def test_odd_uploads(tmp_path: Path, case: str) -> None:
    submission = write_submission(tmp_path / "submission", ZEROS)
    make, message = UPLOADS[case]
    make(submission)
    rc, report = grade(submission, make_reference(tmp_path / "data", n_q1=5), tmp_path / "results.json",
                       "--config", str(config_with(tmp_path, "q1")), "--isolation", "process")
    assert rc == 0, report["output"]
    assert "autograder itself failed" not in json.dumps(report)
    q1 = report["extra_data"]["metrics"]["q1"]
    assert (message is None and "error" not in q1) or (message is not None and message in q1.get("error", "")), q1


def _random_npy(rng: np.random.Generator, path: Path) -> None:
    """One of many ways to be almost a .npy file."""
    choice = int(rng.integers(8))
    good = path.with_suffix(".tmp")
    dtype = rng.choice(["<i8", "<f4", ">f8", "|u1", "<c8", "|b1", "<U3", "<M8[s]"])
    shape = tuple(int(s) for s in rng.integers(0, 12, size=int(rng.integers(0, 4))))
    np.save(good, np.zeros(shape, dtype=dtype))
    data = bytearray(good.with_suffix(".tmp.npy").read_bytes())
    good.with_suffix(".tmp.npy").unlink()
    if choice == 0:
        data = data[: int(rng.integers(len(data)))]  # cut anywhere, the header included
    elif choice == 1:
        data[6:8] = bytes(rng.integers(0, 4, size=2, dtype=np.uint8))  # any version
    elif choice == 2:
        data[8:10] = bytes(rng.integers(0, 256, size=2, dtype=np.uint8))  # any header length
    elif choice == 3:
        i = int(rng.integers(10, max(11, len(data))))
        data[i:i + 1] = bytes([int(rng.integers(256))])  # one byte of the header or the data changed
    elif choice == 4:
        data = bytearray(rng.integers(0, 256, size=int(rng.integers(1, 300)), dtype=np.uint8).tobytes())
    elif choice == 5:
        data += b"\0" * int(rng.integers(1, 64))  # bytes after the array
    elif choice == 6:
        data = bytearray(data.replace(b"False", b"True"))  # Fortran order
    path.write_bytes(bytes(data))


def test_fuzzed_prediction_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(20261203)
    data = make_reference(tmp_path / "data", n_q1=11)
    config = str(config_with(tmp_path, "q1", **FILE_MODE))
    kinds = set()
    for i in range(40):
        folder = tmp_path / f"s{i}"
        folder.mkdir()
        _random_npy(rng, folder / "Q1_label_predictions.npy")
        rc, report = grade(folder, data, tmp_path / f"r{i}.json", "--config", config, "--isolation", "process")
        q1 = report["extra_data"]["metrics"]["q1"]
        assert rc == 0 and q1.get("error_kind", "predictions") == "predictions", (i, q1)
        kinds.add("error" in q1)
    assert kinds == {True, False} or kinds == {True}


def _metadata(rng: np.random.Generator) -> object:
    odd = [None, 3, "x", [], {}, {"score": "n/a"}, {"results": []}, {"results": {"extra_data": []}},
           {"results": {"tests": "many"}}, {"results": {"tests": [{"score": "NaN"}, 7]}, "submission_time": "yesterday"},
           {"submission_time": "2026-12-03T10:00:00+00:00", "results": {"tests": [{"score": 1e309}], "score": "x"}},
           {"submission_time": "2026-12-03T11:00:00", "autograder_error": "yes"}]
    previous = [odd[int(i)] for i in rng.integers(0, len(odd), size=int(rng.integers(0, 6)))]
    top = [{"created_at": "2026-12-03T12:00:00+00:00", "previous_submissions": previous},
           {"created_at": None, "previous_submissions": previous}, {"previous_submissions": {}}, [previous], "text"]
    return top[int(rng.integers(len(top)))]


def test_fuzzed_submission_metadata(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    data = make_reference(tmp_path / "data", n_q1=11)
    config = str(config_with(tmp_path, "q1", **{**FILE_MODE, "daily_submission_limit = 0": "daily_submission_limit = 1"}))
    folder = tmp_path / "files"
    folder.mkdir()
    np.save(folder / "Q1_label_predictions.npy", np.zeros(11, np.int64))
    for i in range(30):
        metadata = tmp_path / f"m{i}.json"
        metadata.write_text(json.dumps(_metadata(rng)))
        rc, report = grade(folder, data, tmp_path / f"r{i}.json", "--config", config, "--isolation", "process",
                           "--submission-metadata", str(metadata))
        assert rc == 0, (i, metadata.read_text(), report["output"])
        assert "autograder itself failed" not in json.dumps(report)
