"""Grade a whole class: every submission of a Gradescope export (or of a folder), N at a time, each run in
its own sandbox, with a CSV, a summary and pictures.

    mp-grader batch SUBMISSIONS --data DIR --out DIR [--jobs N] [--config FILE] [--force]

SUBMISSIONS is Gradescope's "Export Submissions" folder (one folder per submission and
`submission_metadata.yml` naming the submitters), or a plain folder of submission folders and zips. Each
submission is graded by its own `mp-grader` process, exactly as it would be alone, into
OUT/<submission>/results.json. A rerun skips submissions already graded by the same grader code, config,
reference data and options (--force regrades them). Concurrent runs are kept apart by construction: each
has its own unprivileged user (as root), so one run's cleanup, which kills every process of its user,
never touches another's, and private namespaces, so no run sees another's files; without namespaces only
one run at a time is allowed. For the whole batch the reference data, the grader, the submissions and OUT
stay closed to other users, and are reopened only once no process of any student user is left.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from tqdm import tqdm

from grader.batch.class_report import check_duplicates, draw, summary_text, write_csv
from grader.batch.cluster import Status, check_address
from grader.batch.dask_tasks import on_dask
from grader.batch.runs import MAX_JOBS, Batch, Outcome, Settings, grading_key, on_threads, student_users
from grader.batch.submissions import BatchError, discover
from grader.config import DEFAULT_CONFIG, DEVICES, ConfigError, GraderConfig, load_config
from grader.inputs import protected_inputs
from grader.sandbox import (DEFAULT_USER, ISOLATIONS, MEMORY_ACCOUNTING, SandboxError, closed_paths, closed_to_others,
                            ensure_user, memory_left_mib, prepare, probe_bwrap)
from grader.text import markdown_code, printable

GRADER_MARGIN = 120  # seconds a grader process may take beyond the assignment's time budget before it is killed
GRADER_MIB = 300  # memory a grader process needs besides its student's (the torch-free grader: ~150 MiB)
EXIT_CONFIG = 2
SUBMISSIONS = "submissions"  # OUT/submissions/<submission>/: results.json, grader.log, grading.json, predictions


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mp-grader batch", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("submissions", type=Path, help="Gradescope's export folder, or a folder of submission folders and zips")
    p.add_argument("--data", type=Path, required=True, help="reference data folder (q1/, q2/)")
    p.add_argument("--out", type=Path, required=True, help="where the per-submission results, scores.csv and summary go")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    p.add_argument("--jobs", type=int, default=1, help=f"submissions graded at once (1 to {MAX_JOBS}; more than 1 needs "
                                                        "the namespace layer: bubblewrap)")
    p.add_argument("--duplicate-threshold", type=float, default=0.9,
                   help="flag pairs of submissions sharing at least this fraction of their mistakes (default 0.9)")
    p.add_argument("--dask", metavar="ADDRESS", help="grade on a Dask cluster (the scheduler's address, or 'local' "
                                                     "for one started here with --jobs workers); needs the dask extra")
    p.add_argument("--dask-tls", type=Path, metavar="DIR",
                   help="the course's TLS files for a remote scheduler (tls://): ca.pem, cert.pem, key.pem (docs/batch.md)")
    p.add_argument("--dask-wait", type=float, default=600, metavar="SECONDS",
                   help="how long the batch waits for a worker that can take its tasks (on CUDA, one with a GPU) "
                        "before it stops, saying so (default 600)")
    p.add_argument("--force", action="store_true", help="regrade submissions already graded with the same settings")
    p.add_argument("--device", choices=DEVICES, default="auto")
    p.add_argument("--isolation", choices=ISOLATIONS, default="auto")
    p.add_argument("--memory-accounting", choices=MEMORY_ACCOUNTING, default="auto")
    return p


def _check_setup(args: argparse.Namespace, config: GraderConfig) -> list[str]:
    """Refuse what would let concurrent runs meet; fit their memory into the machine's. Returns notes."""
    if not 1 <= args.jobs <= MAX_JOBS:
        raise BatchError(f"--jobs must be from 1 to {MAX_JOBS}")
    for inside, outer in ((args.out, args.submissions), (args.out, args.data), (args.data, args.out)):
        if inside.resolve() == outer.resolve() or outer.resolve() in inside.resolve().parents:
            raise BatchError(f"{inside} must not lie inside {outer}")
    args.memory_option, args.cpu_share, notes = [], None, []
    if args.dask:
        check_address(args.dask, args.dask_tls)
    if args.jobs > 1 or args.dask:
        if args.isolation in ("user", "process"):
            raise BatchError(f"--jobs {args.jobs}{' --dask' if args.dask else ''} with --isolation {args.isolation}: "
                             "concurrent runs would see each other's files; that needs the namespace layer "
                             "(bubblewrap), or --jobs 1")
        args.isolation = "namespace"
        try:  # here, where the runs are; a remote cluster's workers are each checked by their first task
            if args.dask in (None, "local"):
                prepare("namespace", args.memory_accounting, [], student_users(args.jobs)[-1], cpu_share=args.jobs).close()
        except SandboxError as exc:
            raise BatchError(f"concurrent runs need the namespace layer and a CPU scheduling group per question "
                             f"(a neighbour must not take a run's CPU), and they could not "
                             f"be had: {exc}. Grade with --jobs 1 (and no --dask)") from None
        # Each run is capped at its share of the machine: `jobs` runs at once here; on a remote Dask worker,
        # as many as the worker has threads (grade_remote).
        args.cpu_share = None if args.dask not in (None, "local") else args.jobs
        left = memory_left_mib() if args.dask in (None, "local") else None  # a remote worker's is its own
        if left is not None:
            share = left // args.jobs - GRADER_MIB
            if share < max(q.memory_limit for q in config.questions.values()):
                if share < 256:
                    raise BatchError(f"{left} MiB of memory is too little for {args.jobs} runs at once")
                args.memory_option = [f"--memory-limit={share}"]
                notes.append(f"Memory: {left} MiB shared by {args.jobs} runs: each question's limit is {share} MiB.")
    elif args.isolation == "auto" and os.geteuid() == 0:
        # One layer for the whole batch: its inputs are closed for it only in the user layer.
        args.isolation = "namespace" if probe_bwrap(*ensure_user(DEFAULT_USER)) is None else "user"
    return notes


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        config = load_config(args.config)
        notes = _check_setup(args, config)
        entries = discover(args.submissions)
    except (BatchError, ConfigError, SandboxError) as exc:
        print(f"mp-grader batch: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    names = [e.name for e in entries]
    bad = sorted({n for n in names if names.count(n) > 1 or n.startswith(".") or "/" in n or n != printable(n, name=True)})
    if bad:
        print(f"mp-grader batch: submission names that cannot be folders of {args.out}: {', '.join(bad[:5])}", file=sys.stderr)
        return EXIT_CONFIG
    out = args.out.resolve()
    options = (f"--device={args.device}", f"--isolation={args.isolation}", f"--memory-accounting={args.memory_accounting}",
               *args.memory_option)
    settings = Settings(args.config.resolve(), args.data.resolve(), options,
                        grading_key(config, args.data.resolve(), list(options)), config.time_budget + GRADER_MARGIN,
                        MAX_JOBS if args.dask else args.jobs, args.cpu_share)
    # Each submission's files go under OUT/submissions/, apart from the class report: a submission named like
    # a report (scores.csv.zip) can never take its place.
    batch = Batch(settings, out / SUBMISSIONS)
    batch.out.mkdir(parents=True, exist_ok=True)
    outcomes: dict[str, Outcome] = {}
    todo = []
    for entry in entries:
        stored = None if args.force else batch.stored(entry)
        if stored is not None:
            outcomes[entry.name] = stored
        else:
            todo.append(entry)
    root = os.geteuid() == 0
    uids = [ensure_user(u)[0] for u in student_users(settings.slots if not args.dask else args.jobs)] if root else []
    closed = (closed_paths([*protected_inputs(args.data, config), args.submissions.resolve(), out])
              if root and args.isolation == "user" else [])  # the namespace layer shows the student none of them
    where = f"on the Dask cluster {args.dask}" if args.dask else f"{args.jobs} at a time"
    print(f"{len(entries)} submissions: {len(outcomes)} already graded with these settings, {len(todo)} to grade, "
          f"{where}", file=sys.stderr)
    status = Status(out / "status.json", [e.name for e in todo])
    for name, outcome in outcomes.items():
        status.set(name, "graded", earlier="yes", **({"problem": outcome.problem} if outcome.problem else {}))
    try:
        with closed_to_others(closed, uids) as kept:
            with tqdm(total=len(todo), desc="batch", unit="submission", file=sys.stderr, dynamic_ncols=True) as progress:
                for outcome in (on_dask(args, settings, batch, todo, config, status) if args.dask
                                else on_threads(args.jobs, batch, todo, status)):
                    outcomes[outcome.entry.name] = outcome
                    status.set(outcome.entry.name, "failed" if outcome.problem else "graded",
                               **({"problem": outcome.problem} if outcome.problem else {}))
                    states = [status.get(e.name).get("state") for e in todo]
                    progress.set_postfix_str(f"running {states.count('running')}, queued {states.count('queued')}; "
                                             f"last {outcome.entry.name}", refresh=False)
                    progress.update()
    except (SandboxError, BatchError) as exc:
        print(f"mp-grader batch: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if kept:
        notes.append(f"Left closed (mode 0700): {', '.join(map(str, closed))}, because {markdown_code(kept[0])}.")
    ordered = [outcomes[e.name] for e in entries]
    notes.append(check_duplicates(args, config, ordered, out, batch.out))
    write_csv(config, ordered, out / "scores.csv")
    summary = summary_text(config, ordered, notes)
    (out / "summary.md").write_text(summary)
    try:
        draw(config, ordered, out)
    except Exception as exc:  # pictures are a convenience: never let them cost the report
        print(f"mp-grader batch: could not draw the pictures: {type(exc).__name__}: {exc}", file=sys.stderr)
    print(summary)
    print(f"written: {out / 'scores.csv'}, {out / 'summary.md'}, scores.png, metrics.png, duplicates.md")
    return 0
