"""Reports: Gradescope's results.json (written atomically) and the terminal summary, in the course's format."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from grader import __version__, visibility
from grader.atomic import PendingFile
from grader.config import GraderConfig, QuestionConfig
from grader.evaluation import QuestionResult
from grader.feedback import metrics_text, shown_error, test_output, value_text
from grader.scoring import Score, scored_metrics
from grader.text import student_tail
from grader.visibility import VISIBLE, may_show, number, test_visibility, visible_score, withheld

LEADERBOARD = (("q1", "accuracy", "Q1 accuracy"), ("q2", "mAP", "Q2 mAP"), ("q2", "mIoU", "Q2 mIoU"))


def build_results(config: GraderConfig, results: dict[str, QuestionResult], scores: dict[str, Score],
                  public_scores: dict[str, Score], extra_tests: list[dict], execution_time: float,
                  notes: Sequence[str] = (), extra_leaderboard: Sequence[dict] = ()) -> dict:
    """Gradescope's results.json; every configured question appears, graded or not. The instructor
    checks' tests and leaderboard entries come after the built-in ones. Every score shown was decided
    before (`scores`, and `public_scores` for split questions' public parts): this only formats them."""
    tests, metrics, markdown = [], {}, config.output_format == "md"
    for key, cfg in config.questions.items():
        result, score = results[key], scores[key]
        if cfg.split:
            tests.append({"name": f"{cfg.title} (public part)", "score": 0, "max_score": 0, "visibility": cfg.visibility,
                          "output": test_output(cfg, result, public_scores[key], "public", markdown),
                          "output_format": config.output_format, "extra_data": {"part": "public", "question": key}})
        tests.append({"name": cfg.title, "score": score.points, "max_score": score.max_points,
                      "status": "passed" if score.full_credit else "failed", "visibility": scored_visibility(cfg),
                      "output": test_output(cfg, result, score, "scored" if cfg.split else "", markdown),
                      "output_format": config.output_format, "extra_data": {"question": key}})
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
        "extra_data": {"metrics": metrics, "grader": provenance(config), **_memorization(results)},
    }


def _memorization(results: dict[str, QuestionResult]) -> dict:
    """The memorization probe's findings, for staff only (extra_data): never in a test, the output or the
    leaderboard, and never a score change."""
    found = {k: r.memorization for k, r in results.items() if r.error is None and r.memorization is not None}
    return {"memorization": found} if found else {}


def question_of(test: dict, config: GraderConfig) -> str | None:
    """The question whose points a test of results.json carries, by the key the grader wrote in it (an
    instructor check named like a question, "Q2 bonus", carries none; a split question's public part has
    no points); a report from before that key, by its exact title."""
    extra = test.get("extra_data")
    if isinstance(extra, dict) and "question" in extra:
        return extra["question"] if extra["question"] in config.questions and extra.get("part") != "public" else None
    return next((key for key, cfg in config.questions.items() if cfg.title == test.get("name")), None)


def scored_visibility(cfg: QuestionConfig) -> str:
    """Who sees the test that carries a question's points: a split question's private part is for later."""
    return cfg.private_visibility if cfg.split else cfg.visibility


def _public_metrics(result: QuestionResult) -> dict | None:
    """A split question's public part's metrics, None when the question could not be graded."""
    return result.metrics.get("public") if result.error is None else None


def _summary_line(cfg: QuestionConfig, result: QuestionResult, score: Score) -> str:
    """A question's line in the top-level output, which students see at once."""
    if not may_show(cfg.visibility, visibility.TOP_OUTPUT):
        return withheld(cfg.title, cfg.visibility)
    if not cfg.split:
        return f"{cfg.title}: {score.points:g} / {score.max_points:g}"
    public = _public_metrics(result)
    shown = ", ".join(f"{m} {value_text(m, public.get(m))}" for m in cfg.thresholds) if public else "not graded"
    return f"{cfg.title}: public part: {shown}; {withheld('score', scored_visibility(cfg))}"


def withheld_columns(config: GraderConfig) -> set[str]:
    """The leaderboard columns of questions that students may not see yet: they are left out."""
    return {title for key, _, title in LEADERBOARD
            if key in config.questions and not may_show(config.questions[key].visibility, visibility.LEADERBOARD)}


def provenance(config: GraderConfig) -> dict:
    """What a regrade must match to give the same result: the grader's version and the config's hash; and,
    for staff, a split graded with the public default seed."""
    warning = config.public_seed_warning
    return {"version": __version__, "config_sha256": config.sha256, **({"warning": warning} if warning else {})}


def fallback_results(message: str, config: GraderConfig | None = None) -> dict:
    """A valid results.json when grading could not happen at all: every configured test at 0 with the reason."""
    if config is None:
        tests = [{"name": "Q1/Q2 grading", "score": 0, "max_score": 0, "status": "failed", "output": message}]
    else:
        tests = [{"name": q.title, "score": 0, "max_score": q.points, "status": "failed", "visibility": q.visibility,
                  "output": message, "extra_data": {"question": key}} for key, q in config.questions.items()]
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
        error = f"ERROR: {student_tail(shown_error(cfg, result)[0])}" if result.error is not None else ""
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
