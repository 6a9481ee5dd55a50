"""Command line: python -m grader --submission DIR --data DIR --results FILE [options].

Exit status 0 whenever results.json was written, whatever the score; 2 when the grader itself cannot
run (bad config, reference data or checks), after writing a results.json that says so.
"""
from __future__ import annotations

import argparse
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from grader.config import DEFAULT_CONFIG, DEVICES, ConfigError, GraderConfig, load_config, with_overrides
from grader.report import build_results, fallback_results, terminal_summary, write_results
from grader.sandbox import Sandbox, SandboxError, prepare, protected, remove_leftover_files
from grader.scoring import score_question

EXIT_GRADER_ERROR = 2


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m grader", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--submission", type=Path, required=True, help="folder holding predict.py")
    p.add_argument("--data", type=Path, required=True, help="reference data folder (q1/, q2/)")
    p.add_argument("--results", type=Path, required=True, help="where to write results.json")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="grading config (default: grader/config.toml)")
    p.add_argument("--device", choices=DEVICES, help="overrides [grader].device (auto: CUDA when available)")
    p.add_argument("--timeout", type=float, help="seconds per question, overrides each question's time_limit")
    p.add_argument("--memory-limit", type=int, help="MiB per question, overrides each question's memory_limit")
    p.add_argument("--output-limit", type=int, help="characters of student output kept, overrides output_limit")
    p.add_argument("--plots", type=Path, help="folder for pictures: confusion matrices, segmentation overlays")
    p.add_argument("--isolation", choices=("auto", "user", "process"), default="auto",
                   help="user: run student code as an unprivileged user (needs root); process: as the grader's "
                        "user; auto (default): user when root")
    return p


def locate_submission(folder: Path) -> tuple[Path, str | None, list[str]]:
    """The folder holding predict.py: the top of the upload, or its one subfolder (a zipped folder)."""
    if (folder / "predict.py").is_file():
        return folder, None, []
    nested = sorted(p.parent for p in folder.glob("*/predict.py"))
    if len(nested) == 1:
        where = f"{nested[0].name}/predict.py"
        return nested[0], None, [f"Note: graded {where}. Next time zip the files themselves, not their folder."]
    return folder, ("No predict.py at the top of the submission: predict.py (with predict_q1 and predict_q2) "
                    "must sit at the top of the zip, not inside a subfolder."), []


def draw(results: dict, classes: dict[str, list[str]], folder: Path) -> list[Path]:
    """Confusion matrices of the graded questions and Q2 overlays; returns the files written."""
    from grader.plots import confusion_matrix_png, overlays_png

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for key, result in results.items():
        if result.confusion_matrix is not None:
            title = f"{key.upper()} confusion matrix ({result.metrics['n']} images)"
            written.append(confusion_matrix_png(result.confusion_matrix, classes[key], title, folder / f"{key}_confusion.png"))
        if result.examples:
            written.append(overlays_png(result.examples, classes[key], folder / f"{key}_overlays.png"))
    return written


@dataclass
class Graded:
    report: dict  # results.json
    summary: str  # for the terminal
    staff_problem: bool  # something was the grader's fault: exit status 2
    results: dict  # QuestionResult per question, for the pictures
    classes: dict[str, list[str]]


def grade(config: GraderConfig, submission: Path, data: Path, sandbox: Sandbox) -> Graded:
    """Grade every configured question."""
    from grader.checks import load_checks, run_checks
    from grader.evaluation import QuestionResult, evaluate
    from grader.reference import ReferenceDataError, load_reference

    started = time.monotonic()
    suite = load_checks(config.checks) if config.checks else None
    results, scores, classes, staff_problem = {}, {}, {}, False
    submission, problem, notes = locate_submission(submission)
    notes.append(sandbox.note)
    for key, cfg in config.questions.items():
        if problem:
            results[key] = QuestionResult(key, error=problem)
        else:
            try:
                ref = load_reference(data, key)
            except ReferenceDataError as exc:
                staff_problem = True
                results[key] = QuestionResult(key, error=f"grader problem, not yours: reference data unusable ({exc})")
            else:
                classes[key] = ref.classes
                closed = [data, config.source, Path(__file__).parent, *([config.checks] if config.checks else [])]
                with protected(sandbox, closed):
                    results[key] = evaluate(ref, submission, cfg, config.device, sandbox)
                staff_problem |= results[key].staff_problem
        scores[key] = score_question(cfg, results[key].metrics if results[key].error is None else None)
    metrics = {k: r.reported_metrics for k, r in results.items()}
    extra = run_checks(suite, submission, metrics) if suite is not None else []
    report = build_results(config, results, scores, extra, time.monotonic() - started, notes)
    return Graded(report, terminal_summary(config, results, scores, extra), staff_problem, results, classes)


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    config = None
    try:
        config = with_overrides(load_config(args.config), device=args.device, timeout=args.timeout,
                                memory_limit=args.memory_limit, output_limit=args.output_limit)
        sandbox = prepare(args.isolation)
        graded = grade(config, args.submission.resolve(), args.data.resolve(), sandbox)
        remove_leftover_files(sandbox, (args.results.resolve().parent,))  # the temp folders were swept per question
    except (ConfigError, SandboxError) as exc:
        print(f"grader: configuration error: {exc}", file=sys.stderr)
        write_results(args.results, fallback_results(f"The autograder is misconfigured (staff: {exc})", config))
        return EXIT_GRADER_ERROR
    except Exception:
        trace = traceback.format_exc()
        print(f"grader: internal error\n{trace}", file=sys.stderr)
        write_results(args.results, fallback_results(f"The autograder itself failed (staff: see below)\n{trace}", config))
        return EXIT_GRADER_ERROR
    write_results(args.results, graded.report)
    print(graded.summary)
    print(f"results written to {args.results}")
    if args.plots is not None:
        try:
            for path in draw(graded.results, graded.classes, args.plots):
                print(f"picture: {path}")
        except Exception as exc:  # pictures are a convenience: never let them cost the grade
            print(f"grader: could not draw the pictures: {type(exc).__name__}: {exc}", file=sys.stderr)
    return EXIT_GRADER_ERROR if graded.staff_problem else 0
