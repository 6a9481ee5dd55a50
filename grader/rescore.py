"""`mp-grader rescore`: the scores a new config gives, from the metrics already stored, without running any
student code (seconds for a class, where a regrade takes minutes a student).

    mp-grader rescore OUT --config new.toml [--to DIR]

OUT is the folder of an `mp-grader batch` (or one results.json). Each question's score is recomputed from
its stored metrics by the same scoring policy (grader/scoring.py), so it equals a regrade under the new
config whenever the metrics would not change: new points, thresholds, partial credit, rounding. Limits,
modes and batch sizes change what runs, and need a regrade; instructor checks keep their scores. Writes
DIR (default OUT/rescored/): scores.csv as a batch writes it, rescore.md (who gains or loses points, and
how many) and rescore.png (the totals before and after).
"""
from __future__ import annotations

import argparse
import copy
import csv
import json
import sys
from pathlib import Path

from grader.batch.class_report import total, write_csv
from grader.batch.runs import Outcome, read_report
from grader.batch.submissions import Entry
from grader.config import ConfigError, GraderConfig, load_config
from grader.memorization import verdict
from grader.report import question_of, scored_visibility
from grader.scoring import score_question
from grader.split import split_record
from grader.text import FORMULA_START, csv_cell, markdown_code


def rescored(report: dict, config: GraderConfig) -> dict:
    """A copy of `report` whose question tests carry the scores `config` gives their stored metrics."""
    new = copy.deepcopy(report)
    metrics = new.get("extra_data", {}).get("metrics", {})
    for test in new.get("tests", []):
        key = question_of(test, config)
        if key is None:
            continue  # an instructor check, or a split question's public part (no points): kept as it was
        cfg, stored = config.questions[key], metrics.get(key)
        graded = isinstance(stored, dict) and "error" not in stored
        if graded and stored.get("split") != (split_record(cfg.private_fraction, config.split_seed) if cfg.split else None):
            raise ConfigError(f"the new config splits {key.upper()}'s images otherwise than the graded one did "
                              "(private_fraction or split_seed): the parts' metrics change, so regrade instead")
        score = score_question(cfg, stored if graded else None)
        test.update(name=cfg.title, score=score.points, max_score=score.max_points, visibility=scored_visibility(cfg),
                    status="passed" if score.full_credit else "failed")
        test["output"] = f"{test.get('output', '').rstrip()}\n\nRescored under a new config: {score.points:g} / " \
                         f"{score.max_points:g}: {score.reason}\n"
    new["output"] = f"{new.get('output', '')}\nRescored under a new config: the tests' scores replace the lines above."
    found = new.get("extra_data", {}).get("memorization")
    if isinstance(found, dict):  # the probe's findings, judged by the new config's line (or dropped with the probe)
        for key in list(found):
            probed = config.questions.get(key)
            if probed is not None and probed.memorization and isinstance(found[key], dict):
                found[key] = verdict(found[key], probed.memorization_line)
            else:
                del found[key]
    return new


def _outcomes(out: Path) -> list[Outcome]:
    """The graded submissions of a batch folder, with their names, submitters and times from scores.csv."""
    rows: dict[str, dict] = {}
    if (out / "scores.csv").is_file():
        with open(out / "scores.csv", newline="") as f:
            rows = {row["submission"]: row for row in csv.DictReader(f)}
    outcomes = []
    for folder in sorted(p for p in (out / "submissions").iterdir() if p.is_dir() and not p.name.startswith(".")):
        report = read_report(folder / "results.json")
        if report is None:
            continue
        row = rows.get(csv_cell(folder.name), {})
        submitters = [s for s in _uncell(row.get("submitters", "")).split("; ") if s]
        try:
            problem = str(json.loads((folder / "grading.json").read_text()).get("problem", ""))
        except (OSError, ValueError, AttributeError):
            problem = ""
        outcomes.append(Outcome(Entry(folder.name, folder, submitters, _uncell(row.get("created_at", ""))),
                                report, float(row.get("seconds") or 0), problem=problem))
    return outcomes


def _uncell(text: str) -> str:
    """A cell's text as it was before csv_cell made a formula inert."""
    return text[1:] if text.startswith("'") and text[1:2] in FORMULA_START else text


def changes_text(before: list[Outcome], after: list[Outcome], maximum: float) -> str:
    """rescore.md: how many gain and lose points, each change, and the totals' summary before and after."""
    moves = [(b.entry.name, total(b.report), total(a.report)) for b, a in zip(before, after)]
    gains, losses = [m for m in moves if m[2] > m[1]], [m for m in moves if m[2] < m[1]]
    lines = ["# Rescore", "", f"{len(moves)} submissions: {len(gains)} gain points, {len(losses)} lose points, "
             f"{len(moves) - len(gains) - len(losses)} unchanged (out of {maximum:g}).", ""]
    for label, values in (("Before", [m[1] for m in moves]), ("After", [m[2] for m in moves])):
        if values:
            lines.append(f"- {label}: mean {sum(values) / len(values):.2f}, min {min(values):g}, max {max(values):g}")
    lines += ["", "![before and after](rescore.png)", "", "## Changes", ""]
    for name, old, new in sorted(gains + losses, key=lambda m: (m[2] - m[1], m[0])):
        lines.append(f"- {markdown_code(name)}: {old:g} -> {new:g} ({new - old:+g})")
    if not gains and not losses:
        lines.append("None.")
    return "\n".join(lines) + "\n"


def draw(before: list[Outcome], after: list[Outcome], maximum: float, path: Path) -> Path:
    from grader.plots import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    bins = min(20, max(int(maximum), 1))
    for label, outcomes, color in (("before", before, "tab:gray"), ("after", after, "tab:blue")):
        ax.hist([total(o.report) for o in outcomes], bins=bins, range=(0, maximum), alpha=0.6, label=label, color=color)
    ax.set_xlabel("total points")
    ax.set_ylabel("submissions")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mp-grader rescore", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("graded", type=Path, help="an mp-grader batch folder, or one results.json")
    p.add_argument("--config", type=Path, required=True, help="the new config")
    p.add_argument("--to", type=Path, help="where the new files go (default: GRADED/rescored/, or beside the results.json)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        config = load_config(args.config)
        return _rescore(args, config)
    except ConfigError as exc:
        print(f"mp-grader rescore: {exc}", file=sys.stderr)
        return 2


def _rescore(args: argparse.Namespace, config: GraderConfig) -> int:
    if args.graded.is_file():
        report = read_report(args.graded)
        if report is None:
            print(f"mp-grader rescore: {args.graded} is not a results.json", file=sys.stderr)
            return 2
        target, new = args.to or args.graded.with_name(f"{args.graded.stem}.rescored.json"), rescored(report, config)
        target.write_text(json.dumps(new, indent=2) + "\n")
        print(f"{total(report):g} -> {total(new):g} of {config.max_score:g}; written: {target}")
        return 0
    if not (args.graded / "submissions").is_dir():
        print(f"mp-grader rescore: {args.graded} holds no submissions/ (an mp-grader batch folder)", file=sys.stderr)
        return 2
    before = _outcomes(args.graded)
    after = [Outcome(o.entry, rescored(o.report, config), o.seconds, o.reused, o.problem) for o in before]
    to = args.to or args.graded / "rescored"
    to.mkdir(parents=True, exist_ok=True)
    write_csv(config, after, to / "scores.csv")
    text = changes_text(before, after, config.max_score)
    (to / "rescore.md").write_text(text)
    try:
        draw(before, after, config.max_score, to / "rescore.png")
    except Exception as exc:  # a picture is a convenience
        print(f"mp-grader rescore: could not draw rescore.png: {type(exc).__name__}: {exc}", file=sys.stderr)
    print(text)
    print(f"written: {to / 'scores.csv'}, {to / 'rescore.md'}, {to / 'rescore.png'}")
    return 0
