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
import csv
import fcntl
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm import tqdm

from grader import __version__, duplicates
from grader.cgroup import memory_left_mib
from grader.cli import protected_inputs
from grader.config import DEFAULT_CONFIG, DEVICES, ConfigError, GraderConfig, load_config
from grader.report import fallback_results
from grader.sandbox import (DEFAULT_USER, ISOLATIONS, MEMORY_ACCOUNTING, SandboxError, closed_paths, closed_to_others,
                            ensure_user, open_lock, prepare)
from grader.text import printable
from grader.upload import UploadLimits

METADATA = "submission_metadata.yml"
MAX_JOBS = 99  # student users grader-student, grader-student-2, ... grader-student-99
GRADER_MARGIN = 120  # seconds a grader process may take beyond the assignment's time budget before it is killed
GRADER_MIB = 300  # memory a grader process needs besides its student's (the torch-free grader: ~150 MiB)
EXIT_CONFIG = 2


class BatchError(Exception):
    """The batch cannot start; the message says why."""


@dataclass
class Entry:
    """One submission to grade."""

    name: str  # its folder's (or zip's) name: the key of the export and of OUT/<name>/
    source: Path  # a folder, or a .zip
    submitters: list[str] = field(default_factory=list)  # "Name <email>"
    created_at: str = ""


@dataclass
class Outcome:
    entry: Entry
    report: dict  # its results.json
    seconds: float
    reused: bool = False
    problem: str = ""  # what went wrong outside the grader's own report (unpacking, a killed grader)
    files: list = field(default_factory=list)  # (sha256, size, path) of its larger files, for the duplicate check


def _submitter(person: object) -> str:
    if not isinstance(person, dict):
        return printable(str(person))
    name, email = person.get(":name") or person.get("name") or "", person.get(":email") or person.get("email") or ""
    return printable(f"{name} <{email}>" if email else str(name))


def discover(root: Path) -> list[Entry]:
    """The submissions under `root`: those named in Gradescope's metadata, else every folder and zip."""
    if not root.is_dir():
        raise BatchError(f"{root} is not a folder")
    metadata = root / METADATA
    if metadata.is_file():
        import yaml

        try:
            listing = yaml.safe_load(metadata.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise BatchError(f"{metadata}: not readable as YAML ({exc})") from None
        if not isinstance(listing, dict):
            raise BatchError(f"{metadata}: expected a mapping of submission folders, got {type(listing).__name__}")
        entries = []
        for name, info in sorted(listing.items(), key=lambda kv: str(kv[0])):
            info = info if isinstance(info, dict) else {}
            people = info.get(":submitters") or info.get("submitters") or []
            entries.append(Entry(str(name), root / str(name), [_submitter(p) for p in people],
                                 str(info.get(":created_at") or info.get("created_at") or "")))
        return entries
    return [Entry(p.stem if p.suffix == ".zip" else p.name, p) for p in sorted(root.iterdir())
            if not p.name.startswith(".") and (p.is_dir() or p.suffix == ".zip")]


def unpack(archive: Path, destination: Path, limits: UploadLimits) -> None:
    """Extract a submission zip into a new root-only folder, refusing (ValueError) what Gradescope's own
    unpacking would not give the grader: links, paths outside the folder, more than the upload caps. The
    sizes are the zip's declared ones, and zipfile never writes more than a member declares."""
    with zipfile.ZipFile(archive) as z:
        members = z.infolist()
        if len(members) > limits.max_files:
            raise ValueError(f"more than {limits.max_files} files and folders")
        if sum(m.file_size for m in members) > limits.max_bytes:
            raise ValueError(f"more than {UploadLimits.mib(limits.max_bytes)} unpacked")
        destination.mkdir(mode=0o700)
        for m in members:
            parts = Path(m.filename).parts
            if m.filename.startswith("/") or ".." in parts or stat.S_ISLNK(m.external_attr >> 16):
                raise ValueError(f"{printable(m.filename, name=True)}: a link or a path outside the submission")
            if len(parts) > limits.max_depth:
                raise ValueError(f"{printable(m.filename, name=True)}: folders nested deeper than {limits.max_depth}")
            z.extract(m, destination)


def grading_key(config: GraderConfig, data: Path, options: list[str]) -> str:
    """What a result depends on besides the submission: the grader's code, the config (and its checks), the
    reference data's bytes and the options. A stored result with another key is regraded."""
    digest = hashlib.sha256(f"{__version__}\0{json.dumps(options)}\0".encode())
    files = [config.source]
    for folder in (Path(__file__).parent, data, *([config.checks] if config.checks else [])):
        files += sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                        and not p.name.endswith(".lock"))
    for path in files:
        digest.update(f"{path.name}\0{path.stat().st_size}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _student_users(jobs: int) -> list[str]:
    return [DEFAULT_USER] + [f"{DEFAULT_USER}-{i}" for i in range(2, jobs + 1)]


def _read_report(path: Path) -> dict | None:
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) and isinstance(report.get("tests"), list) else None


@dataclass(frozen=True)
class Settings:
    """What grading one submission needs, wherever it runs (picklable, for Dask workers): absolute paths,
    which a worker must see as the batch's machine does."""

    config: Path
    data: Path
    options: tuple[str, ...]  # the grader's flags that affect a result
    key: str  # grading_key() of the above
    timeout: float  # seconds a grader process gets before it is killed
    slots: int  # student users a machine may use at once


class Batch:
    """The grading of one submission in its own grader process, into OUT/<submission>/."""

    def __init__(self, settings: Settings, out: Path):
        self.settings, self.out = settings, out
        self.config = load_config(settings.config)

    def stored(self, entry: Entry) -> Outcome | None:
        folder = self.out / entry.name
        try:
            stamp = json.loads((folder / "grading.json").read_text())
        except (OSError, ValueError):
            return None
        report = _read_report(folder / "results.json")
        if report is None or not isinstance(stamp, dict) or stamp.get("key") != self.settings.key:
            return None
        return Outcome(entry, report, float(stamp.get("seconds", 0)), reused=True, problem=stamp.get("problem", ""),
                       files=[tuple(f) for f in stamp.get("files", [])])

    def grade(self, entry: Entry, user: str) -> Outcome:
        folder = self.out / entry.name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        results, problem, started = folder / "results.json", "", time.monotonic()
        submission = entry.source
        unpacked = self.out / ".unpacked" / entry.name
        files: list = []
        try:
            if entry.source.suffix == ".zip" and entry.source.is_file():
                shutil.rmtree(unpacked, ignore_errors=True)
                unpacked.parent.mkdir(mode=0o700, exist_ok=True)
                try:
                    unpack(entry.source, unpacked, self.config.upload_limits)
                except (ValueError, OSError, zipfile.BadZipFile) as exc:
                    problem = f"the zip could not be unpacked: {printable(str(exc))}"
                submission = unpacked
            if not problem:
                argv = [sys.executable, "-m", "grader", "--submission", str(submission), "--data",
                        str(self.settings.data), "--results", str(results), "--config", str(self.settings.config),
                        f"--student-user={user}", "--predictions", str(folder / "predictions.npz"), *self.settings.options]
                with open(folder / "grader.log", "wb") as log:
                    try:
                        subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       timeout=self.settings.timeout, check=False)
                    except subprocess.TimeoutExpired:
                        problem = f"the grader did not finish within {self.settings.timeout} s and was killed"
                files = duplicates.file_hashes(submission)
        finally:
            shutil.rmtree(unpacked, ignore_errors=True)
        report = _read_report(results)
        if report is None or problem:
            problem = problem or "the grader wrote no valid results.json (see grader.log)"
            report = fallback_results(f"Not graded: {problem}", self.config)
            results.write_text(json.dumps(report, indent=2))
        seconds = time.monotonic() - started
        (folder / "grading.json").write_text(json.dumps({"key": self.settings.key, "seconds": seconds, "problem": problem,
                                                         "user": user, "files": files}, indent=2))
        return Outcome(entry, report, seconds, problem=problem, files=files)


def acquire_slot(slots: int) -> tuple[str, int | None]:
    """A student user no other batch task on this machine holds, and the lock that holds it (released by
    closing it, or by the kernel when this process dies). Waits while all `slots` are taken. Not root: no
    user of its own is needed (each run's namespaces keep it apart) and none is locked."""
    users = _student_users(slots)
    if os.geteuid() != 0:
        return users[0], None
    while True:
        for user in users:
            fd = open_lock(f"slot-{user}")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return user, fd
            except BlockingIOError:
                os.close(fd)
        time.sleep(0.1)


def grade_slotted(batch: Batch, entry: Entry) -> Outcome:
    user, lock = acquire_slot(batch.settings.slots)
    try:
        return batch.grade(entry, user)
    finally:
        if lock is not None:
            os.close(lock)


OUTPUT_FILES = ("results.json", "grading.json", "grader.log", "predictions.npz")


def grade_remote(settings: Settings, entry: Entry) -> dict[str, bytes]:
    """A Dask task: grade one submission on the worker, in a private temporary folder, and return the
    files the batch keeps for it."""
    with tempfile.TemporaryDirectory(prefix="mp-grader-batch-") as tmp:
        folder = Path(tmp) / entry.name
        grade_slotted(Batch(settings, Path(tmp)), entry)
        return {name: (folder / name).read_bytes() for name in OUTPUT_FILES if (folder / name).is_file()}


def error_kinds(outcome: Outcome) -> dict[str, str]:
    """question -> the kind of error that stopped it ("" when graded); "batch" for a problem of the batch."""
    metrics = outcome.report.get("extra_data", {}).get("metrics", {})
    if outcome.problem or not metrics:
        return {"all": "batch" if outcome.problem else "grader"}
    return {q: m.get("error_kind") or "error" for q, m in metrics.items() if isinstance(m, dict) and "error" in m}


def _total(report: dict) -> float:
    return sum(float(t.get("score", 0)) for t in report["tests"])


def _scores(config: GraderConfig, report: dict) -> dict[str, float]:
    by_title = {t.get("name"): t.get("score", 0) for t in report["tests"]}
    return {q: float(by_title.get(cfg.title, 0)) for q, cfg in config.questions.items()}


METRIC_COLUMNS = {"q1": ("accuracy",), "q2": ("mAP", "mIoU")}


def write_csv(config: GraderConfig, outcomes: list[Outcome], path: Path) -> None:
    questions = list(config.questions)
    header = ["submission", "submitters", "created_at"]
    for q in questions:
        header += [f"{q}_score", *(f"{q}_{m}" for m in METRIC_COLUMNS.get(q, ())), f"{q}_error"]
    header += ["total", "max_total", "error", "seconds"]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for o in outcomes:
            metrics, scores, kinds = o.report.get("extra_data", {}).get("metrics", {}), _scores(config, o.report), error_kinds(o)
            row: list[object] = [o.entry.name, "; ".join(o.entry.submitters), o.entry.created_at]
            for q in questions:
                values = metrics.get(q, {}) if isinstance(metrics.get(q), dict) else {}
                row += [f"{scores[q]:g}", *(_number(values.get(m)) for m in METRIC_COLUMNS.get(q, ())),
                        kinds.get(q, kinds.get("all", ""))]
            first = next(iter(kinds.values()), "")
            row += [f"{_total(o.report):g}", f"{config.max_score:g}", first, f"{o.seconds:.1f}"]
            writer.writerow(row)


def _number(x: object) -> str:
    return f"{x:.4f}" if isinstance(x, (int, float)) else ""


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= 160 else line[:157] + "..."


def summary_text(config: GraderConfig, outcomes: list[Outcome], notes: list[str]) -> str:
    """The batch in a page of Markdown: the score distribution, the slowest runs, every error by kind."""
    maximum = config.max_score
    totals = sorted(_total(o.report) for o in outcomes)
    lines = ["# Batch grade", "", f"{len(outcomes)} submissions ({sum(o.reused for o in outcomes)} reused from an "
             "earlier run with the same grader, config, data and options).", ""]
    if totals:
        mean = sum(totals) / len(totals)
        lines += [f"Total out of {maximum:g}: mean {mean:.2f}, median {totals[len(totals) // 2]:g}, "
                  f"min {totals[0]:g}, max {totals[-1]:g}; full marks: {sum(t >= maximum for t in totals)}.", ""]
    lines += [*notes, "", "![scores](scores.png)", "", "![metrics](metrics.png)", "", "## Slowest", ""]
    for o in sorted(outcomes, key=lambda o: -o.seconds)[:5]:
        lines.append(f"- {o.entry.name}: {o.seconds:.1f} s{' (reused)' if o.reused else ''}")
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
        items = [f"- {name} ({', '.join(qs)}): {text}" for name, (qs, text) in grouped[kind].items()]
        lines += [f"### {kind} ({len(items)})", "", *items, ""]
    return "\n".join(lines).rstrip() + "\n"


def draw(config: GraderConfig, outcomes: list[Outcome], folder: Path) -> list[Path]:
    """scores.png: the distribution of totals and of each question's score; metrics.png: each metric's."""
    from grader.plots import pyplot

    plt = pyplot()
    questions = list(config.questions)
    fig, axes = plt.subplots(1, 1 + len(questions), figsize=(4 * (1 + len(questions)), 3.2), squeeze=False)
    series = [("total", config.max_score, [_total(o.report) for o in outcomes])]
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
        values = [v for o in outcomes if isinstance(v := o.report.get("extra_data", {}).get("metrics", {}).get(q, {}).get(m),
                                                    (int, float))]
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


def check_duplicates(args: argparse.Namespace, config: GraderConfig, outcomes: list[Outcome], out: Path) -> str:
    """duplicates.md and duplicates.png; returns the summary's line about them."""
    from grader.reference import ReferenceDataError, load_reference

    files = duplicates.identical_files({o.entry.name: o.files for o in outcomes})
    pairs = []
    for q in config.questions:
        predictions = {}
        for o in outcomes:
            try:
                with np.load(out / o.entry.name / "predictions.npz", allow_pickle=False) as saved:
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
    args.memory_option, notes = [], []
    if args.jobs > 1 or args.dask:
        if args.isolation in ("user", "process"):
            raise BatchError(f"--jobs {args.jobs}{' --dask' if args.dask else ''} with --isolation {args.isolation}: "
                             "concurrent runs would see each other's files; that needs the namespace layer "
                             "(bubblewrap), or --jobs 1")
        args.isolation = "namespace"
        try:
            prepare("namespace", args.memory_accounting, [], _student_users(args.jobs)[-1]).close()
        except SandboxError as exc:
            raise BatchError(f"concurrent runs need the namespace layer, and it could not be had: {exc}. "
                             "Grade with --jobs 1 (and no --dask)") from None
        left = memory_left_mib() if args.dask in (None, "local") else None  # a remote worker's is its own
        if left is not None:
            share = left // args.jobs - GRADER_MIB
            if share < max(q.memory_limit for q in config.questions.values()):
                if share < 256:
                    raise BatchError(f"{left} MiB of memory is too little for {args.jobs} runs at once")
                args.memory_option = [f"--memory-limit={share}"]
                notes.append(f"Memory: {left} MiB shared by {args.jobs} runs: each question's limit is {share} MiB.")
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
                        MAX_JOBS if args.dask else args.jobs)
    batch = Batch(settings, out)
    out.mkdir(parents=True, exist_ok=True)
    outcomes: dict[str, Outcome] = {}
    todo = []
    for entry in entries:
        stored = None if args.force else batch.stored(entry)
        if stored is not None:
            outcomes[entry.name] = stored
        else:
            todo.append(entry)
    root = os.geteuid() == 0
    uids = [_uid(u) for u in _student_users(settings.slots if not args.dask else args.jobs)] if root else []
    closed = (closed_paths([*protected_inputs(args.data, config), args.submissions.resolve(), out])
              if root and args.isolation != "process" else [])
    where = f"on the Dask cluster {args.dask}" if args.dask else f"{args.jobs} at a time"
    print(f"{len(entries)} submissions: {len(outcomes)} already graded with these settings, {len(todo)} to grade, "
          f"{where}", file=sys.stderr)
    with closed_to_others(closed, uids) as kept:
        with tqdm(total=len(todo), desc="batch", unit="submission", file=sys.stderr, dynamic_ncols=True) as progress:
            for outcome in (_on_dask(args, settings, batch, todo, config) if args.dask
                            else _on_threads(args.jobs, batch, todo)):
                outcomes[outcome.entry.name] = outcome
                progress.set_postfix_str(outcome.entry.name, refresh=False)
                progress.update()
    if kept:
        notes.append(f"Left closed (mode 0700): {', '.join(map(str, closed))}, because {kept[0]}.")
    ordered = [outcomes[e.name] for e in entries]
    notes.append(check_duplicates(args, config, ordered, out))
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


def _on_threads(jobs: int, batch: Batch, todo: list[Entry]) -> Iterator[Outcome]:
    with ThreadPoolExecutor(jobs) as pool:
        for future in as_completed([pool.submit(grade_slotted, batch, e) for e in todo]):
            yield future.result()


def _on_dask(args: argparse.Namespace, settings: Settings, batch: Batch, todo: list[Entry],
             config: GraderConfig) -> Iterator[Outcome]:
    """One task per submission on a Dask cluster (`--dask local`: one started here with --jobs workers).
    On CUDA each task asks for one unit of the workers' GPU resource (start them with --resources GPU=1)."""
    from distributed import Client, LocalCluster, as_completed as dask_completed

    cluster = LocalCluster(n_workers=args.jobs, threads_per_worker=1, processes=True, dashboard_address=None,
                           resources={"GPU": 1} if args.device == "cuda" else None) if args.dask == "local" else None
    with Client(cluster if cluster is not None else args.dask) as client:
        resources = {"GPU": 1} if args.device == "cuda" or (args.device == "auto" and config.device == "cuda") else None
        futures = {client.submit(grade_remote, settings, e, key=f"grade-{e.name}-{settings.key[:12]}", pure=False,
                                 resources=resources): e for e in todo}
        for future in dask_completed(futures):
            entry = futures[future]
            folder = batch.out / entry.name
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            for name, content in future.result().items():
                if name in OUTPUT_FILES:
                    (folder / name).write_bytes(content)
            outcome = batch.stored(entry)
            if outcome is None:
                raise BatchError(f"{entry.name}: the worker returned no usable result")
            outcome.reused = False
            yield outcome
    if cluster is not None:
        cluster.close()


def _uid(user: str) -> int:
    return ensure_user(user)[0]
