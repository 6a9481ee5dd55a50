"""How a question's time limit is judged: pure rules, shared by the runner and the batch.

Alone on a machine (Gradescope, Docker, a student's laptop) a run has no neighbour, and its wall-clock time
is the judgement. Beside other runs (a batch, a Dask worker), each capped at its share of the CPUs, a
neighbour or any other load on the machine could still slow it; there, where the kernel counts the
question's CPU time (its cgroup), the limit is judged on that count, over the whole process tree, as
judges' sandboxes do, and a generous wall-clock guard ends a run that waits instead of computing.
"""
from __future__ import annotations

WALL_GUARD = 2.0  # a run judged on CPU time may take this many times its limit on the wall clock


def cpu_allowance(time_limit: float, cpus: float) -> float:
    """CPU seconds a question capped at `cpus` may use: `time_limit` seconds at the cap's rate. The cap is
    the machine the run gets (its thread pools are sized to it), so a run that keeps its cap busy is judged
    on the wall time it takes at the cap with nothing else on the machine, whatever its neighbours do. A
    run that uses less than its cap (one thread under a cap above one CPU, work on a GPU, waiting) meets
    the wall-clock guard first: more time than its limit, never less."""
    return time_limit * cpus


def wall_guard(time_limit: float, cpus: float | None) -> float:
    """Wall-clock seconds a question may take: `time_limit` when judged on the wall clock (`cpus` None),
    else WALL_GUARD times that."""
    return time_limit if cpus is None else WALL_GUARD * time_limit


def describe(cpus: float | None, counted: bool) -> str:
    """The judgement in words, for the layers in results.json: `cpus` the run's cap beside others (None
    alone), `counted` whether the kernel counts its CPU time."""
    if cpus is None:
        return "wall-clock time (one run at a time: no neighbour graded beside it)"
    if not counted:
        return ("wall-clock time: the kernel keeps no count of a question's CPU time here (no cpuacct hierarchy), "
                "and only the cap keeps neighbours to their share")
    return (f"the CPU time of the question's whole process tree, the kernel's count (cgroup): time_limit seconds at "
            f"its {cpus:.2f}-CPU cap, a neighbour's load or a busy machine adding nothing, with a wall-clock guard of "
            f"{WALL_GUARD:g} x time_limit for a run that waits")
