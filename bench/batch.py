"""A generated class graded one at a time and two at a time, in one run: the speed-up and the same scores.

    sudo PYTHONPATH=. .venv/bin/python bench/batch.py [--n 30] [--jobs 2] [--dask [tls://HOST:PORT --dask-tls DIR]]

The class is tests/export_fixture.py's (honest, broken and hostile submissions mixed, in Gradescope's export
layout) on the first 200 Q1 and 4 Q2 images of the committed reference data, with 15 s time limits (the
submissions that sleep are stopped there). Both batches are timed from outside; scores.csv of the two must
agree on every score and metric, else the script fails. --dask adds a third batch on a local Dask cluster of
--jobs workers, or on the cluster at the address given (docs/batch.md#across-machines-step-by-step: worker
containers, say). Needs the namespace layer for --jobs above 1.
"""
from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from conftest import config_with, make_reference  # noqa: E402
from export_fixture import make_export  # noqa: E402


def _batch(export: Path, data: Path, out: Path, config: Path, jobs: int, *extra: str) -> tuple[float, list[dict]]:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "grader", "batch", str(export), "--data", str(data), "--out", str(out),
                    "--config", str(config), "--jobs", str(jobs), "--device", "cpu", *extra], check=True,
                   stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    with open(out / "scores.csv", newline="") as f:
        rows = [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]
    return seconds, rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=30)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--dask", nargs="?", const="local", metavar="ADDRESS",
                   help="also grade on a Dask cluster: a local one (no address), or the scheduler at ADDRESS")
    p.add_argument("--dask-tls", metavar="DIR", help="the course's TLS files, for a scheduler at a tls:// address")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp_name:
        tmp = Path(tmp_name)
        tmp.chmod(0o755)
        data = make_reference(tmp / "data", n_q1=200, n_q2=4)
        export = make_export(tmp / "export", args.n, data, tmp / "out")
        config = config_with(tmp, **{"time_limit = 240": "time_limit = 15", "time_limit = 300": "time_limit = 15"})
        one, rows_one = _batch(export, data, tmp / "out1", config, 1)
        print(f"--jobs 1: {one:.1f} s for {args.n} submissions ({one / args.n:.2f} s each)", flush=True)
        many, rows_many = _batch(export, data, tmp / "out2", config, args.jobs)
        print(f"--jobs {args.jobs}: {many:.1f} s ({many / args.n:.2f} s each): {one / many:.2f}x faster")
        if rows_one != rows_many:
            sys.exit("the two batches disagree on some score or metric")
        if args.dask:
            extra = ["--dask", args.dask, *(["--dask-tls", args.dask_tls] if args.dask_tls else [])]
            dask, rows_dask = _batch(export, data, tmp / "out3", config, args.jobs, *extra)
            where = f"local, {args.jobs} workers" if args.dask == "local" else args.dask
            print(f"--dask {where}: {dask:.1f} s: {one / dask:.2f}x faster than --jobs 1")
            if rows_dask != rows_one:
                sys.exit("the Dask batch disagrees on some score or metric")
        print(f"every score, metric and error kind equal in all ({len(rows_one)} rows)")


if __name__ == "__main__":
    main()
