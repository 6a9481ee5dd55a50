"""The only place student code runs: import the submission's predict.py and stream raw predictions back.

Started by grader.runner as a separate process (`python -I -u child.py OPTIONS`) with a copy of the
submission folder as working directory. It gets images, never labels, and writes messages to a private pipe: one JSON line
each, followed by an .npy array for a batch. The grader reads them without pickle and validates
everything itself. This file imports nothing from the grader package, so no student file can shadow it.
"""
from __future__ import annotations

import io
import json
import os
import sys
import time
import traceback

TRACEBACK_LIMIT = 6000
MESSAGE_LIMIT = 1500


def student_traceback(exc: BaseException, root: str) -> str:
    """The exception with only the frames inside the submission (the grader's frames help nobody)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if os.path.abspath(f.filename).startswith(root)]
    text = "".join(traceback.format_list(frames)) + "".join(traceback.format_exception_only(type(exc), exc))
    if frames:
        text = "Traceback (most recent call last, submission files only):\n" + text
    return text if len(text) <= TRACEBACK_LIMIT else "...\n" + text[-TRACEBACK_LIMIT:]


# --- Confinement the child applies to itself before any student code runs. ---------------------------
# A seccomp filter (allowed without privileges once no_new_privs is set, also inside Docker) that refuses
#  * sockets other than AF_UNIX (no network, loopback included), and AF_UNIX too unless the child has a
#    network namespace of its own (abstract AF_UNIX names are per network namespace); io_uring (which can
#    open sockets);
#  * new namespaces (unshare, setns, clone with CLONE_NEW*; clone3, whose flags a filter cannot read, says
#    ENOSYS so that the C library falls back to clone);
#  * objects that outlive a process or escape the memory count: SysV shared memory, message queues and
#    semaphores, POSIX message queues, kernel keys; and perf_event_open, bpf and userfaultfd;
#  * ptrace and cross-process memory access, queued signals, and signals aimed at the grader (its pid,
#    threads and process group, or every process at once), so that student code cannot stop, trace or read it;
#  * a signal owner for a file (F_SETOWN, F_SETSIG, F_SETOWN_EX, FIOSETOWN, SIOCSPGRP), through which the
#    kernel would signal the grader on the child's behalf (in the process layer it shares the grader's uid).
MAX_FILES = 1024  # open files per process (the usual soft limit), now hard: it bounds pipes and sockets held
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
SYSCALLS = {  # name: (x86_64, aarch64)
    "socket": (41, 198), "kill": (62, 129), "tkill": (200, 130), "tgkill": (234, 131), "ptrace": (101, 117),
    "process_vm_readv": (310, 270), "process_vm_writev": (311, 271), "pidfd_open": (434, 434),
    "pidfd_send_signal": (424, 424), "io_uring_setup": (425, 425), "rt_sigqueueinfo": (129, 138),
    "rt_tgsigqueueinfo": (297, 240), "seccomp": (317, 277), "unshare": (272, 97), "setns": (308, 268),
    "clone": (56, 220), "clone3": (435, 435), "shmget": (29, 194), "msgget": (68, 186), "semget": (64, 190),
    "mq_open": (240, 180), "add_key": (248, 217), "request_key": (249, 218), "keyctl": (250, 219),
    "perf_event_open": (298, 241), "bpf": (321, 280), "userfaultfd": (323, 282), "fcntl": (72, 25), "ioctl": (16, 29),
}
# Commands that make the kernel signal another process on this one's behalf when I/O is ready (SIGIO, or
# any signal F_SETSIG names, SIGKILL included): refused, so no file of the child's can aim at the grader.
SIGNAL_OWNER = {"fcntl": (8, 10, 15), "ioctl": (0x8901, 0x8902)}  # F_SETOWN, F_SETSIG, F_SETOWN_EX; FIOSETOWN, SIOCSPGRP
REFUSED = ("tkill", "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_send_signal", "io_uring_setup",
           "rt_sigqueueinfo", "rt_tgsigqueueinfo", "unshare", "setns", "shmget", "msgget", "semget", "mq_open",
           "add_key", "request_key", "keyctl", "perf_event_open", "bpf", "userfaultfd")
CLONE_NEW = 0x7E020000  # CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
AF_UNIX = 1
RET_ALLOW, RET_KILL_PROCESS = 0x7FFF0000, 0x80000000
RET_EACCES, RET_EPERM, RET_ENOSYS = 0x00050000 | 13, 0x00050000 | 1, 0x00050000 | 38
LD_W_ABS, JEQ_K, JGE_K, JSET_K, RET_K = 0x20, 0x15, 0x35, 0x45, 0x06
NR, ARCH, ARG0, ARG1 = 0, 4, 16, 24


def seccomp_program(machine: str, grader_pid: int | None, grader_group: int = 0,
                    grader_threads: tuple[int, ...] = (), unix_sockets: bool = False) -> list[tuple[int, int, int, int]]:
    """BPF instructions (code, jump-if-true, jump-if-false, k) of the filter for one architecture.
    `grader_pid` None: the grader lives outside the child's PID namespace, out of reach of any signal."""
    arch = AUDIT_ARCH[machine]
    nr = {name: numbers[0 if machine == "x86_64" else 1] for name, numbers in SYSCALLS.items()}
    prog = [(LD_W_ABS, 0, 0, ARCH), (JEQ_K, 1, 0, arch), (RET_K, 0, 0, RET_KILL_PROCESS), (LD_W_ABS, 0, 0, NR)]
    if machine == "x86_64":  # the x32 ABI numbers syscalls from 0x40000000: refuse them all
        prog += [(JGE_K, 0, 1, 0x40000000), (RET_K, 0, 0, RET_KILL_PROCESS)]
    for name in REFUSED:
        prog += [(JEQ_K, 0, 1, nr[name]), (RET_K, 0, 0, RET_EPERM)]
    prog += [(JEQ_K, 0, 1, nr["clone3"]), (RET_K, 0, 0, RET_ENOSYS)]
    # clone(flags, ...): no new namespaces
    prog += [(JEQ_K, 0, 4, nr["clone"]), (LD_W_ABS, 0, 0, ARG0), (JSET_K, 0, 1, CLONE_NEW), (RET_K, 0, 0, RET_EPERM),
             (RET_K, 0, 0, RET_ALLOW)]
    # socket(domain, ...): AF_UNIX at most
    if unix_sockets:
        prog += [(JEQ_K, 0, 4, nr["socket"]), (LD_W_ABS, 0, 0, ARG0), (JEQ_K, 1, 0, AF_UNIX), (RET_K, 0, 0, RET_EACCES),
                 (RET_K, 0, 0, RET_ALLOW)]
    else:
        prog += [(JEQ_K, 0, 1, nr["socket"]), (RET_K, 0, 0, RET_EACCES)]
    # fcntl(fd, cmd, ...), ioctl(fd, request, ...): no signal owner for a file
    for name, commands in SIGNAL_OWNER.items():
        prog += [(JEQ_K, 0, len(commands) + 3, nr[name]), (LD_W_ABS, 0, 0, ARG1)]
        prog += [(JEQ_K, len(commands) - i, 0, command) for i, command in enumerate(commands)]
        prog += [(RET_K, 0, 0, RET_ALLOW), (RET_K, 0, 0, RET_EPERM)]
    # kill(pid, sig), tgkill(tgid, tid, sig), pidfd_open(pid, flags): not at the grader
    if grader_pid is not None:
        grader_targets = sorted({grader_pid, *grader_threads, (-grader_pid) & 0xFFFFFFFF,
                                 (-grader_group) & 0xFFFFFFFF, 0xFFFFFFFF})
        for name, targets in (("kill", grader_targets), ("tgkill", [grader_pid]), ("pidfd_open", [grader_pid])):
            prog += [(JEQ_K, 0, len(targets) + 3, nr[name]), (LD_W_ABS, 0, 0, ARG0)]
            for i, target in enumerate(targets):
                prog += [(JEQ_K, len(targets) - i, 0, target)]
            prog += [(RET_K, 0, 0, RET_ALLOW), (RET_K, 0, 0, RET_EPERM)]
    prog += [(RET_K, 0, 0, RET_ALLOW)]
    return prog


def install_seccomp(grader_pid: int | None, unix_sockets: bool) -> str:
    """Install the filter; returns "" on success, else why not (the grader reports it to staff)."""
    import ctypes
    import platform

    machine = platform.machine()
    if machine not in AUDIT_ARCH:
        return f"no seccomp filter for {machine}: network and signals are not restricted"
    threads: tuple[int, ...] = ()
    group = 0
    if grader_pid is not None:
        try:  # the grader's threads as they are now (a kill() at a thread id reaches the whole process)
            threads = tuple(int(t) for t in os.listdir(f"/proc/{grader_pid}/task"))
        except OSError:
            pass
        group = os.getpgid(grader_pid)
    prog = seccomp_program(machine, grader_pid, group, threads, unix_sockets)

    class SockFilter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]

    filters = (SockFilter * len(prog))(*[SockFilter(*ins) for ins in prog])
    fprog = SockFprog(len(prog), filters)
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_NO_NEW_PRIVS, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC = 38, 1, 1
    seccomp = SYSCALLS["seccomp"][0 if machine == "x86_64" else 1]
    # TSYNC: the filter covers every thread of the process, not only the calling one.
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 or libc.syscall(
            seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, ctypes.byref(fprog)) != 0:
        return f"seccomp filter refused (errno {ctypes.get_errno()}): network and signals are not restricted"
    return ""


class Channel:
    def __init__(self, fd: int):
        self.stream = os.fdopen(fd, "wb")

    def send(self, header: dict, array=None) -> None:
        import numpy as np

        self.stream.write(json.dumps(header).encode() + b"\n")
        if array is not None:
            payload = io.BytesIO()  # write_array needs a seekable file for a real file object; a pipe is not
            np.lib.format.write_array(payload, array, allow_pickle=False)
            self.stream.write(payload.getbuffer())
        self.stream.flush()

    def fail(self, kind: str, message: str, exc: BaseException | None = None, root: str = "") -> None:
        if len(message) > MESSAGE_LIMIT:  # e.g. an exception that prints a whole tensor
            message = message[:MESSAGE_LIMIT] + " [...]"
        self.send({"type": "error", "kind": kind, "message": message,
                   "traceback": student_traceback(exc, root) if exc is not None else ""})


def to_array(out, function: str):
    """The student's return value as a C-contiguous float32 array, or a TypeError saying what it was."""
    import numpy as np
    import torch

    if isinstance(out, torch.Tensor):
        if not (out.is_floating_point() or out.dtype in (torch.int64, torch.int32, torch.uint8)):
            raise TypeError(f"{function} returned a tensor of dtype {out.dtype}; expected floating-point scores")
        return np.ascontiguousarray(out.detach().to("cpu", torch.float32).numpy())
    if isinstance(out, np.ndarray) and out.dtype.kind in "fiu":
        return np.ascontiguousarray(out, dtype=np.float32)
    raise TypeError(f"{function} returned {type(out).__name__}; expected a torch.Tensor of scores")


def main(options: dict) -> int:
    """options: question, images, batch_size, device, fd, file_size_limit (bytes), max_processes (or None),
    grader_pid (None inside a PID namespace of its own), unix_sockets (a network namespace of its own),
    threads (torch's intra-op and inter-op pools)."""
    import resource

    channel = Channel(options["fd"])
    question = options["question"]
    # Limits and the filter come first, before any import that a file in the submission could shadow.
    # First in line for the kernel's OOM killer, in every layer (raising one's own score needs no privilege).
    with open("/proc/self/oom_score_adj", "w") as f:
        f.write("1000")
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    limit = options["file_size_limit"]
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    if options["max_processes"]:  # processes and threads of the user (in a user namespace: of the namespace)
        resource.setrlimit(resource.RLIMIT_NPROC, (options["max_processes"], options["max_processes"]))
    # Hard limits: lowered here, before any student code, they can never be raised again (that needs root).
    resource.setrlimit(resource.RLIMIT_NOFILE, (MAX_FILES, MAX_FILES))
    confinement = install_seccomp(options["grader_pid"], options["unix_sockets"])
    import numpy as np
    import torch

    # Sized by the grader to the CPU time the child may have (grader/threads.py), before any parallel work.
    torch.set_num_threads(options["threads"])
    try:
        torch.set_num_interop_threads(options["threads"])
    except RuntimeError:  # already started (it cannot be, this early; a torch that does is left as it is)
        pass
    device_name = options["device"]
    if device_name == "auto":
        device_name = "cuda" if torch.cuda.is_available() else "cpu"
    elif device_name == "cuda" and not torch.cuda.is_available():
        channel.fail("device", "CUDA was asked for (--device cuda), but torch sees no CUDA device here; "
                               "grade with --device cpu or --device auto")
        return 0
    device = torch.device(device_name)
    images = np.load(options["images"], mmap_mode="r", allow_pickle=False)
    # Everything above is the grader's; from here on, failures are the submission's.
    channel.send({"type": "ready", "device": device_name, "confinement": confinement})
    function = f"predict_{question}"
    started = time.monotonic()
    root = os.path.abspath(os.getcwd())
    sys.path.insert(0, root)
    try:
        import predict
    except BaseException as exc:  # SystemExit and KeyboardInterrupt from an import are the student's too
        channel.fail("import", f"importing predict.py failed: {type(exc).__name__}: {exc}", exc, root)
        return 0
    fn = getattr(predict, function, None)
    if not callable(fn):
        channel.fail("missing", f"predict.py has no function {function}(images)")
        return 0
    batch_size = options["batch_size"]
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.array(images[start : start + batch_size])).to(device)
        x = batch.unsqueeze(1) if question == "q1" else batch.permute(0, 3, 1, 2)
        x = x.float().div_(255).contiguous()
        try:
            with torch.inference_mode():
                out = to_array(fn(x), function)
        except torch.cuda.OutOfMemoryError as exc:
            channel.fail("cuda_oom", f"{function} ran out of GPU memory on a batch of {len(x)} images: {exc}", exc, root)
            return 0
        except SystemExit as exc:
            channel.fail("exit", f"{function} called sys.exit({exc.code!r}) instead of returning scores", exc, root)
            return 0
        except BaseException as exc:
            channel.fail("exception", f"{function} raised {type(exc).__name__}: {exc}", exc, root)
            return 0
        channel.send({"type": "batch", "start": start, "count": len(x)}, out)
    channel.send({"type": "done", "seconds": time.monotonic() - started})
    return 0


def leave(code: int) -> None:
    """Exit without the interpreter's teardown, which with torch loaded takes a second or more (freeing what
    the kernel frees anyway) while the grader waits. Python's streams are flushed first; the C library's stdio
    is unbuffered already (-u). Student atexit handlers do not run."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a stream the student replaced or closed
            pass
    os._exit(code)


if __name__ == "__main__":
    leave(main(json.loads(sys.argv[1])))
