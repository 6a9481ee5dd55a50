"""First step of every process the grader starts for a student: join the cgroup, drop privileges, exec.

Run by the grader as `python -I -S launch.py OPTIONS -- PROGRAM ARGS...`: -I and -S keep every file of the
submission (and every site-packages) out of its imports. While still the grader's user it moves itself
into the question's cgroups, memory and CPU (so that everything it starts is counted and listed there, with no
window in which a process runs outside) and puts itself first in line for the kernel's OOM killer; then,
when root, it gives up root for good: no supplementary groups, real, effective and saved ids all the
student's. It checks the result before it execs the program.
"""
import json
import os
import sys


def main(argv: list[str]) -> None:
    options, program = json.loads(argv[1]), argv[3:]
    for procs in options.get("cgroup_procs") or []:  # the question's cgroup in each hierarchy (memory, cpu)
        with open(procs, "w") as f:
            f.write(str(os.getpid()))
    # First in line for the kernel's OOM killer (inherited by every process it starts): when the whole
    # container runs short of memory, the student's process dies, not the grader that reports it.
    with open("/proc/self/oom_score_adj", "w") as f:
        f.write("1000")
    if options.get("uid") is not None:
        uid, gid = options["uid"], options["gid"]
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
        if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid) or os.getgroups():
            sys.exit("launch: could not drop privileges")
    os.umask(0o077)
    os.execv(program[0], program)


if __name__ == "__main__":
    main(sys.argv)
