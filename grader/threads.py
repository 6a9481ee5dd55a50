"""How many threads the child's numeric libraries start: as many as the CPU time the child may have.

torch (intra-op and inter-op pools), OpenMP, MKL and OpenBLAS each start one thread per core they see. In
a container limited to half a CPU on a many-core host (Gradescope) that is dozens of threads sharing half
a core, which the kernel's quota then stalls period after period. The child gets the container's quota
rounded up (at least 1), at most the cores it may run on. An instructor who sets OMP_NUM_THREADS,
MKL_NUM_THREADS or OPENBLAS_NUM_THREADS in the grader's environment keeps those.
"""
from __future__ import annotations

import math
import os
from typing import Mapping

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def thread_count(cpus: float | None, cores: int) -> int:
    """Threads for `cpus` CPUs' worth of time (None: no quota) on `cores` usable cores."""
    return max(1, min(cores, math.ceil(cpus - 1e-9))) if cpus is not None else max(1, cores)


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def thread_settings(environ: Mapping[str, str], cpus: float | None, cores: int) -> tuple[int, dict[str, str]]:
    """(torch's thread count, the variables for the child's environment). The instructor's settings win:
    with OMP_NUM_THREADS set, torch uses that many and nothing is added."""
    given = {k: environ[k] for k in THREAD_VARIABLES if environ.get(k)}
    if given:
        try:
            return max(1, int(given.get("OMP_NUM_THREADS", "0")) or thread_count(cpus, cores)), given
        except ValueError:
            return thread_count(cpus, cores), given
    threads = thread_count(cpus, cores)
    return threads, {k: str(threads) for k in THREAD_VARIABLES}
