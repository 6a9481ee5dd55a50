"""Command line: mp-grader (or python -m grader) --submission DIR --data DIR --results FILE [options].

Exit status 0 whenever results.json was written, whatever the score; 2 when the grader itself cannot
run (bad config, reference data or checks), after writing a results.json that says so.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from grader.config import (DEFAULT_CONFIG, DEVICES, OVERRIDES, ConfigError, GraderConfig, fit_memory, load_config,
                           with_overrides)
from grader.atomic import written_atomically
from grader.inputs import protected_inputs
from grader.report import ResultsFile, build_results, fallback_results, provenance, terminal_summary, withheld_columns
from grader.sandbox import (DEFAULT_USER, ISOLATIONS, MEMORY_ACCOUNTING, SWEEP_SECONDS, Sandbox, SandboxError, memory_left_mib,
                            prepare, protected)
from grader.scoring import public_part_score, score_question
from grader.split import private_mask, split_record
from grader.submission_limit import LimitCheck, MetadataError, check_limit, over_limit_results, read_metadata
from grader.text import printable
from grader.upload import UploadError, stage_upload, unstage

METADATA_VARIABLE = "GRADER_SUBMISSION_METADATA"  # where run_autograder names Gradescope's metadata file

EXIT_GRADER_ERROR = 2
STUDENT_USERS = re.compile(rf"{DEFAULT_USER}(-[1-9][0-9]?)?")  # the cleanup kills every process of the user


def student_user(name: str) -> str:
    if not STUDENT_USERS.fullmatch(name):
        raise argparse.ArgumentTypeError(f"expected {DEFAULT_USER} or {DEFAULT_USER}-N (N from 1 to 99), got {name!r}: "
                                         "every process of this user is killed after each question")
    return name


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mp-grader", description=__doc__,
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
    p.add_argument("--isolation", choices=ISOLATIONS, default="auto",
                   help="namespace: private namespaces (bubblewrap), and as an unprivileged user when root; user: as "
                        "an unprivileged user only (needs root; what default Docker allows); process: as the grader's "
                        "own user, with no namespaces (as root: trusted code only); auto (default): the strongest "
                        "available, refusing to run student code as root")
    p.add_argument("--memory-accounting", choices=MEMORY_ACCOUNTING, default="auto",
                   help="cgroup: a memory cgroup per question (needs root and a writable cgroup file system); "
                        "processes: resident anonymous and shared memory plus tmpfs use; auto (default): cgroup when possible")
    p.add_argument("--predictions", type=Path,
                   help="also write each image's predicted class ids here (.npz, one array per graded question)")
    metadata = os.environ.get(METADATA_VARIABLE)
    p.add_argument("--submission-metadata", type=Path, default=Path(metadata) if metadata else None,
                   help="Gradescope's submission_metadata.json, for [grader].daily_submission_limit (default: "
                        f"${METADATA_VARIABLE}, which run_autograder sets: an environment, unlike a command line, is "
                        "unreadable to the student user)")
    p.add_argument("--cpu-share", type=int, metavar="N",
                   help="this run is one of up to N on this machine at once: each question gets a CPU scheduling "
                        "group of its own (a cgroup) capped at 1/N of the CPUs, or the grader refuses. `mp-grader "
                        "batch` passes it when runs share a machine, so no run can take another's CPU time")
    p.add_argument("--student-user", type=student_user, default=DEFAULT_USER,
                   help=f"the unprivileged user student code runs as, when the grader is root (default {DEFAULT_USER}; "
                        "`mp-grader batch` gives each concurrent run its own)")
    return p


def locate_submission(folder: Path, markers: list[str]) -> tuple[Path, str | None, list[str]]:
    """The folder holding the `markers` files: the top of the upload, or its one subfolder (a zipped folder)."""
    if any((folder / m).is_file() for m in markers):
        return folder, None, []
    found = sorted(p for m in markers for p in folder.glob(f"*/{m}"))
    if len({p.parent for p in found}) == 1:
        where = f"{printable(found[0].parent.name, name=True)}/{found[0].name}"
        return found[0].parent, None, [f"Note: graded {where}. Next time zip the files themselves, not their folder."]
    names = " and ".join(markers)
    what = "predict.py (with predict_q1 and predict_q2)" if markers == ["predict.py"] else names
    return folder, (f"No {names} at the top of the submission: {what} must sit at the top of the zip, not inside "
                    "a subfolder."), []


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


@contextmanager
def _removed(folder: Path | None) -> Iterator[None]:
    try:
        yield
    finally:
        if folder is not None:
            unstage(folder)


@dataclass
class Graded:
    report: dict  # results.json
    summary: str  # for the terminal
    staff_problem: bool  # something was the grader's fault: exit status 2
    results: dict  # QuestionResult per question, for the pictures
    classes: dict[str, list[str]]


def _grade_questions(config: GraderConfig, submission: Path, data: Path, sandbox: Sandbox, problem: str | None,
                     keep_predictions: bool, notes: list[str]) -> tuple[dict, dict, dict, dict, bool]:
    """(results, scores, public parts' scores, classes, staff_problem) of every configured question, in order:
    every score any report shows, decided here once. After a breach of the isolation the remaining
    questions are not run. A held-out set that is mostly public adds a note."""
    from grader import memorization
    from grader.evaluation import QuestionResult, evaluate
    from grader.public_data import public_share
    from grader.reference import ReferenceDataError, load_reference

    results, scores, public, classes, staff_problem = {}, {}, {}, {}, False
    for key, cfg in config.questions.items():
        if problem:
            results[key] = QuestionResult(key, error=problem, error_kind="upload")
        elif sandbox.breach:
            results[key] = QuestionResult(key, error=f"grader problem, not yours: not graded, because {sandbox.breach}",
                                          error_kind="grader", staff_problem=True)
        else:
            try:
                ref = load_reference(data, key)
            except ReferenceDataError as exc:
                results[key] = QuestionResult(key, staff_problem=True, error_kind="grader",
                                              error=f"grader problem, not yours: reference data unusable ({exc})")
            else:
                classes[key] = ref.classes
                if (share := public_share(ref)).too_public:
                    notes.append(f"Note: {share}: this is a self-grade on public labels, not the course's grade.")
                private = private_mask(len(ref), cfg.private_fraction, config.split_seed, key) if cfg.split else None
                probe = memorization.build(key, ref.images, ref.labels, len(ref.classes), cfg.memorization_copies,
                                           config.split_seed) if cfg.memorization else None
                results[key] = evaluate(ref, submission, cfg, config.device, sandbox, keep_predictions, private, probe)
                if (measured := results[key].memorization) is not None:
                    results[key].memorization = memorization.verdict(measured, cfg.memorization_line)
                if cfg.split and results[key].error is None:
                    results[key].metrics["split"] = split_record(cfg.private_fraction, config.split_seed)
        staff_problem |= results[key].staff_problem
        graded = results[key].metrics if results[key].error is None else None
        scores[key] = score_question(cfg, graded)
        if cfg.split:
            public[key] = public_part_score(cfg, graded)
    return results, scores, public, classes, staff_problem


def grade(config: GraderConfig, submission: Path, data: Path, sandbox: Sandbox, notes: list[str] | None = None,
          keep_predictions: bool = False) -> Graded:
    """Grade every configured question: check and stage the upload, run each question in the sandbox with
    the grader's files closed, then the instructor's checks. `notes` go into the report and the summary."""
    from grader.checks import load_checks, run_checks

    started = time.monotonic()
    suite = load_checks(config.checks) if config.checks else None
    limits = config.upload_limits
    staging = None
    try:
        staging = stage_upload(submission, limits, sandbox.student)
        submission, problem, found = locate_submission(staging, config.upload_markers)
    except UploadError as exc:
        problem, found = f"Your submission cannot be graded: {exc}", []
    notes = [*found, *(notes or []), sandbox.note]
    with _removed(staging):
        with protected(sandbox):
            results, scores, public, classes, staff_problem = _grade_questions(config, submission, data, sandbox,
                                                                               problem, keep_predictions, notes)
        if sandbox.breach:
            notes.append(f"Grading stopped: {sandbox.breach}")
        metrics = {k: r.reported_metrics for k, r in results.items()}
        extra, board = run_checks(suite, submission, shown_now(config, metrics), metrics) if suite is not None else ([], [])
    report = build_results(config, results, scores, public, extra, time.monotonic() - started, notes, board)
    summary = "\n".join([terminal_summary(config, results, scores, extra), *notes])
    return Graded(report, summary, staff_problem, results, classes)


def shown_now(config: GraderConfig, metrics: dict) -> dict:
    """The metrics as students see them before the due date: a split question's public part alone (its
    private part and the whole set's numbers would leak through any check or leaderboard column built on them)."""
    return {k: m["public"] if config.questions[k].split and isinstance(m, dict) and "public" in m else m
            for k, m in metrics.items()}


def submission_limit(config: GraderConfig, metadata: Path | None) -> tuple[LimitCheck | None, list[str]]:
    """The daily limit's verdict on this submission (None where there is no limit or no way to apply it), and
    notes. Metadata that cannot be read grades the submission, saying so: the fault is not the student's."""
    limit = config.daily_submission_limit
    if not limit:
        return None, []
    if metadata is None or not metadata.is_file():
        return None, [f"Note: the limit of {limit} submissions a day is not applied here (no submission_metadata.json; "
                      "Gradescope gives one)."]
    try:
        now, earlier = read_metadata(metadata)
    except MetadataError as exc:
        return None, [f"Note for staff: the daily submission limit could not be applied: {exc}"]
    check = check_limit(now, earlier, limit, config.over_limit_keeps, config.visibility)
    return check, [] if check.over else [f"This is valid submission {check.counted + 1} of {limit} in 24 hours."]


def save_predictions(path: Path, arrays: dict) -> None:
    """Each graded question's predicted class ids, in a new file renamed over `path` (grader/atomic.py)."""
    import numpy as np

    with written_atomically(path, mode=0o600) as f:
        np.savez_compressed(f, **arrays)


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    config, sandbox = None, None
    try:
        # The results file's disk space is taken first: a submission that fills the disk cannot stop it.
        results_file = ResultsFile(args.results)
    except OSError as exc:
        print(f"grader: cannot write {args.results}: {exc}", file=sys.stderr)
        return EXIT_GRADER_ERROR
    try:
        overrides = {flag: vars(args)[flag[2:].replace("-", "_")] for flag in OVERRIDES}
        config = with_overrides(load_config(args.config), device=args.device, overrides=overrides)
        config, memory_notes = fit_memory(config, memory_left_mib(), "the memory limit of this machine or container")
        check, limit_notes = submission_limit(config, args.submission_metadata)
        if check is not None and check.over:  # nothing of the student's runs
            base = {"visibility": config.visibility, "stdout_visibility": config.stdout_visibility,
                    "extra_data": {"grader": provenance(config)}}
            results_file.write(over_limit_results(check, config.over_limit_keeps, base, withheld_columns(config)))
            print(f"Submission limit reached: not graded; results written to {args.results}")
            return 0
        if config.public_seed_warning:
            print(f"grader: warning: {config.public_seed_warning}", file=sys.stderr)
        sandbox = prepare(args.isolation, args.memory_accounting,
                          protected_inputs(args.data, config, args.submission_metadata), args.student_user,
                          cpu_share=args.cpu_share)
        graded = grade(config, args.submission.resolve(), args.data.resolve(), sandbox, [*limit_notes, *memory_notes],
                       keep_predictions=args.predictions is not None)
        if check is not None:
            graded.report["extra_data"]["submission_limit"] = check.record
        if sandbox.drops_user and not sandbox.bwrap:  # the results folder, if the student could write there
            sandbox.sweep([args.results.resolve().parent], SWEEP_SECONDS)
    except (ConfigError, SandboxError) as exc:
        print(f"grader: configuration error: {exc}", file=sys.stderr)
        results_file.write(fallback_results(f"The autograder is misconfigured (staff: {exc})", config))
        return EXIT_GRADER_ERROR
    except Exception:
        trace = traceback.format_exc()
        print(f"grader: internal error\n{trace}", file=sys.stderr)
        results_file.write(fallback_results(f"The autograder itself failed (staff: see below)\n{trace}", config))
        return EXIT_GRADER_ERROR
    finally:
        if sandbox is not None:
            sandbox.close()
    results_file.write(graded.report)
    if args.predictions is not None:
        save_predictions(args.predictions, {k: r.predicted for k, r in graded.results.items() if r.predicted is not None})
    print(graded.summary)
    print(f"results written to {args.results}")
    if args.plots is not None:
        try:
            for path in draw(graded.results, graded.classes, args.plots):
                print(f"picture: {path}")
        except Exception as exc:  # pictures are a convenience: never let them cost the grade
            print(f"grader: could not draw the pictures: {type(exc).__name__}: {exc}", file=sys.stderr)
    return EXIT_GRADER_ERROR if graded.staff_problem or sandbox.breach else 0


def run(argv: list[str] | None = None) -> None:
    """The `mp-grader` console script: grade one submission, `mp-grader batch ...` (grader/batch/), or
    `mp-grader rescore ...` (grader/rescore.py)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["batch"]:
        from grader.batch import main as batch_main

        sys.exit(batch_main(argv[1:]))
    if argv[:1] == ["rescore"]:
        from grader.rescore import main as rescore_main

        sys.exit(rescore_main(argv[1:]))
    sys.exit(main(argv))
