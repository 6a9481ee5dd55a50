"""Where and as whom student code runs, and how the grader proves that none of it is left afterwards.

Layers, each used where the kernel allows it and each named in every report (`Sandbox.layers`):
- namespaces (bubblewrap, run as the unprivileged user): private PID, mount, IPC, network, UTS and user
  namespaces. The student sees only the interpreter, its libraries, a few files of /etc and the scratch
  folder, read-only but for its own copy of the submission, plus a private size-limited /tmp and /dev/shm.
  Killing the namespace's init kills every process in it, and the grader checks that none is left.
- user (the grader runs as root): student code runs as `grader-student`, never as root, with no
  supplementary groups; the reference data, the config, the grader and every copy of them the grader
  knows of (the checkout's .git, its reference_data/) are closed to other users while grading. A killer
  the student cannot signal (killer.py) ends every process of that user; files it left in world-writable
  folders and its SysV IPC objects are removed.
- memory cgroup (root, where the cgroup file system is writable): the kernel counts and caps the memory
  of the question's processes, shared memory included (cgroup.py).
- process (the fallback on a machine with neither): a separate process and session, seccomp filter,
  limits; as the grader's own user, which the report states plainly.

Inside default Docker and on Gradescope namespaces and cgroups are refused, so "user" is what holds there.
Whatever the layers, a student process that survives its question stops the run (ContainmentError):
nothing is restored, no later question starts, and results.json says why.

One module per concern, each stating in its docstring the guarantee it keeps and what it relies on:
- layers.py: choosing the layers; the run's Sandbox, and what it closes while grading (protected)
- namespaces.py: bubblewrap's arguments, and the probe that it works here
- users.py: the student and killer users, killing every process of one, one run per user (the lock)
- launch.py, killer.py: small programs run by path (join the cgroup and drop privileges; kill)
- closing.py: what student code must never read, closed while it may run (the grader's own folder: at install time)
- jail.py: one question's processes, their memory and their end; run.py: what it is handed by the run
- procfs.py: which processes are the student's, and whether they are gone
- memory.py, cgroup.py: memory counted the processes' way, and the kernel's
- scratch.py: the scratch folder on a tmpfs of its own size, where root may mount one
- cleanup.py: what the student left in shared folders and SysV IPC, removed
- errors.py: the two refusals
"""
from grader.sandbox.cgroup import enclosing_cpus, memory_left_mib
from grader.sandbox.cleanup import SWEEP_SECONDS
from grader.sandbox.closing import closed_paths, closed_to_others
from grader.sandbox.errors import ContainmentError, SandboxError
from grader.sandbox.jail import Jail
from grader.sandbox.layers import ISOLATIONS, MEMORY_ACCOUNTING, Sandbox, prepare, protected, question_cpus
from grader.sandbox.memory import resident_bytes
from grader.sandbox.namespaces import probe_bwrap
from grader.sandbox.procfs import user_processes
from grader.sandbox.users import DEFAULT_USER, ensure_user, open_lock

__all__ = ["DEFAULT_USER", "ISOLATIONS", "MEMORY_ACCOUNTING", "SWEEP_SECONDS", "ContainmentError", "Jail", "Sandbox",
           "SandboxError", "closed_paths", "closed_to_others", "enclosing_cpus", "ensure_user", "memory_left_mib", "open_lock",
           "prepare", "probe_bwrap", "protected", "question_cpus", "resident_bytes", "user_processes"]
