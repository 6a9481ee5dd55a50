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
    """CPU seconds a question capped at `cpus` may use: `time_limit` seconds of one CPU, or of its whole
    cap when that is larger (its thread pools are sized to the cap). Under one CPU the cap stretches the
    wall time, not the allowance: a run's grade does not depend on how many runs share the machine."""
    return time_limit * max(cpus, 1.0)


def wall_guard(time_limit: float, cpus: float | None) -> float:
    """Wall-clock seconds a question may take: `time_limit` when judged on the wall clock (`cpus` None),
    else WALL_GUARD times the wall time its CPU allowance needs at its cap."""
    if cpus is None:
        return time_limit
    return WALL_GUARD * cpu_allowance(time_limit, cpus) / cpus


def describe(cpus: float | None, counted: bool) -> str:
    """The judgement in words, for the layers in results.json: `cpus` the run's cap beside others (None
    alone), `counted` whether the kernel counts its CPU time."""
    if cpus is None:
        return "wall-clock time (one run at a time: no neighbour graded beside it)"
    if not counted:
        return ("wall-clock time: the kernel keeps no count of a question's CPU time here (no cpuacct hierarchy), "
                "and only the cap keeps neighbours to their share")
    return (f"the CPU time of the question's whole process tree, the kernel's count (cgroup): time_limit seconds of "
            f"{max(cpus, 1.0):g} CPU, a neighbour's load or a busy machine adding nothing, with a wall-clock guard of "
            f"{wall_guard(1.0, cpus):g} x time_limit for a run that waits")
