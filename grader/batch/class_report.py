"""The class report of a batch: scores.csv, summary.md, and the pictures of the scores and metrics."""
from __future__ import annotations

import argparse
import csv
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from grader import duplicates
from grader.batch.runs import Outcome
from grader.config import GraderConfig
from grader.report import question_of
from grader.scoring import scored_metrics
from grader.text import csv_cell, markdown_code


def error_kinds(outcome: Outcome) -> dict[str, str]:
    """question -> the kind of error that stopped it ("" when graded); "batch" for a problem of the batch."""
    metrics = outcome.report.get("extra_data", {}).get("metrics", {})
    if outcome.problem or not metrics:
        return {"all": "batch" if outcome.problem else "grader"}
    return {q: m.get("error_kind") or "error" for q, m in metrics.items() if isinstance(m, dict) and "error" in m}


def total(report: dict) -> float:
    return sum(float(t.get("score", 0)) for t in report["tests"])


def _scored(config: GraderConfig, report: dict, question: str) -> dict:
    """The stored metrics a question's score came from (a split question's private part), or {}."""
    stored = report.get("extra_data", {}).get("metrics", {}).get(question)
    return (scored_metrics(config.questions[question], stored) if isinstance(stored, dict) else None) or {}


def _scores(config: GraderConfig, report: dict) -> dict[str, float]:
    """Each question's points, from the test that scores it (never an instructor check named like it)."""
    found = {question_of(t, config): t.get("score", 0) for t in report["tests"]}
    return {q: float(found.get(q, 0)) for q in config.questions}


METRIC_COLUMNS = {"q1": ("accuracy",), "q2": ("mAP", "mIoU")}


def memorization(report: dict, question: str) -> dict:
    """The memorization probe's finding for a question (grader/memorization.py), or {}."""
    found = report.get("extra_data", {}).get("memorization", {})
    return found.get(question) or {} if isinstance(found, dict) else {}


def write_csv(config: GraderConfig, outcomes: list[Outcome], path: Path) -> None:
    questions = list(config.questions)
    header = ["submission", "submitters", "created_at"]
    for q in questions:
        header += [f"{q}_score", *(f"{q}_{m}" for m in METRIC_COLUMNS.get(q, ())),
                   *(f"{q}_{m}_{end}" for m in METRIC_COLUMNS.get(q, ()) for end in ("low", "high")), f"{q}_error"]
        if config.questions[q].memorization:
            header += [f"{q}_memorization_drop", f"{q}_memorization_flagged"]
    header += ["total", "max_total", "error", "seconds"]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for o in outcomes:
            scores, kinds = _scores(config, o.report), error_kinds(o)
            # Text that can come from students (names, submitters, error kinds) goes through csv_cell.
            row: list[object] = [csv_cell(o.entry.name), csv_cell("; ".join(o.entry.submitters)), csv_cell(o.entry.created_at)]
            for q in questions:
                values = _scored(config, o.report, q)
                intervals = values.get("interval")
                intervals = intervals if isinstance(intervals, dict) else {}
                row += [f"{scores[q]:g}", *(_number(values.get(m)) for m in METRIC_COLUMNS.get(q, ())),
                        *(_number(v) for m in METRIC_COLUMNS.get(q, ()) for v in _ends(intervals.get(m))),
                        csv_cell(kinds.get(q, kinds.get("all", "")))]
                if config.questions[q].memorization:
                    found = memorization(o.report, q)
                    row += [_number(found.get("drop")), "yes" if found.get("flagged") is True else ""]
            first = csv_cell(next(iter(kinds.values()), ""))
            row += [f"{total(o.report):g}", f"{config.max_score:g}", first, f"{o.seconds:.1f}"]
            writer.writerow(row)


def _ends(interval: object) -> tuple[object, object]:
    """(low, high) of a stored 95 % interval, or blanks."""
    return (interval[0], interval[1]) if isinstance(interval, list) and len(interval) == 2 else (None, None)


def _number(x: object) -> str:
    return f"{x:.4f}" if isinstance(x, (int, float)) else ""


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= 160 else line[:157] + "..."


def summary_text(config: GraderConfig, outcomes: list[Outcome], notes: list[str]) -> str:
    """The batch in a page of Markdown: the score distribution, the slowest runs, every error by kind. Text
    that can come from students (names, error messages) stands in code spans (text.markdown_code)."""
    maximum = config.max_score
    totals = sorted(total(o.report) for o in outcomes)
    lines = ["# Batch grade", "", f"{len(outcomes)} submissions ({sum(o.reused for o in outcomes)} reused from an "
             "earlier run with the same grader, config, data and options).", ""]
    if totals:
        mean = sum(totals) / len(totals)
        lines += [f"Total out of {maximum:g}: mean {mean:.2f}, median {totals[len(totals) // 2]:g}, "
                  f"min {totals[0]:g}, max {totals[-1]:g}; full marks: {sum(t >= maximum for t in totals)}.", ""]
    lines += [*notes, "", "![scores](scores.png)", "", "![metrics](metrics.png)", "", *_memorization_lines(config, outcomes),
              "## Slowest", ""]
    for o in sorted(outcomes, key=lambda o: -o.seconds)[:5]:
        lines.append(f"- {markdown_code(o.entry.name)}: {o.seconds:.1f} s{' (reused)' if o.reused else ''}")
    grouped: dict[str, dict[str, tuple[list[str], str]]] = defaultdict(dict)  # kind -> name -> (questions, message)
    for o in outcomes:
        metrics = o.report.get("extra_data", {}).get("metrics", {})
        for q, kind in error_kinds(o).items():
            text = o.problem or (metrics.get(q, {}).get("error", "") if q in metrics else o.report.get("output", ""))
            grouped[kind].setdefault(o.entry.name, ([], _first_line(str(text))))[0].append(q)
    lines += ["", "## Errors by kind (submissions)", ""]
    if not grouped:
        lines.append("None.")
    for kind in sorted(grouped, key=lambda k: (-len(grouped[k]), k)):
        items = [f"- {markdown_code(name)} ({', '.join(qs)}): {markdown_code(text)}"
                 for name, (qs, text) in grouped[kind].items()]
        lines += [f"### {kind} ({len(items)})", "", *items, ""]  # kinds: the grader's fixed words
    return "\n".join(lines).rstrip() + "\n"


def _memorization_lines(config: GraderConfig, outcomes: list[Outcome]) -> list[str]:
    """The memorization probe's section of the summary: each flagged submission and question, with numbers."""
    probed = [q for q, cfg in config.questions.items() if cfg.memorization]
    if not probed:
        return []
    lines = ["## Memorization probe", "", "A submission is flagged when its metric falls from held-out images to their "
             "lightly transformed copies by more than the line: a table of public labels falls to chance, a model "
             "barely moves. A lead for a check by hand; no score changed.", ""]
    flagged = [(o, q, found) for o in outcomes for q in probed if (found := memorization(o.report, q)).get("flagged") is True]
    measured = sum(bool(memorization(o.report, q)) for o in outcomes for q in probed)
    for o, q, found in flagged:
        lines.append(f"- {markdown_code(o.entry.name)} ({q.upper()}): {found.get('metric')} {_number(found.get('originals'))} "
                     f"on the originals, {_number(found.get('copied'))} on {found.get('copies')} copies (drop "
                     f"{_number(found.get('drop'))} > {found.get('line')})")
    lines += [f"{len(flagged)} flagged of {measured} measured.", ""]
    return lines


def draw(config: GraderConfig, outcomes: list[Outcome], folder: Path) -> list[Path]:
    """scores.png: the distribution of totals and of each question's score; metrics.png: each metric's."""
    from grader.plots import pyplot

    plt = pyplot()
    questions = list(config.questions)
    fig, axes = plt.subplots(1, 1 + len(questions), figsize=(4 * (1 + len(questions)), 3.2), squeeze=False)
    series = [("total", config.max_score, [total(o.report) for o in outcomes])]
    series += [(config.questions[q].title, config.questions[q].points, [_scores(config, o.report)[q] for o in outcomes])
               for q in questions]
    for ax, (title, top, values) in zip(axes[0], series):
        ax.hist(values, bins=min(20, max(int(top), 1)), range=(0, top), color="tab:blue", edgecolor="white")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("points")
    axes[0][0].set_ylabel("submissions")
    fig.tight_layout()
    fig.savefig(folder / "scores.png", dpi=100)
    plt.close(fig)
    columns = [(q, m) for q in questions for m in METRIC_COLUMNS.get(q, ())]
    fig, axes = plt.subplots(1, max(len(columns), 1), figsize=(4 * max(len(columns), 1), 3.2), squeeze=False)
    for ax, (q, m) in zip(axes[0], columns):
        values = [v for o in outcomes if isinstance(v := _scored(config, o.report, q).get(m), (int, float))]
        ax.hist(values, bins=20, range=(0, 1), color="tab:green", edgecolor="white")
        threshold = config.questions[q].thresholds.get(m)
        if threshold is not None:
            ax.axvline(threshold, color="tab:red", linestyle="--", label=f"full credit at {threshold:g}")
            ax.legend(fontsize=8)
        ax.set_title(f"{q.upper()} {m} ({len(values)} graded)", fontsize=10)
    fig.tight_layout()
    fig.savefig(folder / "metrics.png", dpi=100)
    plt.close(fig)
    return [folder / "scores.png", folder / "metrics.png"]


def check_duplicates(args: argparse.Namespace, config: GraderConfig, outcomes: list[Outcome], out: Path,
                     graded: Path) -> str:
    """duplicates.md and duplicates.png in `out`, from the predictions kept under `graded`/<submission>/;
    returns the summary's line about them."""
    from grader.reference import ReferenceDataError, load_reference

    files = duplicates.identical_files({o.entry.name: o.files for o in outcomes})
    pairs = []
    for q in config.questions:
        predictions = {}
        for o in outcomes:
            try:
                with np.load(graded / o.entry.name / "predictions.npz", allow_pickle=False) as saved:
                    if q in saved.files:
                        predictions[o.entry.name] = saved[q]
            except (OSError, ValueError):
                continue
        try:
            labels = load_reference(args.data, q).labels
        except ReferenceDataError:
            continue
        pairs += duplicates.similar_predictions(q, predictions, labels)
    submitters = {o.entry.name: o.entry.submitters for o in outcomes}
    (out / "duplicates.md").write_text(duplicates.report(files, pairs, args.duplicate_threshold, submitters))
    try:
        duplicates.draw(pairs, args.duplicate_threshold, out / "duplicates.png")
    except Exception as exc:  # a picture is a convenience
        print(f"mp-grader batch: could not draw duplicates.png: {type(exc).__name__}: {exc}", file=sys.stderr)
    flagged = sum(p.overlap >= args.duplicate_threshold for p in pairs)
    return (f"Possible copies (duplicates.md): {len(files)} file(s) identical across submissions, {flagged} pair(s) "
            f"sharing at least {100 * args.duplicate_threshold:g} % of their mistakes.")
