"""Grade a submission in the Docker image under Gradescope's default limits and measure it from outside.

    PYTHONPATH=. python3 bench/docker_grade.py [--image mp-grader] [--submission submission] [--cpus 0.5] [--memory 768m]
                                               [--config FILE]

Prints the wall time of the container and the peak memory, sampled every 0.2 s from the host's /proc and
the container's cgroup: of the whole container (anonymous + shared memory, and the cgroup's own peak with
page cache), and of the grader and of each question's child (resident: anonymous and file-backed). Linux
hosts only (it reads /proc of the container's processes); run it as root.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

from grader.sandbox.cgroup import read_key


def _cgroup_dir(cid: str) -> Path | None:
    for base in (Path("/sys/fs/cgroup/memory"), Path("/sys/fs/cgroup")):
        for pattern in (f"docker/{cid}", f"system.slice/docker-{cid}.scope"):
            if (base / pattern).is_dir():
                return base / pattern
    return None


def _status(pid: str) -> dict[str, int]:
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("RssAnon", "RssFile", "RssShmem"):
                values[key] = int(rest.split()[0]) * 1024
    return values


def _role(pid: str) -> str:
    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    text = b" ".join(cmd).decode(errors="replace")
    if "child.py" in text:
        return "child q" + ("1" if '"question": "q1"' in text else "2")
    if "-m grader" in text:
        return "grader"
    return "other"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image", default="mp-grader")
    p.add_argument("--submission", type=Path, default=Path("submission"))
    p.add_argument("--cpus", default="0.5")
    p.add_argument("--memory", default="768m")
    p.add_argument("--config", type=Path, help="grade with this config instead of the image's (mounted over it)")
    args = p.parse_args()
    # Read-only: inside /autograder/source, which the image closes at build time, the grader never changes its mode.
    config = ["-v", f"{args.config.resolve()}:/autograder/source/grader/config.toml:ro"] if args.config else []
    results = Path(tempfile.mkdtemp(prefix="docker-grade-"))
    started = time.monotonic()
    cid = subprocess.run(["docker", "run", "-d", "--cpus", args.cpus, "--memory", args.memory, "--network", "none",
                          "-v", f"{args.submission.resolve()}:/autograder/submission:ro",
                          "-v", f"{results}:/autograder/results", *config, args.image, "/autograder/run_autograder"],
                         check=True, capture_output=True, text=True).stdout.strip()
    peaks: dict[str, dict[str, int]] = {}
    container_peak, cgroup_peak = 0, 0
    cgroup = None
    while True:
        state = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", cid], capture_output=True, text=True)
        if state.stdout.strip() != "true":
            break
        cgroup = cgroup or _cgroup_dir(cid)
        if cgroup is not None:
            try:
                v1 = (cgroup / "memory.stat").read_text().startswith("cache")
                keys = ("total_rss", "total_shmem") if v1 else ("anon", "shmem")
                container_peak = max(container_peak, sum(read_key(cgroup / "memory.stat", key) for key in keys))
                peak_file = "memory.max_usage_in_bytes" if v1 else "memory.peak"
                if (cgroup / peak_file).exists():
                    cgroup_peak = max(cgroup_peak, int((cgroup / peak_file).read_text()))
                procs = (cgroup / "cgroup.procs").read_text().split()
            except OSError:
                procs = []
            for pid in procs:
                try:
                    role, values = _role(pid), _status(pid)
                except OSError:
                    continue
                peak = peaks.setdefault(role, {})
                for key, value in values.items():
                    peak[key] = max(peak.get(key, 0), value)
                peak["RSS"] = max(peak.get("RSS", 0), sum(values.values()))
        time.sleep(0.2)
    wall = time.monotonic() - started
    oom = subprocess.run(["docker", "inspect", "-f", "{{.State.OOMKilled}}", cid], capture_output=True, text=True).stdout.strip()
    subprocess.run(["docker", "rm", cid], capture_output=True)
    report = json.loads((results / "results.json").read_text())
    total = sum(t.get("score", 0) for t in report["tests"])
    mib = lambda n: f"{n / 2**20:.0f} MiB"  # noqa: E731
    print(f"image {args.image}, --cpus {args.cpus} --memory {args.memory}: {wall:.1f} s wall, score {total:g}, "
          f"container OOM-killed: {oom}")
    print(f"container: anonymous + shared peak {mib(container_peak)}; cgroup peak with page cache {mib(cgroup_peak)}")
    for role, peak in sorted(peaks.items()):
        print(f"{role:>8}: RSS {mib(peak['RSS'])} (anonymous {mib(peak.get('RssAnon', 0))}, "
              f"file-backed {mib(peak.get('RssFile', 0))}, shared {mib(peak.get('RssShmem', 0))})")
    print(f"results.json: {results / 'results.json'}")


if __name__ == "__main__":
    main()
