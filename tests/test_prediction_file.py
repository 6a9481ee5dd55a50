"""Prediction-file mode: the numbers of code mode for the same predictions, and clear refusals of bad files."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import by_question, config_with, grade, make_reference, write_submission
from grader import build_reference
from grader.metrics import quantized_softmax
from grader.reference import load_reference

LINEAR = """
import numpy as np
import torch

W = torch.from_numpy(np.load("w1.npy"))
A = torch.from_numpy(np.load("a2.npy"))
def predict_q1(images):
    return images.flatten(1) @ W
def predict_q2(images):
    return torch.einsum("ck,nkhw->nchw", A, images)
"""
FILE_MODE = {'mode = "code"': 'mode = "predictions"'}  # every question of the config


def _weights(tmp_path: Path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {"w1": rng.normal(size=(784, 10)).astype(np.float32), "a2": (rng.normal(size=(6, 3)) * 4).astype(np.float32)}


def _same_predictions(data: Path, weights: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """What the linear model predicts, computed as the grader's child computes it (the same torch ops on the
    same batches: one batch each here), then labels for Q1 and floor(255 softmax) for Q2."""
    q1, q2 = load_reference(data, "q1"), load_reference(data, "q2")
    x1 = torch.from_numpy(q1.images).unsqueeze(1).float().div_(255).contiguous()
    x2 = torch.from_numpy(q2.images).permute(0, 3, 1, 2).float().div_(255).contiguous()
    with torch.inference_mode():
        scores = (x1.flatten(1) @ torch.from_numpy(weights["w1"])).numpy()
        logits = torch.einsum("ck,nkhw->nchw", torch.from_numpy(weights["a2"]), x2).numpy()
    return scores.argmax(1).astype(np.int64), quantized_softmax(np.ascontiguousarray(logits, np.float32))


def test_files_give_exactly_the_numbers_of_code_mode(tmp_path: Path) -> None:
    data = make_reference(tmp_path / "data", n_q1=300, n_q2=3)
    weights = _weights(tmp_path)
    code = write_submission(tmp_path / "code", LINEAR)
    for name, w in weights.items():
        np.save(code / f"{name}.npy", w)
    _, by_code = grade(code, data, tmp_path / "code.json")
    labels, probabilities = _same_predictions(data, weights)
    files = tmp_path / "files"
    files.mkdir()
    np.save(files / "Q1_label_predictions.npy", labels)
    np.save(files / "Q2_sseg_predictions.npy", probabilities)
    _, by_file = grade(files, data, tmp_path / "files.json", "--config", str(config_with(tmp_path, **FILE_MODE)))
    assert by_code["extra_data"]["metrics"] == by_file["extra_data"]["metrics"]
    assert [t["score"] for t in by_code["tests"]] == [t["score"] for t in by_file["tests"]]
    assert "on your Q2_sseg_predictions.npy" in by_question(by_file)["Q2"]["output"]

    # Q2 as labels: the same IoU, and no AP (labels have no scores to rank)
    np.save(files / "Q2_sseg_predictions.npy", probabilities.argmax(1).astype(np.uint8))
    _, by_labels = grade(files, data, tmp_path / "labels.json", "--config", str(config_with(tmp_path, **FILE_MODE)))
    q2_code, q2_labels = by_code["extra_data"]["metrics"]["q2"], by_labels["extra_data"]["metrics"]["q2"]
    assert q2_labels["mIoU"] == q2_code["mIoU"] and q2_labels["mAP"] is None
    assert [v["IoU"] for v in q2_labels["per_class"].values()] == [v["IoU"] for v in q2_code["per_class"].values()]


def test_the_courses_float_files_score_exactly_what_their_argmax_and_quantised_forms_score(tmp_path: Path) -> None:
    """Q1 as the course's (N, 10) float scores, Q2 as float probabilities: the same numbers as the labels
    of the argmax (taken in the file's own dtype, the first class winning a tie) and as floor(255 p)."""
    data = make_reference(tmp_path / "data", n_q1=300, n_q2=2)
    rng = np.random.default_rng(5)
    scores = rng.normal(size=(300, 10))
    scores[:20] = 0.25  # ties: class 0 wins
    scores[20:40, 7] = scores[20:40].max(1) + 1e-12  # a lead that float32 would round away
    h, w = load_reference(data, "q2").labels.shape[1:]
    probabilities = torch.softmax(torch.from_numpy(rng.normal(size=(2, 6, h, w)).astype(np.float32)), 1).numpy()
    config = str(config_with(tmp_path, **FILE_MODE))
    reports = []
    for name, q1, q2 in [("floats", scores, probabilities),
                         ("plain", scores.argmax(1), np.floor(probabilities * np.float32(255)).astype(np.uint8))]:
        folder = tmp_path / name
        folder.mkdir()
        np.save(folder / "Q1_label_predictions.npy", q1)
        np.save(folder / "Q2_sseg_predictions.npy", q2)
        rc, report = grade(folder, data, tmp_path / f"{name}.json", "--config", config)
        assert rc == 0 and "error" not in report["extra_data"]["metrics"]["q1"], report["extra_data"]["metrics"]
        reports.append(report)
    assert reports[0]["extra_data"]["metrics"] == reports[1]["extra_data"]["metrics"]
    assert [t["score"] for t in reports[0]["tests"]] == [t["score"] for t in reports[1]["tests"]]
    assert scores[20:40].astype(np.float32).argmax(1).tolist() != scores[20:40].argmax(1).tolist()  # the test bites


def _save_object_array(path: Path) -> None:
    np.save(path, np.array([{"label": 1}] * 20, dtype=object), allow_pickle=True)


def _truncated(path: Path) -> None:
    np.save(path, np.zeros(20, np.int64))
    path.write_bytes(path.read_bytes()[:-8])


def _version_2_1(path: Path) -> None:
    """A .npy whose header reads (format 2.x has a 4-byte length) but whose version NumPy's loader refuses."""
    with open(path, "wb") as f:
        np.lib.format.write_array(f, np.zeros(20, np.int64), version=(2, 0))
    data = bytearray(path.read_bytes())
    data[7] = 1
    path.write_bytes(bytes(data))


def _nan_at_4(path: Path) -> None:
    scores = np.zeros((20, 10), np.float32)
    scores[4, 3] = np.nan
    np.save(path, scores)


BAD_Q1 = {
    "missing": (None, "No Q1_label_predictions.npy at the top of the submission"),
    "pickle": (_save_object_array, "holds Python objects (dtype object); the grader loads no pickles"),
    "shape": (lambda p: np.save(p, np.zeros((20, 3), np.float32)),
              "has shape (20, 3); expected (20,) (integer labels) or (20, 10) (float scores"),
    "int_scores": (lambda p: np.save(p, np.zeros((20, 10), np.int64)), "scores must be floats"),
    "nan": (_nan_at_4, "image 4 has a NaN or infinite score"),
    "version_2_1": (_version_2_1, "format version 2.1, which NumPy does not write"),
    "floats": (lambda p: np.save(p, np.zeros(20, np.float32)), "labels must be integers, got dtype float32"),
    "truncated": (_truncated, "the file is cut short or has bytes after the array"),
    "range": (lambda p: np.save(p, np.arange(20)), "image 10 has a label outside 0..9"),
    "not_npy": (lambda p: p.write_bytes(b"PK\x03\x04 a zip, say"), "is not a NumPy .npy file"),
}


@pytest.mark.parametrize("case", sorted(BAD_Q1))
def test_malformed_files_are_refused_and_the_other_question_graded(tmp_path: Path, case: str) -> None:
    data = make_reference(tmp_path / "data", n_q1=20, n_q2=1)
    folder = tmp_path / "files"
    folder.mkdir()
    make, message = BAD_Q1[case]
    if make is not None:
        make(folder / "Q1_label_predictions.npy")
    h, w = load_reference(data, "q2").labels.shape[1:]
    np.save(folder / "Q2_sseg_predictions.npy", np.zeros((1, h, w), np.uint8))
    rc, report = grade(folder, data, tmp_path / "results.json", "--config", str(config_with(tmp_path, **FILE_MODE)))
    assert rc == 0
    q1 = report["extra_data"]["metrics"]["q1"]
    assert message in q1["error"] and q1["error_kind"] == "predictions", q1
    assert report["extra_data"]["metrics"]["q2"]["n"] == 1 and by_question(report)["Q1"]["score"] == 0


def test_q2_file_checks(tmp_path: Path) -> None:
    data = make_reference(tmp_path / "data", n_q2=2)
    h, w = load_reference(data, "q2").labels.shape[1:]
    folder = tmp_path / "files"
    folder.mkdir()
    config = str(config_with(tmp_path, "q2", **FILE_MODE))
    logits = np.zeros((2, 6, h, w), np.float32)
    logits[1, 2, 5, 5] = 1.5
    infinite = np.zeros((2, 6, h, w), np.float32)
    infinite[1, 0, 0, 0] = np.inf
    for array, message in [(logits, "image 1 has a probability outside [0, 1]; Q2 files hold probabilities"),
                           (infinite, "image 1 has a NaN or infinite score"),
                           (np.zeros((2, 6, h, w), np.int16), "scores must be floats (or, for Q2, uint8"),
                           (np.zeros((2, 5, h, w), np.uint8), f"expected (2, 6, {h}, {w}) (uint8 probabilities"),
                           (np.full((2, h, w), 6, np.uint8), "image 0 has a label outside 0..5")]:
        np.save(folder / "Q2_sseg_predictions.npy", array)
        _, report = grade(folder, data, tmp_path / "results.json", "--config", config)
        assert message in report["extra_data"]["metrics"]["q2"]["error"]


def test_config_refuses_a_path_as_the_file_name(tmp_path: Path) -> None:
    from grader.config import ConfigError, load_config

    config = config_with(tmp_path, "q1", **{"batch_size = 100": 'batch_size = 100\npredictions_file = "../labels.npy"'})
    with pytest.raises(ConfigError, match="expected a file name ending in .npy at the top of the submission"):
        load_config(config)


def test_submission_zip_checks_the_files_instead_of_running_code(tmp_path: Path, capsys) -> None:
    from grader.package import main as package_main

    folder = tmp_path / "files"
    folder.mkdir()
    np.save(folder / "Q1_label_predictions.npy", np.zeros(7, np.int64))
    np.save(folder / "Q2_sseg_predictions.npy", np.zeros((3, 224, 224), np.uint8))
    config = str(config_with(tmp_path, **FILE_MODE))
    assert package_main(["submission", str(folder), "--config", config, "--out", str(tmp_path / "s.zip")]) == 0
    out = capsys.readouterr().out
    assert "Q1_label_predictions.npy: 7 images, labels, well-formed" in out
    assert "Q2_sseg_predictions.npy: 3 images, labels, well-formed" in out
    np.save(folder / "Q1_label_predictions.npy", np.zeros((7, 10), np.float32))
    assert package_main(["submission", str(folder), "--config", config, "--out", str(tmp_path / "u.zip")]) == 0
    assert "Q1_label_predictions.npy: 7 images, float32 scores, well-formed" in capsys.readouterr().out
    np.save(folder / "Q1_label_predictions.npy", np.zeros(7, np.float64))
    assert package_main(["submission", str(folder), "--config", config, "--out", str(tmp_path / "t.zip")]) == 2
    assert "Q1: Q1_label_predictions.npy: labels must be integers, got dtype float64" in capsys.readouterr().err
    _version_2_1(folder / "Q1_label_predictions.npy")  # refused with a message, not a traceback
    assert package_main(["submission", str(folder), "--config", config, "--out", str(tmp_path / "v.zip")]) == 2
    assert "format version 2.1, which NumPy does not write" in capsys.readouterr().err


def test_kit_holds_the_images_and_no_labels(tmp_path: Path, capsys) -> None:
    data = make_reference(tmp_path / "data", n_q1=30, n_q2=2)
    kit = tmp_path / "kit"
    args = build_reference.get_args_parser().parse_args(["--out", str(data), "--kit", str(kit)])
    assert build_reference.main(args) == 0
    files = sorted(str(p.relative_to(kit)) for p in kit.rglob("*") if p.is_file())
    names = load_reference(data, "q2").names
    assert files == sorted(["README.md", "q1/classes.txt", "q1/images.npy", "q2/classes.txt",
                            *(f"q2/images/{n}.jpg" for n in names)])
    assert np.array_equal(np.load(kit / "q1" / "images.npy"), np.load(data / "q1" / "images.npy"))
    readme = (kit / "README.md").read_text()
    assert "float scores, shape (30, 10)" in readme and "integer labels, shape (30,)" in readme and "(2, 6, " in readme
    assert build_reference.main(args) == 2 and "exists" in capsys.readouterr().err
    assert json.dumps(files).count("labels") == 0
