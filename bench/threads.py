"""Thread pools under a CPU quota: the reference Q1 and Q2 models' inference inside a cgroup limited to
--cpus CPUs (as `docker run --cpus` and Gradescope do), with torch's threads set as the grader now sets
them (the quota rounded up: 1 at 0.5 CPU) against what torch picks by itself (one per core it sees) and
against a many-core host's count. Prints the wall time of each and the ratios, measured in one run.

    sudo PYTHONPATH=. .venv/bin/python bench/threads.py [--cpus 0.5] [--threads 1 2 16] [--repeats 3]

Needs root and a writable cpu cgroup (v1 cpu.cfs_quota_us or v2 cpu.max).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from grader.sandbox.cgroup import CpuCgroup, cgroup_parent

REPO = Path(__file__).resolve().parents[1]
WORK = """
import json, sys, time
import numpy as np, torch
threads = int(sys.argv[1])
torch.set_num_threads(threads)
torch.set_num_interop_threads(threads)
sys.path.insert(0, "submission")
import predict
q1 = torch.from_numpy(np.load("reference_data/q1/images.npy")[:2000]).unsqueeze(1).float().div_(255)
q2 = torch.rand(4, 3, 224, 224)
with torch.inference_mode():
    predict.predict_q1(q1[:10]), predict.predict_q2(q2[:1])  # loaded, warmed
    started = time.monotonic()
    for start in range(0, len(q1), 500):
        predict.predict_q1(q1[start:start + 500])
    middle = time.monotonic()
    predict.predict_q2(q2)
    print(json.dumps({"q1": middle - started, "q2": time.monotonic() - middle}))
"""


def limited(cpus: float) -> CpuCgroup:
    group = CpuCgroup.create()
    if group.version == 2:
        (group.path / "cpu.max").write_text(f"{int(cpus * 100000)} 100000")
    else:
        (group.path / "cpu.cfs_period_us").write_text("100000")
        (group.path / "cpu.cfs_quota_us").write_text(str(int(cpus * 100000)))
    return group


def run(group: CpuCgroup, threads: int) -> dict[str, float]:
    def join() -> None:
        group.procs_file.write_text(str(os.getpid()))

    out = subprocess.run([sys.executable, "-c", WORK, str(threads)], cwd=REPO, capture_output=True, text=True,
                         check=True, preexec_fn=join)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpus", type=float, default=0.5)
    p.add_argument("--threads", type=int, nargs="+", default=[1, os.cpu_count() or 1, 16])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    if isinstance(where := cgroup_parent("cpu"), str):
        sys.exit(f"bench/threads.py: {where}")
    group = limited(args.cpus)
    try:
        times: dict[int, dict[str, list[float]]] = {t: {"q1": [], "q2": []} for t in args.threads}
        for _ in range(args.repeats):  # interleaved, so that the machine's drift touches all alike
            for t in args.threads:
                for q, seconds in run(group, t).items():
                    times[t][q].append(seconds)
    finally:
        group.remove()
    base = args.threads[0]
    print(f"{args.cpus:g} CPU quota, {os.cpu_count()} cores, median of {args.repeats}; "
          f"Q1: 2000 images in batches of 500, Q2: 4 images 224x224")
    for t in args.threads:
        q1, q2 = (statistics.median(times[t][q]) for q in ("q1", "q2"))
        r1, r2 = (statistics.median(times[t][q]) / statistics.median(times[base][q]) for q in ("q1", "q2"))
        print(f"  {t:3d} threads: Q1 {q1:6.2f} s ({r1:.2f}x of {base} thread(s)), Q2 {q2:6.2f} s ({r2:.2f}x)")


if __name__ == "__main__":
    main()
