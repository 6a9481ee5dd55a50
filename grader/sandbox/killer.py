"""Kill every process of the student user, from a process the student cannot signal, stop or trace.

Started by root as `python -I -S killer.py STUDENT_UID KILLER_UID KILLER_GID ROUNDS`. It sets its real and saved uid
to a second unprivileged user and only its effective uid to the student's. kill(-1) from here reaches
exactly the processes whose real or saved uid is the student's (the kernel compares the sender's real and
effective uid with the target's real and saved uid), and nothing else: neither root's processes nor other
users'. The student's processes cannot signal it back: its real and saved uid are not theirs. One
kill(-1) signals every process in a single pass under the kernel's task-list lock, and a fork still in
progress when it lands is cancelled by the kernel, so a fork bomb cannot outrun it; a few rounds make sure.
"""
import os
import signal
import sys
import time


def main(argv: list[str]) -> None:
    student, killer, group, rounds = (int(a) for a in argv[1:5])
    os.setgroups([])
    os.setresgid(group, group, group)
    os.setresuid(killer, student, killer)
    if os.getresuid() != (killer, student, killer):
        sys.exit("killer: could not take the student's effective uid")
    for _ in range(rounds):
        os.kill(-1, signal.SIGKILL)
        time.sleep(0.01)


if __name__ == "__main__":
    main(sys.argv)
