"""The two zips a course uploads to Gradescope: a student's submission and the instructor's autograder.

    python -m grader.package submission DIR [--out submission.zip]
    python -m grader.package autograder --reference DIR [--out autograder.zip]

Both refuse, with one line saying why, what would fail on Gradescope: a submission without predict.py or
its functions, over the upload caps, or whose predict functions fail on a few reference images; an
autograder whose config cannot work there (time limits past the assignment's timeout, a checks folder
that would be left out of the zip) or whose reference data does not load.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from grader.atomic import written_atomically
from grader.config import DEFAULT_CONFIG, ConfigError, GraderConfig, load_config, non_default_settings, tomllib
from grader.prediction_file import check_file
from grader.public_data import public_share
from grader.reference import ReferenceDataError, load_reference
from grader.runner import StudentError
from grader.upload import UploadError, stage_upload, unstage

ROOT = Path(__file__).resolve().parent.parent
# What the autograder zip holds, from the working tree: Gradescope runs setup.sh, then run_autograder,
# from the zip's top. `reference_data/` comes from --reference instead of the repository.
AUTOGRADER_FILES = ("setup.sh", "run_autograder", "requirements.txt", "grader")
SKIPPED_DIRS = {"__pycache__", ".ipynb_checkpoints"}
SMOKE_IMAGES = 4  # reference images per question for the trial run before zipping


class PackageError(Exception):
    """The zip would not work on Gradescope; the message says what to change."""


def _files(folder: Path) -> list[Path]:
    """The files a zip of `folder` holds, relative to it: no hidden files or folders, no caches. Refuses
    symbolic links, as the grader does."""
    found = []
    for top, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIPPED_DIRS)
        kept = [f for f in sorted(files) if not f.startswith(".") and not f.endswith((".pyc", ".pyo"))]
        for name in [*dirs, *kept]:
            if os.path.islink(os.path.join(top, name)):
                where = Path(top, name).relative_to(folder)
                raise PackageError(f"{where} is a symbolic link: put the file itself in the folder")
        found += [Path(top, f).relative_to(folder) for f in kept]
    return found


def _write_zip(out: Path, members: list[tuple[Path, str]]) -> int:
    """Write (source file, name in the zip) pairs, keeping the run bits; atomically. Returns its size."""
    with written_atomically(out, mode=0o600) as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as z:
        for source, name in members:
            info = zipfile.ZipInfo.from_file(source, name, strict_timestamps=False)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (stat.S_IFREG | (0o755 if os.access(source, os.X_OK) else 0o644)) << 16
            with open(source, "rb") as src, z.open(info, "w") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
    return out.stat().st_size


def _trial_run(folder: Path, config: GraderConfig, data: Path) -> list[str]:
    """Grade `folder` on the first SMOKE_IMAGES reference images of each question, through the grader's own
    runner (so shapes, dtypes and finiteness are checked exactly as on Gradescope). Returns one line per
    question; raises PackageError on the first failure."""
    from grader.evaluation import evaluate
    from grader.sandbox import SandboxError, prepare

    lines = []
    sandbox, staging = None, None
    try:
        try:
            sandbox = prepare("auto", "auto", [data.resolve()])
        except SandboxError as exc:  # another grade holding the student user, say: nothing ran, nothing is left
            raise PackageError(f"the trial run could not start: {exc}") from None
        try:  # checked and copied as the grader does: a copy the student user can read
            staging = stage_upload(folder, config.upload_limits, sandbox.student)
        except UploadError as exc:
            raise PackageError(str(exc)) from None
        for key, cfg in config.questions.items():
            ref = load_reference(data, key)
            if cfg.mode == "predictions":
                try:
                    line = check_file(staging / cfg.predictions_file, key, len(ref.classes), ref.images.shape[1:3])
                except StudentError as exc:
                    raise PackageError(f"{key.upper()}: {exc.message}") from None
                lines.append(f"{line} (the number of images is checked on Gradescope, against the test images)")
                continue
            n = min(SMOKE_IMAGES, len(ref))
            small = dataclasses.replace(ref, images=ref.images[:n], labels=ref.labels[:n], names=ref.names[:n])
            result = evaluate(small, staging, dataclasses.replace(cfg, batch_size=n), "cpu", sandbox)
            if result.error is not None:
                raise PackageError(f"trial run of predict_{key} on {n} reference images failed: {result.error}"
                                   + (f"\n{result.details}" if result.details else ""))
            lines.append(f"predict_{key}: ran on {n} reference images on the CPU in {result.run.seconds:.1f} s; "
                         "shapes, types and values as the grader expects")
    finally:
        if sandbox is not None:
            sandbox.close()
        if staging is not None:
            unstage(staging)
    return lines


def submission_zip(folder: Path, out: Path, config: GraderConfig, data: Path) -> list[str]:
    """Check `folder` as the grader will, try predict.py on a few reference images, and zip its files at
    the zip's top. Returns what the student should read; raises PackageError."""
    markers = config.upload_markers
    if not any((folder / m).is_file() for m in markers):
        nested = sorted({p.parent.name for m in markers for p in folder.glob(f"*/{m}")})
        hint = f" (it is in {nested[0]}/: give that folder instead)" if len(nested) == 1 else ""
        raise PackageError(f"{folder}: no {' or '.join(markers)} at its top{hint}")
    files = _files(folder)
    with tempfile.TemporaryDirectory(prefix="submission-zip-") as tmp:
        unpacked = Path(tmp)  # what Gradescope will unpack: the files that go into the zip, no more
        for f in files:
            (unpacked / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(folder / f, unpacked / f)
        lines = _trial_run(unpacked, config, data)
    size = _write_zip(out, [(folder / f, f.as_posix()) for f in files])
    lines.append(f"{out}: {len(files)} files, {size / 2**20:.1f} MiB: " + ", ".join(f.as_posix() for f in files))
    lines.append("Upload it to Gradescope as it is (the files are at its top, as Gradescope needs).")
    return lines


def _tracked_changes() -> list[str]:
    """`git status` of what the autograder zip takes from the working tree, [] outside a git checkout."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--", *AUTOGRADER_FILES], cwd=ROOT,
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return out.stdout.splitlines() if out.returncode == 0 else []


def autograder_zip(reference: Path, out: Path, config_path: Path = DEFAULT_CONFIG, allow_public: bool = False) -> list[str]:
    """Zip the autograder from the working tree, with `config_path` as its grader/config.toml, grading on
    `reference`; returns what went in. Held-out images that are mostly a public set (their labels in every
    student's hands) are refused unless `allow_public`, which the summary then shouts."""
    config = load_config(config_path)  # refuses time limits past [grader].time_budget, among others
    members: list[tuple[Path, str]] = [(config_path, "grader/config.toml")]
    if config.checks is not None:
        written = tomllib.loads(config_path.read_text())["grader"]["checks"]
        if Path(written).is_absolute() or (ROOT / "grader" / written).resolve() != config.checks \
                or not config.checks.is_relative_to(ROOT):
            raise PackageError(f"[grader].checks: {config.checks} would not be in the zip where the config looks "
                               f"for it, and every student would get 0 for its checks: put it inside {ROOT} and "
                               "give its path relative to grader/")
        members += [(config.checks / f, (config.checks.relative_to(ROOT) / f).as_posix()) for f in _files(config.checks)]
    if config.public_seed_warning:
        raise PackageError(config.public_seed_warning)
    if not reference.is_dir():
        raise PackageError(f"--reference {reference}: no such folder")
    counts, public = [], []
    for key in config.questions:
        try:
            ref = load_reference(reference, key)
        except ReferenceDataError as exc:
            raise PackageError(f"--reference {reference}: {exc}") from None
        counts.append(f"{key}: {len(ref)} images")
        if (share := public_share(ref)).too_public:
            public.append((key, share))
    if public and not allow_public:
        raise PackageError(f"--reference {reference}: {'; '.join(str(s) for _, s in public)}: a submission could ship a table of "
                           "them and score without a model. Build the held-out set from your own data (python -m "
                           "grader.build_reference --q1-images/--q1-labels, --seg-split), or pass --allow-public "
                           "(make autograder ALLOW_PUBLIC=1) to grade on it anyway")
    for name in AUTOGRADER_FILES:
        path = ROOT / name
        members += [(path / f, f"{name}/{f.as_posix()}") for f in _files(path)
                    if f != Path("config.toml")] if path.is_dir() else [(path, name)]
    members += [(reference / f, f"reference_data/{f.as_posix()}") for f in _files(reference)]
    size = _write_zip(out, members)
    lines = [f"{out}: {len(members)} files, {size / 2**20:.1f} MiB, config sha256 {config.sha256[:12]}"]
    for key, q in config.questions.items():
        line = ", ".join(f"{m} >= {t:g}" for m, t in q.thresholds.items())
        lines.append(f"  {q.title}: {q.points:g} points at {line}, partial credit {q.partial_credit}; "
                     f"{q.time_limit:g} s, {q.memory_limit} MiB, batches of {q.batch_size}")
    lines.append(f"  time limits {sum(q.time_limit for q in config.questions.values()):g} s of the "
                 f"{config.time_budget:g} s time budget (set Gradescope's autograder timeout to match)")
    lines.append(f"  reference data from {reference}: {', '.join(counts)}")
    for key, share in public:
        lines.append(f"  WARNING: PUBLIC HELD-OUT DATA (--allow-public): {str(share).upper()}")
        lines.append(f"  memorization probe on {key}: {config.questions[key].memorization_copies:g} of the images copied, "
                     "flagged submissions in the batch's scores.csv and summary.md" if config.questions[key].memorization
                     else f"  WARNING: MEMORIZATION PROBE OFF FOR {key.upper()}: NOTHING TELLS A TABLE OF THESE LABELS FROM A "
                          f"MODEL (set [{key}].memorization_copies, e.g. 0.1)")
    lines.append(f"  checks: {config.checks.relative_to(ROOT) if config.checks else 'none'}")
    changed = non_default_settings(config)
    lines.append("  settings not at their defaults: " + ("; ".join(changed) if changed else "none"))
    if reference.resolve().is_relative_to(ROOT):
        lines.append(f"  warning: {reference} lies inside the repository: students who can see the repository "
                     "can see these labels")
    changes = _tracked_changes()
    if changes:
        lines.append("  built from the working tree, with changes not committed: " + "; ".join(c.strip() for c in changes))
    lines.append("Upload it as the autograder (base image: Ubuntu 22.04, Gradescope's default). To see what a threshold "
                 "change would do to a class graded with mp-grader batch: mp-grader rescore OUT --config new.toml.")
    return lines


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m grader.package", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("submission", help="the zip a student uploads")
    s.add_argument("folder", type=Path, help="the folder holding predict.py")
    s.add_argument("--out", type=Path, default=Path("submission.zip"))
    s.add_argument("--data", type=Path, default=ROOT / "reference_data", help="images for the trial run")
    s.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    a = sub.add_parser("autograder", help="the zip an instructor uploads")
    a.add_argument("--reference", default="",
                   help="the secret reference data (build it with python -m grader.build_reference)")
    a.add_argument("--out", type=Path, default=Path("autograder.zip"))
    a.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="goes in as grader/config.toml")
    a.add_argument("--allow-public", action="store_true",
                   help="zip held-out data that is mostly a public set (its labels public): the summary says so")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        if args.command == "submission":
            lines = submission_zip(args.folder, args.out, load_config(args.config), args.data)
        elif not args.reference:
            raise PackageError("say which reference data to grade on: make autograder REFERENCE=/path/to/secret "
                               "(a folder outside the repository, built by python -m grader.build_reference); "
                               "REFERENCE=reference_data takes the public data students have")
        else:
            lines = autograder_zip(Path(args.reference), args.out, args.config, args.allow_public)
    except (PackageError, ConfigError, ReferenceDataError) as exc:
        print(f"not zipped: {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
