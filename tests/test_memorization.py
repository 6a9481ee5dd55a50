"""The memorization probe (#27 item 3): transformed copies of some held-out images, mixed in at secret
positions, tell a table of public labels from a model. The copies keep their class, count in no metric but
the probe's, and the finding reaches staff only (extra_data, the batch's CSV and summary), never a score."""
from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import REFERENCE, REPO, config_with, grade, make_reference, write_submission
from grader import batch, memorization
from grader.config import ConfigError, load_config
from grader.reference import load_reference
from grader.rescore import rescored

SECRET = {'split_seed = "mp-grader"': 'split_seed = "a secret of the course"'}
# The review's attack: the label of every public image, by its bytes' hash; class 0 for anything else.
LOOKUP = """
import hashlib
import numpy as np
import torch
TABLE = dict(zip(np.load("hashes.npy").tolist(), np.load("labels.npy").tolist()))
def predict_q1(images):
    pixels = (images * 255).round().to(torch.uint8).numpy()
    out = torch.zeros(len(images), 10)
    for i, image in enumerate(pixels):
        out[i, TABLE.get(hashlib.sha256(image[0].tobytes()).hexdigest(), 0)] = 1
    return out
"""


def _digest(images: np.ndarray) -> list[str]:
    return [hashlib.sha256(image.tobytes()).hexdigest() for image in images]


def test_copies_are_the_images_with_seeded_noise_and_none_has_an_images_bytes() -> None:
    for question in ("q1", "q2"):
        ref = load_reference(REFERENCE, question)
        images = ref.images[:300]
        copies = memorization.transformed(question, images, "seed")
        assert copies.dtype == np.uint8 and copies.shape == images.shape
        assert np.abs(copies.astype(int) - images.astype(int)).max() == memorization.NOISE
        assert not set(_digest(copies)) & set(_digest(ref.images))
        assert np.array_equal(memorization.transformed(question, images, "seed"), copies)
        assert not np.array_equal(memorization.transformed(question, images, "another seed"), copies)
    probe = memorization.build("q2", ref.images[:10], ref.labels[:10], 6, 0.5, "seed")
    for copy, source in zip(probe.images[probe.is_copy], probe.source):  # each copy stands beside its labels
        assert np.abs(copy.astype(int) - ref.images[source].astype(int)).max() <= memorization.NOISE


@pytest.mark.parametrize("batch_size", [1, 7, 64, 1000])
def test_the_child_sees_the_originals_in_order_with_the_copies_mixed_in(batch_size: int) -> None:
    ref = load_reference(REFERENCE, "q1")
    images, labels = ref.images[:200], ref.labels[:200]
    probe = memorization.build("q1", images, labels, 10, 0.25, "seed")
    assert len(probe.images) == 250 and probe.is_copy.sum() == 50 and len(set(probe.source)) == 50
    assert np.array_equal(probe.images[~probe.is_copy], images)
    assert 0 < np.flatnonzero(probe.is_copy).mean() / 250 < 1 and not probe.is_copy[-50:].all()  # mixed, not appended
    assert not np.array_equal(np.sort(probe.source), probe.source)  # nor in the originals' order
    seen, firsts = [], []
    for start in range(0, 250, batch_size):
        scores = probe.images[start:start + batch_size].reshape(-1, 784)[:, 300:310].astype(np.float32)
        first, originals = probe.route(start, scores)
        firsts.append((first, len(originals)))
        seen.append(originals)
    assert np.array_equal(np.concatenate(seen), images.reshape(-1, 784)[:, 300:310])
    assert all(first == sum(n for _, n in firsts[:i]) for i, (first, _) in enumerate(firsts))
    other = memorization.build("q1", images, labels, 10, 0.25, "another seed")
    assert not np.array_equal(other.is_copy, probe.is_copy) and set(other.source) != set(probe.source)


def _run(probe: memorization.Probe, predict) -> dict:
    for start in range(0, len(probe.images), 100):
        probe.route(start, predict(probe.images[start:start + 100]))
    return memorization.verdict(probe.result(), 0.03)


def test_a_table_of_the_labels_is_flagged_and_a_model_that_ignores_the_bytes_is_not() -> None:
    ref = load_reference(REFERENCE, "q1")
    images, labels = ref.images[:1000], ref.labels[:1000]
    table = dict(zip(_digest(images), labels))
    lookup = lambda x: np.eye(10)[[table.get(d, 0) for d in _digest(x)]]  # noqa: E731
    found = _run(memorization.build("q1", images, labels, 10, 0.2, "seed"), lookup)
    assert found["copies"] == 200 and found["originals"] == 1.0 and found["flagged"]
    assert found["copied"] == pytest.approx(np.mean(labels[memorization.chosen(1000, 0.2, "seed", "q1")] == 0), abs=1e-4)
    # A crude honest model: the class of the nearest class mean of the images' pixel sums (which a one-pixel
    # shift of a centred garment barely moves).
    sums = images.reshape(1000, -1).sum(1)
    means = np.array([sums[labels == c].mean() for c in range(10)])
    crude = lambda x: -np.abs(x.reshape(len(x), -1).sum(1)[:, None] - means[None])  # noqa: E731
    found = _run(memorization.build("q1", images, labels, 10, 0.2, "seed"), crude)
    assert 0.15 < found["originals"] < 0.9 and abs(found["drop"]) < 0.03 and not found["flagged"]
    assert memorization.verdict({**found, "drop": None}, 0.03)["flagged"] is False


def test_the_probe_needs_code_mode_and_a_secret_seed(tmp_path: Path) -> None:
    on = {"memorization_copies = 0.0": "memorization_copies = 0.1"}
    bad = config_with(tmp_path, "q1", **on, **{'mode = "code"': 'mode = "predictions"'})
    with pytest.raises(ConfigError, match=r"\[q1\].memorization_copies: the memorization probe adds images .* needs "
                                          r"mode = \"code\""):
        load_config(bad)
    assert "memorization probe's copies" in load_config(config_with(tmp_path, "q1", **on)).public_seed_warning
    assert load_config(config_with(tmp_path, "q1", **on, **SECRET)).public_seed_warning is None
    with pytest.raises(ConfigError, match=r"\[q1\].memorization_copies: expected a number >= 0 and <= 0.5"):
        load_config(config_with(tmp_path, "q1", **{"memorization_copies = 0.0": "memorization_copies = 0.6"}))


@pytest.fixture(scope="module")
def class_graded(tmp_path_factory) -> dict:
    """A class of two on public Q1 data with the probe on: the review's table and the reference model."""
    tmp = tmp_path_factory.mktemp("probe")
    os.chmod(tmp, 0o755)
    data = make_reference(tmp / "data", n_q1=300)
    ref = load_reference(data, "q1")
    table = write_submission(tmp / "class" / "table", LOOKUP)
    np.save(table / "hashes.npy", np.array(_digest(ref.images)))
    np.save(table / "labels.npy", ref.labels)
    (tmp / "class" / "model").mkdir()
    for name in ("predict.py", "models.py", "q1_fashionnet.pt"):
        (tmp / "class" / "model" / name).write_bytes((REPO / "submission" / name).read_bytes())
    config = config_with(tmp, "q1", **SECRET, **{"memorization_copies = 0.0": "memorization_copies = 0.2"})
    out = tmp / "out"
    assert batch.main([str(tmp / "class"), "--data", str(data), "--out", str(out), "--config", str(config),
                       "--device", "cpu"]) == 0
    reports = {name: json.loads((out / "submissions" / name / "results.json").read_text()) for name in ("table", "model")}
    return {"tmp": tmp, "data": data, "out": out, "config": config, "reports": reports}


def test_the_table_is_flagged_for_staff_only_and_keeps_its_score(class_graded: dict) -> None:
    table, model = class_graded["reports"]["table"], class_graded["reports"]["model"]
    found = table["extra_data"]["memorization"]["q1"]
    assert found["copies"] == 60 and found["originals"] == 1.0 and found["flagged"] and found["drop"] > 0.5
    assert found["line"] == 0.03 and found["metric"] == "accuracy"
    assert table["tests"][0]["score"] == 20 and table["extra_data"]["metrics"]["q1"]["n"] == 300
    reference = model["extra_data"]["memorization"]["q1"]
    assert not reference["flagged"] and abs(reference["drop"]) <= 0.03, reference
    for report in (table, model):  # nothing a student reads mentions it
        seen = json.dumps([report["tests"], report["output"], report.get("leaderboard")]).lower()
        assert "memoriz" not in seen and "copies" not in seen
    with open(class_graded["out"] / "scores.csv", newline="") as f:
        rows = {row["submission"]: row for row in csv.DictReader(f)}
    assert rows["table"]["q1_memorization_flagged"] == "yes" and float(rows["table"]["q1_memorization_drop"]) > 0.5
    assert rows["model"]["q1_memorization_flagged"] == ""
    summary = (class_graded["out"] / "summary.md").read_text()
    assert "## Memorization probe" in summary and "- ` table ` (Q1): accuracy 1.0000 on the originals" in summary
    assert "1 flagged of 2 measured." in summary and "` model ` (Q1)" not in summary


def test_the_copies_change_no_metric(class_graded: dict, tmp_path: Path) -> None:
    """The reference model graded without the probe has the metrics it has with it, to the last digit."""
    tmp = class_graded["tmp"]
    rc, plain = grade(tmp / "class" / "model", class_graded["data"], tmp_path / "results.json", "--config",
                      str(config_with(tmp_path, "q1")))
    assert rc == 0 and "memorization" not in plain["extra_data"]
    assert plain["extra_data"]["metrics"] == class_graded["reports"]["model"]["extra_data"]["metrics"]


def test_a_rescore_judges_the_finding_by_the_new_line(class_graded: dict, tmp_path: Path) -> None:
    report = class_graded["reports"]["table"]
    text = class_graded["config"].read_text()
    same = rescored(report, load_config(class_graded["config"]))  # the same config changes nothing
    assert same["extra_data"] == report["extra_data"] and same["tests"][0]["score"] == report["tests"][0]["score"]
    higher = tmp_path / "higher.toml"
    higher.write_text(text.replace("memorization_line = 0.03", "memorization_line = 0.99"))
    found = rescored(report, load_config(higher))["extra_data"]["memorization"]["q1"]
    assert found == {**report["extra_data"]["memorization"]["q1"], "line": 0.99, "flagged": False}
    off = tmp_path / "off.toml"
    off.write_text(text.replace("memorization_copies = 0.2", "memorization_copies = 0.0"))
    assert rescored(report, load_config(off))["extra_data"]["memorization"] == {}
