"""The child's seccomp program, run by an independent BPF interpreter on both architectures: what it
refuses and what it lets through, without needing the kernel (tests/test_isolation.py runs it for real)."""
from __future__ import annotations

import pytest

from grader.child import AUDIT_ARCH, SYSCALLS, seccomp_program

ALLOW, EPERM, EACCES, ENOSYS, KILL = 0x7FFF0000, 0x50001, 0x5000D, 0x50026, 0x80000000


def run(program: list[tuple[int, int, int, int]], arch: int, nr: int, *args: int) -> int:
    """Classic BPF as the kernel runs a seccomp filter: seccomp_data is (nr, arch, ip, args[6])."""
    data = {0: nr, 4: arch, **{16 + 8 * i: a & 0xFFFFFFFF for i, a in enumerate(args)}}
    accumulator, pc = 0, 0
    for _ in range(len(program) + 1):  # no loops in BPF: every path ends within the program's length
        code, jt, jf, k = program[pc]
        if code == 0x20:
            accumulator, pc = data.get(k, 0), pc + 1
        elif code in (0x15, 0x35, 0x45):
            taken = {0x15: accumulator == k, 0x35: accumulator >= k, 0x45: bool(accumulator & k)}[code]
            pc += 1 + (jt if taken else jf)
        else:
            assert code == 0x06
            return k
    raise AssertionError("ran off the end")


@pytest.mark.parametrize("machine", sorted(AUDIT_ARCH))
def test_the_filter_refuses_signal_owners_and_signals_at_the_grader_only(machine: str) -> None:
    grader = 4242
    program = seccomp_program(machine, grader, grader_group=4240, grader_threads=(4243,))
    arch, nr = AUDIT_ARCH[machine], {n: v[0 if machine == "x86_64" else 1] for n, v in SYSCALLS.items()}
    for cmd in (8, 10, 15):  # F_SETOWN, F_SETSIG, F_SETOWN_EX
        assert run(program, arch, nr["fcntl"], 3, cmd, grader) == EPERM
    for cmd in (1, 2, 3, 4, 1030):  # F_GETFD, F_SETFD, F_GETFL, F_SETFL, F_DUPFD_CLOEXEC: ordinary use
        assert run(program, arch, nr["fcntl"], 3, cmd, 0) == ALLOW
    assert run(program, arch, nr["ioctl"], 3, 0x8901, 0) == EPERM and run(program, arch, nr["ioctl"], 3, 0x8902, 0) == EPERM
    assert run(program, arch, nr["ioctl"], 3, 0x5401, 0) == ALLOW  # TCGETS
    for target in (grader, 4243, -4240, -grader, -1):
        assert run(program, arch, nr["kill"], target, 10) == EPERM
    assert run(program, arch, nr["kill"], 999, 10) == ALLOW
    assert run(program, arch, nr["socket"], 2, 1, 0) == EACCES
    assert run(program, arch, nr["clone3"], 0) == ENOSYS
    assert run(program, arch, nr["clone"], 0x10000000) == EPERM and run(program, arch, nr["clone"], 0x11) == ALLOW
    assert run(program, arch ^ 1, nr["kill"], 999) == KILL  # another architecture's numbers: killed
