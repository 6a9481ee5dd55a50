"""Reports: Gradescope's results.json (written atomically) and the terminal summary, in the course's format."""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Sequence

from grader import __version__, visibility
from grader.atomic import PendingFile
from grader.config import GraderConfig, QuestionConfig
from grader.evaluation import QuestionResult
from grader.scoring import Score, score_question, scored_metrics
from grader.visibility import VISIBLE, WHEN, may_show, number, test_visibility, visible_score, withheld

LEADERBOARD = (("q1", "accuracy", "Q1 accuracy"), ("q2", "mAP", "Q2 mAP"), ("q2", "mIoU", "Q2 mIoU"))


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def _two(x: float | None) -> str:
    return "n/a" if x is None else f"{x:0.2f}"


def metrics_text(question: str, m: dict) -> str:
    """The course's own print-out of a question's metrics (the whole set's, or a part's)."""
    if question == "q1":
        lines = [f"Accuracy: {_pct(m['accuracy'])}"]
        lines += [f"Accuracy of {name} : {_pct(v)}" for name, v in m["per_class_accuracy"].items()]
    else:
        lines = [f"{name:>20s}: AP: {_two(v['AP'])}, IoU: {_two(v['IoU'])}" for name, v in m["per_class"].items()]
        lines.append(f"{'mean':>20s}: AP: {_two(m['mAP'])}, IoU: {_two(m['mIoU'])}")
    return "\n".join(lines)


def shown_error(cfg: QuestionConfig, result: QuestionResult) -> tuple[str, str]:
    """(error, details) as students may see them: with show_output = false, an error whose words the student's
    code chose (an exception's message, a traceback: output by another name) is named by its kind only."""
    if result.error_from_student and not cfg.show_output:
        return (f"your code failed ({result.error_kind}); its message is not shown (the course keeps what your code "
                "prints private: show_output = false)"), ""
    return result.error or "", result.details


def test_output(cfg: QuestionConfig, result: QuestionResult, score: Score, part: str = "") -> str:
    """A question's test output. For a split question, `part` "public" is the test students see now (the
    public part's metrics and what they would score, the run's notes and printed output) and "scored" the
    test that carries the points (the metrics the score comes from, and the score)."""
    where = f" on {result.run.device}" if result.run.device else ""
    if result.error is not None:
        error, details = shown_error(cfg, result)
        parts = [f"Could not grade {cfg.title}: {error}"]
        if details:
            parts.append(details.rstrip())
    else:
        shown = (result.metrics["public"] if part == "public" else scored_metrics(cfg, result.metrics)) or {}
        private = part == "scored" and cfg.score_on == "private"
        label = "the public part's " if part == "public" else "the private part's " if private else ""
        parts = [metrics_text(result.question, shown),
                 f"({label}{shown.get('n')} held-out images, {result.run.seconds:.1f} s{where})", *interval_lines(cfg, shown)]
    if part == "public":
        counted = "the private part's images" if cfg.score_on == "private" else "all the held-out images"
        note = f"Your score comes from {counted}, and is shown {WHEN.get(cfg.private_visibility, 'later')}."
        if result.error is None:
            note += f" On this public part alone it would be {score.points:g} / {score.max_points:g} ({score.reason})."
        parts.append(note)
    else:
        parts.append(f"Score: {score.points:g} / {score.max_points:g}: {score.reason}")
    if part == "scored":  # the run's notes and printed output are in the public part's test
        return "\n\n".join(parts) + "\n"
    if result.run.leftovers:
        parts.append(f"{result.run.leftovers} process(es) your code left running were stopped.")
    if result.run.cleanup_note:
        parts.append(f"Note for staff: {result.run.cleanup_note}")
    if result.run.leftover_files:
        parts.append(f"Removed what your code left in shared temp folders: {', '.join(result.run.leftover_files[:5])}")
    if result.run.confinement:
        parts.append(f"Note for staff: {result.run.confinement}")
    printed = result.run.output.text().strip()
    if printed and cfg.show_output:
        parts.append("Your code printed:\n" + printed)
    return "\n\n".join(parts) + "\n"


def build_results(config: GraderConfig, results: dict[str, QuestionResult], scores: dict[str, Score],
                  extra_tests: list[dict], execution_time: float, notes: Sequence[str] = (),
                  extra_leaderboard: Sequence[dict] = ()) -> dict:
    """Gradescope's results.json; every configured question appears, graded or not. The instructor
    checks' tests and leaderboard entries come after the built-in ones."""
    tests, metrics = [], {}
    for key, cfg in config.questions.items():
        result, score = results[key], scores[key]
        if cfg.split:
            tests.append({"name": f"{cfg.title} (public part)", "score": 0, "max_score": 0, "visibility": cfg.visibility,
                          "output": test_output(cfg, result, public_score(cfg, result), "public"),
                          "extra_data": {"part": "public"}})
        tests.append({"name": cfg.title, "score": score.points, "max_score": score.max_points,
                      "status": "passed" if score.full_credit else "failed", "visibility": scored_visibility(cfg),
                      "output": test_output(cfg, result, score, "scored" if cfg.split else "")})
        metrics[key] = result.reported_metrics
    leaderboard, hidden = [], withheld_columns(config)
    for key, name, title in LEADERBOARD:
        if key in config.questions and title not in hidden:
            board = metrics[key].get("public") if config.questions[key].split else metrics[key]  # what students see now
            value = (board or {}).get(name)
            leaderboard.append({"name": title, "value": round(value, 4) if value is not None else 0, "order": "desc"})
    summary = [_summary_line(cfg, results[k], scores[k]) for k, cfg in config.questions.items()]
    return {
        "tests": tests + extra_tests,
        "leaderboard": leaderboard + list(extra_leaderboard),
        "execution_time": max(1, round(execution_time)),
        "output": "\n".join([*summary, *notes]),
        "visibility": config.visibility,
        "stdout_visibility": config.stdout_visibility,
        "extra_data": {"metrics": metrics, "grader": provenance(config)},
    }


def interval_lines(cfg: QuestionConfig, metrics: dict) -> list[str]:
    """The 95 % interval over the images of each thresholded metric, saying so when the full-credit line
    lies inside it: a score that close to the line is within the test set's noise."""
    lines = []
    for metric, threshold in cfg.thresholds.items():
        interval = (metrics.get("interval") or {}).get(metric)
        if not isinstance(interval, list):
            continue
        low, high = (_value_text(metric, v) for v in interval)
        line = f"95 % interval over the images: {metric} {low} to {high}"
        if interval[0] <= threshold <= interval[1]:
            line += (f"; the full-credit line ({_value_text(metric, threshold)}) lies inside it: on another draw of "
                     "test images this model could land on either side of it")
        lines.append(line + ".")
    return lines


def scored_visibility(cfg: QuestionConfig) -> str:
    """Who sees the test that carries a question's points: a split question's private part is for later."""
    return cfg.private_visibility if cfg.split else cfg.visibility


def public_score(cfg: QuestionConfig, result: QuestionResult) -> Score:
    """What a split question's public part alone would score (shown, never counted)."""
    public = result.metrics.get("public") if result.error is None else None
    return score_question(dataclasses.replace(cfg, score_on="all"), public)


def _summary_line(cfg: QuestionConfig, result: QuestionResult, score: Score) -> str:
    """A question's line in the top-level output, which students see at once."""
    if not cfg.split:
        return (f"{cfg.title}: {score.points:g} / {score.max_points:g}" if may_show(cfg.visibility, visibility.TOP_OUTPUT)
                else withheld(cfg.title, cfg.visibility))
    if not may_show(cfg.visibility, visibility.TOP_OUTPUT):
        return withheld(cfg.title, cfg.visibility)
    public = result.metrics.get("public") if result.error is None else None
    shown = ", ".join(f"{m} {_value_text(m, public.get(m))}" for m in cfg.thresholds) if public else "not graded"
    return f"{cfg.title}: public part: {shown}; {withheld('score', scored_visibility(cfg))}"


def _value_text(metric: str, value: float | None) -> str:
    return _pct(value) if metric == "accuracy" else _two(value)


def withheld_columns(config: GraderConfig) -> set[str]:
    """The leaderboard columns of questions that students may not see yet: they are left out."""
    return {title for key, _, title in LEADERBOARD
            if key in config.questions and not may_show(config.questions[key].visibility, visibility.LEADERBOARD)}


def provenance(config: GraderConfig) -> dict:
    """What a regrade must match to give the same result: the grader's version and the config's hash."""
    return {"version": __version__, "config_sha256": config.sha256}


def fallback_results(message: str, config: GraderConfig | None = None) -> dict:
    """A valid results.json when grading could not happen at all: every configured test at 0 with the reason."""
    if config is None:
        tests = [{"name": "Q1/Q2 grading", "score": 0, "max_score": 0, "status": "failed", "output": message}]
    else:
        tests = [{"name": q.title, "score": 0, "max_score": q.points, "status": "failed", "visibility": q.visibility,
                  "output": message} for q in config.questions.values()]
    return {"tests": tests, "output": message, "execution_time": 1,
            "extra_data": {"metrics": {}, "grader_error": message}}


class ResultsFile:
    """results.json, with its disk space taken before any student code runs: a submission that fills the
    disk cannot stop the grade from being written. The text goes into the reserved file, which then
    replaces results.json in one rename (grader/atomic.py: a reader never sees half a file)."""

    RESERVE = 4 * 2**20

    def __init__(self, path: Path):
        self.path = path
        self.pending = PendingFile(path)
        assert self.pending.fd is not None
        try:
            os.posix_fallocate(self.pending.fd, 0, self.RESERVE)
        except OSError:  # a file system without fallocate: write the reserve out
            os.pwrite(self.pending.fd, b" " * self.RESERVE, 0)

    def write(self, results: dict) -> None:
        """Write `results` (or, if it does not fit the reserve, a short report that says so)."""
        text = (json.dumps(results, indent=2, allow_nan=False) + "\n").encode()
        if len(text) > self.RESERVE:
            text = (json.dumps(fallback_results(f"The results were too large to write ({len(text)} bytes)")) + "\n").encode()
        fd = self.pending.fd
        assert fd is not None, "results already written"
        os.pwrite(fd, text, 0)
        os.ftruncate(fd, len(text))
        # No student process is alive by now, so the name still points at the reserved file unless an
        # earlier one swapped it (possible only in a results folder others may write to): commit checks.
        self.pending.commit(0o644)


def terminal_summary(config: GraderConfig, results: dict[str, QuestionResult], scores: dict[str, Score],
                     extra_tests: list[dict]) -> str:
    """What the grader prints: the readers of its stdout (`stdout_visibility`) see only what they may."""
    place, blocks, shown = config.stdout_visibility, [], []
    for key, cfg in config.questions.items():
        result, score = results[key], scores[key]
        error = f"ERROR: {shown_error(cfg, result)[0]}" if result.error is not None else ""
        if cfg.split and may_show(cfg.visibility, place):
            public = result.metrics.get("public") or {}
            blocks.append(f"== {cfg.title}: public part ({public.get('n', 0)} images)\n"
                          + (error or metrics_text(key, public)))
        if not may_show(scored_visibility(cfg), place):
            blocks.append(f"== {withheld(cfg.title, scored_visibility(cfg))}")
            continue
        body = error or metrics_text(key, scored_metrics(cfg, result.metrics) or {})
        blocks.append(f"== {cfg.title}: {score.points:g} / {score.max_points:g}\n{body}")
        shown.append({"score": score.points, "max_score": score.max_points})
    for test in extra_tests:
        if may_show(test_visibility(test, config.visibility), place):
            blocks.append(f"== {test['name']}: {number(test.get('score')):g} / {number(test.get('max_score')):g}")
            shown.append(test)
        else:
            blocks.append(f"== {withheld(str(test.get('name')), test_visibility(test, config.visibility))}")
    total, maximum, _ = visible_score(shown, VISIBLE, VISIBLE)
    held = len(config.questions) + len(extra_tests) - len(shown)
    blocks.append(f"Total: {total:g} / {maximum:g}" + (f" (of the tests shown here; {held} shown later)" if held else ""))
    return "\n\n".join(blocks)
