"""End to end: grade small submissions whose expected numbers the test computes on its own."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from conftest import REPO, config_with, grade, make_reference, by_question, write_submission
from reference_metrics import sort_based_ap

LINEAR = """
import numpy as np
import torch

W = torch.from_numpy(np.load("w1.npy"))  # relative path: the submission root is the working directory
A = torch.from_numpy(np.load("a2.npy"))
B = torch.from_numpy(np.load("b2.npy"))
print("loaded linear weights")


def predict_q1(images):
    return images.flatten(1) @ W


def predict_q2(images):
    return torch.einsum("ck,nkhw->nchw", A, images) + B.view(1, -1, 1, 1)
"""


def npy_bytes(array: np.ndarray, path: Path) -> bytes:
    np.save(path, array)
    return path.read_bytes()


@pytest.fixture
def linear_submission(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(42)
    weights = {"w1": rng.normal(size=(784, 10)).astype(np.float32),
               "a2": rng.normal(size=(6, 3)).astype(np.float32) * 4,
               "b2": np.array([2.0, -1, -1, 0, 0, 0.5], np.float32)}
    files = {f"{k}.npy": npy_bytes(v, tmp_path / f"{k}.npy") for k, v in weights.items()}
    return write_submission(tmp_path / "submission", LINEAR, **files), weights


def expected_q1(data: Path, w: np.ndarray) -> tuple[float, np.ndarray]:
    images = np.load(data / "q1" / "images.npy").reshape(-1, 784) / 255.0
    labels = np.load(data / "q1" / "labels.npy")
    pred = (images @ w.astype(np.float64)).argmax(1)
    per_class = np.array([(pred[labels == c] == c).mean() if (labels == c).any() else np.nan for c in range(10)])
    return float((pred == labels).mean()), per_class


def expected_q2(data: Path, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    stems = sorted(p.stem for p in (data / "q2" / "images").glob("*.jpg"))
    images = np.stack([np.asarray(Image.open(data / "q2" / "images" / f"{s}.jpg").convert("RGB")) for s in stems])
    labels = np.stack([np.asarray(Image.open(data / "q2" / "labels" / f"{s}.png")) for s in stems])
    logits = np.einsum("ck,nhwk->nchw", a.astype(np.float64), images / 255.0) + b.reshape(1, -1, 1, 1)
    p = np.exp(logits - logits.max(1, keepdims=True))
    scores = np.floor(255 * p / p.sum(1, keepdims=True))
    aps = np.array([sort_based_ap(labels == c, scores[:, c]) for c in range(6)])
    pred = scores.argmax(1)
    present = np.union1d(labels, pred)
    cm = sk_confusion_matrix(labels.ravel(), pred.ravel(), labels=present)
    ious = np.full(6, np.nan)
    ious[present] = np.diag(cm) / (cm.sum(0) + cm.sum(1) - np.diag(cm))
    return aps, ious


def test_linear_submission_numbers_match_independent_computation(tmp_path: Path, linear_submission, capsys) -> None:
    submission, w = linear_submission
    data = make_reference(tmp_path / "data", n_q1=300, n_q2=3)
    rc, report = grade(submission, data, tmp_path / "results.json", "--plots", str(tmp_path / "plots"))
    assert rc == 0
    for name in ("q1_confusion.png", "q2_confusion.png", "q2_overlays.png"):
        assert (tmp_path / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    metrics = report["extra_data"]["metrics"]

    accuracy, per_class = expected_q1(data, w["w1"])
    assert metrics["q1"]["n"] == 300
    assert metrics["q1"]["accuracy"] == pytest.approx(accuracy, abs=1e-12)
    got = np.array([np.nan if v is None else v for v in metrics["q1"]["per_class_accuracy"].values()])
    np.testing.assert_allclose(got, per_class)
    assert list(metrics["q1"]["per_class_accuracy"])[:2] == ["T-shirt/top", "Trouser"]

    aps, ious = expected_q2(data, w["a2"], w["b2"])
    assert metrics["q2"]["n"] == 3
    for (name, values), ap, iou in zip(metrics["q2"]["per_class"].items(), aps, ious):
        # float32 logits in the submission vs float64 here can move a few pixels across a quantization step
        assert (values["AP"] is None) == np.isnan(ap), name
        assert (values["IoU"] is None) == np.isnan(iou), name
        if values["AP"] is not None:
            assert values["AP"] == pytest.approx(ap, abs=2e-4), name
        if values["IoU"] is not None:
            assert values["IoU"] == pytest.approx(iou, abs=2e-4), name
    assert metrics["q2"]["mAP"] == pytest.approx(np.nanmean(aps), abs=2e-4)
    assert metrics["q2"]["mIoU"] == pytest.approx(np.nanmean(ious), abs=2e-4)

    tests = by_question(report)
    assert tests["Q1"]["score"] == math.floor(20 * min(accuracy / 0.9, 1) + 0.5)
    assert tests["Q2"]["score"] == math.floor(30 * min(np.nanmean(ious) / 0.55, 1) + 0.5)
    assert tests["Q1"]["max_score"] == 20 and tests["Q2"]["max_score"] == 30
    assert f"Accuracy: {100 * accuracy:.1f} %" in tests["Q1"]["output"]
    assert "loaded linear weights" in tests["Q1"]["output"]  # the student's own print, kept for them
    assert {e["name"]: e["value"] for e in report["leaderboard"]} == {
        "Q1 accuracy": round(accuracy, 4), "Q2 mAP": round(metrics["q2"]["mAP"], 4),
        "Q2 mIoU": round(metrics["q2"]["mIoU"], 4)}
    out = capsys.readouterr().out
    assert f"{'mean':>20s}: AP: {metrics['q2']['mAP']:0.2f}, IoU: {metrics['q2']['mIoU']:0.2f}" in out
    assert "Total:" in out


def test_reference_submission_on_a_slice(tmp_path: Path) -> None:
    """The real models of submission/ on the first held-out images (the full run is `make grade`)."""
    data = make_reference(tmp_path / "data", n_q1=1000, n_q2=4)
    rc, report = grade(REPO / "submission", data, tmp_path / "results.json")
    assert rc == 0
    metrics = report["extra_data"]["metrics"]
    assert metrics["q1"]["accuracy"] > 0.9, metrics["q1"]
    assert metrics["q2"]["mIoU"] > 0.2 and metrics["q2"]["mAP"] > 0.3, metrics["q2"]
    assert by_question(report)["Q1"]["score"] == 20


def test_missing_question_data_is_a_staff_error_and_the_other_question_is_graded(tmp_path: Path,
                                                                                 linear_submission) -> None:
    submission, _ = linear_submission
    data = make_reference(tmp_path / "data", n_q1=50)  # no q2/
    rc, report = grade(submission, data, tmp_path / "results.json")
    assert rc == 2
    tests = by_question(report)
    assert tests["Q2"]["score"] == 0 and "grader problem, not yours" in tests["Q2"]["output"]
    assert report["extra_data"]["metrics"]["q1"]["n"] == 50
    assert "error" in report["extra_data"]["metrics"]["q2"]


def test_zip_with_a_top_folder_is_found(tmp_path: Path, linear_submission) -> None:
    submission, _ = linear_submission
    outer = tmp_path / "upload"
    outer.mkdir()
    submission.rename(outer / "my_submission")
    data = make_reference(tmp_path / "data", n_q1=40)
    rc, report = grade(outer, data, tmp_path / "results.json", "--config", str(config_with(tmp_path, "q1")))
    assert rc == 0
    assert report["extra_data"]["metrics"]["q1"]["n"] == 40
    assert "my_submission/predict.py" in report["output"]


def test_no_predict_py_at_all(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("hi")
    data = make_reference(tmp_path / "data", n_q1=10, n_q2=1)
    rc, report = grade(empty, data, tmp_path / "results.json")
    assert rc == 0
    assert all(t["score"] == 0 for t in report["tests"])
    assert "No predict.py" in by_question(report)["Q1"]["output"]
    assert "No predict.py" in report["extra_data"]["metrics"]["q2"]["error"]
