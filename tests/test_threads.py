"""The child's thread pools sized to the CPU time it may have: a container's quota read as the kernel
writes it (cgroup v2 cpu.max, v1 cfs quota and period), the instructor's own settings kept."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import by_question, config_with, grade, make_reference, write_submission
from grader.sandbox.cgroup import enclosing_cpus
from grader.threads import THREAD_VARIABLES, thread_count, thread_settings


def _v2(tmp_path: Path, *limits: str) -> list[tuple[Path, Path | None, int]]:
    """A v2 hierarchy whose own folder and parents hold these cpu.max values (innermost first)."""
    folder = tmp_path.joinpath(*(f"g{i}" for i in range(len(limits))))
    folder.mkdir(parents=True)
    for f, value in zip([folder, *folder.parents], limits):
        (f / "cpu.max").write_text(value + "\n")
    return [(tmp_path, folder, 2)]


def test_a_containers_cpu_quota_is_read_as_the_kernel_writes_it(tmp_path: Path) -> None:
    assert enclosing_cpus(_v2(tmp_path / "a", "max 100000")) is None
    assert enclosing_cpus(_v2(tmp_path / "b", "50000 100000")) == 0.5  # docker --cpus 0.5
    assert enclosing_cpus(_v2(tmp_path / "c", "max 100000", "150000 100000")) == 1.5  # a parent's counts too
    v1 = tmp_path / "v1" / "docker" / "abc"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("25000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    (v1.parent / "cpu.cfs_quota_us").write_text("-1\n")
    (v1.parent / "cpu.cfs_period_us").write_text("100000\n")
    assert enclosing_cpus([(tmp_path / "v1", v1, 1)]) == 0.25


@pytest.mark.parametrize("cpus, cores, threads", [(0.5, 64, 1), (1.0, 64, 1), (1.5, 64, 2), (8.0, 4, 4), (None, 6, 6),
                                                  (None, 0, 1), (0.01, 1, 1)])
def test_thread_count(cpus: float | None, cores: int, threads: int) -> None:
    assert thread_count(cpus, cores) == threads


def test_the_instructors_settings_win() -> None:
    assert thread_settings({}, 0.5, 64) == (1, {k: "1" for k in THREAD_VARIABLES})
    assert thread_settings({"OMP_NUM_THREADS": "3"}, 0.5, 64) == (3, {"OMP_NUM_THREADS": "3"})
    assert thread_settings({"MKL_NUM_THREADS": "2"}, 2.0, 64) == (2, {"MKL_NUM_THREADS": "2"})


def test_the_child_runs_with_the_threads_it_was_given(tmp_path: Path) -> None:
    code = """
import os, torch
print("threads", torch.get_num_threads(), torch.get_num_interop_threads(), os.environ.get("OMP_NUM_THREADS"))
def predict_q1(images):
    return torch.zeros(len(images), 10)
"""
    submission = write_submission(tmp_path / "submission", code)
    _, report = grade(submission, make_reference(tmp_path / "data", n_q1=5), tmp_path / "results.json",
                      "--config", str(config_with(tmp_path, "q1")), "--isolation", "process")
    from grader.threads import usable_cores

    expected = thread_count(enclosing_cpus(), usable_cores())
    assert f"threads {expected} {expected} {expected}" in by_question(report)["Q1"]["output"]


def test_a_question_capped_at_its_share_reads_back_as_that_many_cpus() -> None:
    """What the cap writes (a real cgroup, where one can be made) is what a child inside it would read."""
    from grader.sandbox.cgroup import CpuCgroup, cgroup_parent, cpu_cap

    assert cpu_cap(0.5, 2) == {"cpu.max": "50000 100000"}
    assert cpu_cap(0.001, 1) == {"cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "1000"}  # the kernel's least
    where = cgroup_parent("cpu")
    if isinstance(where, str):
        pytest.skip(f"no CPU scheduling groups here: {where}")
    group = CpuCgroup.create(0.75)
    try:
        assert enclosing_cpus([(where[0], group.path, group.version)]) == 0.75
    finally:
        assert group.remove()


def test_more_runs_than_the_machine_can_share_are_refused() -> None:
    from grader.sandbox import SandboxError, prepare
    from grader.sandbox.cgroup import cgroup_parent
    from grader.threads import usable_cores

    if isinstance(where := cgroup_parent("cpu"), str):
        pytest.skip(f"no CPU scheduling groups here: {where}")
    runs = int((enclosing_cpus() or usable_cores()) / 0.1) + 1
    with pytest.raises(SandboxError, match=f"--cpu-share {runs}: .* under the 0.1 a run needs"):
        prepare("namespace", "auto", [], cpu_share=runs)
