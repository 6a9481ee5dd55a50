"""The public/private split: a fixed rule, the parts' metrics adding up to the whole set's, and a report that
shows the public part now and keeps the score (the private part) for later."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import by_question, config_with, grade, make_reference, write_submission
from grader.config import ConfigError, load_config
from grader.metrics import ClassificationAccumulator, SegmentationAccumulator
from grader.scoring import score_question
from grader.split import private_mask

SPLIT = {"private_fraction = 0.0": "private_fraction = 0.5"}
NOISY_Q1 = """
import torch
def predict_q1(images):
    torch.manual_seed(int(images.sum()) % 1000)
    scores = images.flatten(1)[:, :10].clone()
    scores[torch.rand(len(images)) < {p}] += 5 * torch.rand(10)
    return scores
"""


def test_the_split_is_fixed_disjoint_and_follows_the_written_rule() -> None:
    mask = private_mask(2000, 0.3, "seed", "q1")
    assert np.array_equal(mask, private_mask(2000, 0.3, "seed", "q1"))  # every run, every machine
    assert np.array_equal(private_mask(500, 0.3, "seed", "q1"), mask[:500])  # more images move none across
    assert abs(mask.mean() - 0.3) < 4 * (0.3 * 0.7 / 2000) ** 0.5
    assert not np.array_equal(private_mask(2000, 0.3, "other", "q1"), mask)
    assert not np.array_equal(private_mask(2000, 0.3, "seed", "q2"), mask)
    assert not private_mask(100, 0.0, "seed", "q1").any()
    for i in (0, 7, 1999):  # the rule as the docstring writes it, computed apart
        digest = hashlib.sha256(f"seed/q1/{i}".encode()).digest()
        assert mask[i] == (int.from_bytes(digest[:8], "big") < int(0.3 * 2**64))


def test_the_parts_metrics_recombine_into_the_whole_sets() -> None:
    rng = np.random.default_rng(0)
    labels, scores = rng.integers(0, 10, 300), rng.normal(size=(300, 10)).astype(np.float32)
    mask = private_mask(300, 0.4, "s", "q1")
    whole, public, private = (ClassificationAccumulator(10) for _ in range(3))
    whole.update(scores, labels)
    public.update(scores[~mask], labels[~mask])
    private.update(scores[mask], labels[mask])
    merged = public.merged(private).compute()
    assert np.array_equal(merged["confusion_matrix"], whole.compute()["confusion_matrix"])
    assert merged["accuracy"] == whole.compute()["accuracy"]
    seg_labels = rng.integers(0, 6, (12, 8, 8))
    seg_scores = rng.integers(0, 256, (12, 6, 8, 8)).astype(np.uint8)
    mask = private_mask(12, 0.5, "s", "q2")
    whole2, public2, private2 = (SegmentationAccumulator(6) for _ in range(3))
    whole2.update(seg_scores, seg_labels)
    public2.update(seg_scores[~mask], seg_labels[~mask])
    private2.update(seg_scores[mask], seg_labels[mask])
    expected, got = whole2.compute(), public2.merged(private2).compute()
    assert got["n"] == expected["n"] == 12
    for key in ("AP", "IoU", "confusion_matrix"):
        assert np.array_equal(got[key], expected[key]), key


def test_a_private_part_shown_at_once_is_refused(tmp_path: Path) -> None:
    text = config_with(tmp_path, "q1", **SPLIT).read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace('private_visibility = "after_due_date"', 'private_visibility = "visible"'))
    with pytest.raises(ConfigError, match=r"\[q1\].private_visibility: a split question's private part must not"):
        load_config(bad)
    hidden = text.replace('rounding = "nearest"\nvisibility = "visible"', 'rounding = "nearest"\nvisibility = "hidden"')
    assert hidden != text
    bad.write_text(hidden)  # a hidden question whose private part would show after the due date
    with pytest.raises(ConfigError, match=r"private_visibility = 'after_due_date' would show the private part"):
        load_config(bad)
    bad.write_text(hidden.replace('private_visibility = "after_due_date"', 'private_visibility = "hidden"'))
    assert load_config(bad).questions["q1"].private_visibility == "hidden"
    bad.write_text(text.replace("private_fraction = 0.5", "private_fraction = 1.0"))
    with pytest.raises(ConfigError, match=r"\[q1\].private_fraction: expected a number >= 0 and <= 0.95, got 1.0"):
        load_config(bad)


def test_a_split_question_shows_its_public_part_now_and_keeps_its_score(tmp_path: Path, capsys) -> None:
    config = config_with(tmp_path, "q1", **SPLIT)
    data = make_reference(tmp_path / "data", n_q1=200)
    submission = write_submission(tmp_path / "submission", NOISY_Q1.format(p=0.3))
    rc, report = grade(submission, data, tmp_path / "results.json", "--config", str(config), "--isolation", "process")
    assert rc == 0
    public_test, scored_test = report["tests"]
    assert public_test["name"] == "Q1 Fashion-MNIST classification (public part)" and public_test["max_score"] == 0
    assert public_test["visibility"] == "visible" and scored_test["visibility"] == "after_due_date"
    metrics = report["extra_data"]["metrics"]["q1"]
    public, private = metrics["public"], metrics["private"]
    mask = private_mask(200, 0.5, "mp-grader", "q1")
    assert (public["n"], private["n"], metrics["n"]) == (int((~mask).sum()), int(mask.sum()), 200)
    assert public["accuracy"] != private["accuracy"]  # else the test below could not tell them apart
    assert abs(public["accuracy"] * public["n"] + private["accuracy"] * private["n"] - metrics["accuracy"] * 200) < 1e-9
    cfg = load_config(config).questions["q1"]
    assert scored_test["score"] == score_question(dataclasses.replace(cfg, score_on="all"), private).points
    assert f"Accuracy: {100 * public['accuracy']:.1f} %" in public_test["output"]
    assert "| T-shirt/top |" in public_test["output"]  # per-class detail on the public part
    assert f"Accuracy: {100 * private['accuracy']:.1f} %" in scored_test["output"]
    # Everything students see at once: the public part only.
    seen_now = json.dumps([report["output"], report["leaderboard"], public_test])
    assert f"{100 * private['accuracy']:.1f} %" not in seen_now and f"{100 * metrics['accuracy']:.1f} %" not in seen_now
    assert f"{scored_test['score']:g} / 20" not in report["output"] and "score: shown after the due date" in report["output"]
    assert report["leaderboard"][0] == {"name": "Q1 accuracy", "value": round(public["accuracy"], 4), "order": "desc"}
    captured = capsys.readouterr()
    printed = captured.out
    assert "public part (" in printed and "Q1 Fashion-MNIST classification: shown after the due date" in printed
    # The shipped seed is public: staff are told, in extra_data and on stderr (#27).
    assert "split_seed is the public default" in report["extra_data"]["grader"]["warning"]
    assert "split_seed is the public default" in captured.err and "public default" not in seen_now
    assert f"{100 * private['accuracy']:.1f} %" not in printed
    with_all = tmp_path / "all.toml"
    with_all.write_text(config.read_text().replace('score_on = "private"', 'score_on = "all"'))
    assert score_question(load_config(with_all).questions["q1"], metrics).points == \
        score_question(dataclasses.replace(cfg, score_on="all"), metrics).points


def test_rescoring_a_split_equals_regrading_and_refuses_another_split(tmp_path: Path, capsys) -> None:
    from grader.rescore import main as rescore

    config = config_with(tmp_path, "q1", **SPLIT)
    edited = tmp_path / "edited.toml"
    edited.write_text(config.read_text().replace("accuracy = 0.90", "accuracy = 0.35").replace("points = 20", "points = 25"))
    data = make_reference(tmp_path / "data", n_q1=120)
    for p in (0.1, 0.5, 0.9):
        submission = write_submission(tmp_path / f"s{p}", NOISY_Q1.format(p=p))
        first, again = tmp_path / f"r{p}.json", tmp_path / f"regraded{p}.json"
        grade(submission, data, first, "--config", str(config), "--isolation", "process")
        assert rescore([str(first), "--config", str(edited)]) == 0
        rescored = json.loads(first.with_name(f"{first.stem}.rescored.json").read_text())
        _, regraded = grade(submission, data, again, "--config", str(edited), "--isolation", "process")
        assert [(t["name"], t["score"], t["max_score"], t.get("visibility")) for t in rescored["tests"]] == \
            [(t["name"], t["score"], t["max_score"], t.get("visibility")) for t in regraded["tests"]]
    reseeded = tmp_path / "reseeded.toml"
    reseeded.write_text(edited.read_text().replace('split_seed = "mp-grader"', 'split_seed = "another"'))
    capsys.readouterr()
    assert rescore([str(first), "--config", str(reseeded)]) == 2
    assert "splits Q1's images otherwise than the graded one did" in capsys.readouterr().err
    assert by_question(regraded)["Q1"]["max_score"] == 25


def test_the_class_report_shows_the_metrics_each_score_came_from(tmp_path: Path) -> None:
    import csv

    from grader.batch.class_report import write_csv
    from grader.batch.runs import Outcome
    from grader.batch.submissions import Entry

    config = config_with(tmp_path, "q1", **SPLIT)
    submission = write_submission(tmp_path / "s", NOISY_Q1.format(p=0.4))
    _, report = grade(submission, make_reference(tmp_path / "data", n_q1=120), tmp_path / "r.json", "--config",
                      str(config), "--isolation", "process")
    write_csv(load_config(config), [Outcome(Entry("s", submission, [], ""), report, 1.0)], tmp_path / "scores.csv")
    with open(tmp_path / "scores.csv", newline="") as f:
        row = next(csv.DictReader(f))
    private = report["extra_data"]["metrics"]["q1"]["private"]
    assert row["q1_accuracy"] == f"{private['accuracy']:.4f}" and row["q1_score"] == f"{report['tests'][1]['score']:g}"
    assert row["q1_accuracy_low"] == f"{private['interval']['accuracy'][0]:.4f}"


def test_instructor_checks_and_their_columns_see_what_students_see_now(tmp_path: Path) -> None:
    """A check of a split question gets its public part as context["metrics"] (the whole set's numbers
    would leak the private part through its test or leaderboard column, #27), and the whole, labelled, as
    context["metrics_with_private"]."""
    import textwrap

    checks = tmp_path / "checks"
    checks.mkdir()
    (checks / "test_parts.py").write_text(textwrap.dedent('''
        import unittest
        from gradescope_utils.autograder_utils.decorators import leaderboard, weight
        from grader.checks import context

        class Parts(unittest.TestCase):
            @weight(0)
            def test_counts(self):
                """counts"""
                print("now", context["metrics"]["q1"]["n"], "whole", context["metrics_with_private"]["q1"]["n"])

            @leaderboard("Q1 accuracy by a check")
            def test_column(self, set_leaderboard_value=None):
                set_leaderboard_value(context["metrics"]["q1"]["accuracy"])
    '''))
    config = config_with(tmp_path, "q1", **SPLIT, **{'checks = ""': f'checks = "{checks}"'})
    data = make_reference(tmp_path / "data", n_q1=200)
    submission = write_submission(tmp_path / "submission", NOISY_Q1.format(p=0.3))
    rc, report = grade(submission, data, tmp_path / "results.json", "--config", str(config), "--isolation", "process")
    assert rc == 0
    public = report["extra_data"]["metrics"]["q1"]["public"]
    counts = next(t for t in report["tests"] if t["name"] == "counts")
    assert f"now {public['n']} whole 200" in counts["output"] and public["n"] < 200
    column = next(e for e in report["leaderboard"] if e["name"] == "Q1 accuracy by a check")
    assert column["value"] == pytest.approx(public["accuracy"])
