"""Attacks that isolation must absorb, one hostile submission per attack class, in each strong layer.

"namespace" is the strongest layer (bubblewrap; with root also the separate user and, where the cgroup
file system is writable, a memory cgroup). "user" is what default Docker and Gradescope allow: root drops
to an unprivileged user, with no namespaces and no cgroup (forced here with --isolation user
--memory-accounting processes). Hostile submissions run only in these two layers: in process mode they
could reach every file of the grader's user. Each test skips, saying why, where its layer cannot be had
(CI has both: root, the system Python, bubblewrap).
"""
from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import textwrap
import threading
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from conftest import (INSTALL_CLOSED, LAYERS, REPO, by_question, config_with, grade, make_reference, need, write_submission)
from grader.sandbox import jail as jail_module
from grader.sandbox import layers as layers_module
from grader.sandbox import DEFAULT_USER, prepare, user_processes
from grader.sandbox.cgroup import cgroup_parent

VALID_SCORES = """
def scores(images):
    return images.flatten(1)[:, :10]
"""
HONEST_Q2 = """
def predict_q2(images):
    import torch
    n, _, h, w = images.shape
    return torch.zeros(n, 6, h, w)
"""


def student_uid() -> int:
    return pwd.getpwnam(DEFAULT_USER).pw_uid


def _sandboxed() -> set[tuple[int, str]]:
    """(pid, start time) of the tester's processes in a PID namespace other than the tester's."""
    mine, found = os.stat("/proc/self/ns/pid").st_ino, set()
    for pid in user_processes(os.getuid()):
        try:
            if os.stat(f"/proc/{pid}/ns/pid").st_ino != mine:
                found.add((pid, Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]))
        except (OSError, IndexError):
            continue
    return found


_SANDBOXED_BEFORE = _sandboxed() if os.geteuid() != 0 else set()  # a browser's, a Flatpak app's: not the tests'


def student_processes() -> list[int]:
    """Live processes of the student: as root, its user's; without root, where every process of the sandbox
    is the tester's own, those of the tester's in a PID namespace other than the tester's (a sandbox's),
    less those that were there before the tests began."""
    if os.geteuid() == 0:
        return user_processes(student_uid())
    return sorted(pid for pid, _ in _sandboxed() - _SANDBOXED_BEFORE)


def grade_q1(tmp_path: Path, code: str, layer: str, *extra: str, n: int = 20, questions: str = "q1") -> tuple[int, dict]:
    submission = write_submission(tmp_path / "submission", code + VALID_SCORES)
    data = make_reference(tmp_path / "data", n_q1=n, n_q2=1 if "q2" in questions else 0)
    return grade(submission, data, tmp_path / "results" / "results.json", "--config",
                 str(config_with(tmp_path, questions)), *LAYERS.get(layer, ("--isolation", layer)), *extra)


def error(report: dict, question: str = "q1") -> str:
    return report["extra_data"]["metrics"][question].get("error", "")


def serve(server: socket.socket) -> list:
    """Accept connections on `server` in the background; the list fills with any that arrive."""
    accepted: list = []
    server.settimeout(30)

    def run() -> None:
        try:
            accepted.append(server.accept())
        except OSError:
            pass

    threading.Thread(target=run, daemon=True).start()
    return accepted


@pytest.fixture
def open_dir():
    """A folder everyone may read (pytest's own are root's alone), so that closing it is what protects it."""
    folder = Path(tempfile.mkdtemp(prefix="grader-test-", dir="/var/tmp"))
    os.chmod(folder, 0o755)
    yield folder
    subprocess.run(["rm", "-rf", str(folder)], check=False)


def _sleeping_300(pid: int) -> bool:
    """A `sleep 300` not of root's (whose uid cannot be the student's or come from it)."""
    try:
        return b"sleep\x00300" in Path(f"/proc/{pid}/cmdline").read_bytes()[:20] and Path(f"/proc/{pid}").stat().st_uid != 0
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# --- Network, signals, namespaces ------------------------------------------------------------------


def test_no_network_not_even_loopback(tmp_path: Path, layer: str) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(15)
    port = server.getsockname()[1]
    accepted = serve(server)
    code = f"""
import socket
def predict_q1(images):
    socket.create_connection(("127.0.0.1", {port}), timeout=5).sendall(b"labels please")
    return scores(images)
"""
    _, report = grade_q1(tmp_path, code, layer)
    server.close()
    time.sleep(0.2)
    assert accepted == []
    assert error(report).startswith("predict_q1 raised PermissionError")


def test_abstract_unix_sockets_and_new_namespaces_are_out_of_reach(tmp_path: Path, layer: str) -> None:
    name = f"\0mp-grader-test-{os.getpid()}-{layer}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(name)
    server.listen(1)
    accepted = serve(server)
    code = f"""
import ctypes, os, socket
libc = ctypes.CDLL(None, use_errno=True)
for flags in (0x10000000, 0x40000000, 0x10000000 | 0x40000000):  # CLONE_NEWUSER, CLONE_NEWNET
    print("unshare", hex(flags), "refused" if libc.unshare(flags) != 0 else "ALLOWED")
fd = os.open("/proc/self/ns/net", os.O_RDONLY)
print("setns", "refused" if libc.setns(fd, 0) != 0 else "ALLOWED")
try:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect({name!r})
    print("CONNECTED")
except OSError as exc:
    print("abstract socket refused:", type(exc).__name__)
def predict_q1(images):
    return scores(images)
"""
    rc, report = grade_q1(tmp_path, code, layer)
    server.close()
    time.sleep(0.2)
    output = by_question(report)["Q1"]["output"]
    assert accepted == [] and "CONNECTED" not in output and "abstract socket refused" in output
    assert "ALLOWED" not in output and output.count("refused") == 5
    assert rc == 0 and report["extra_data"]["metrics"]["q1"]["n"] == 20


def test_cannot_signal_the_grader(tmp_path: Path, layer: str) -> None:
    received: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: received.append(signum))
    grader, group = os.getpid(), os.getpgid(0)
    code = f"""
import ctypes, os, signal
results = []
for target in ({grader}, -{group}, -1):
    try:
        os.kill(target, signal.SIGUSR1)
        results.append("sent")
    except OSError:
        results.append("refused")
results.append("sent" if ctypes.CDLL(None).sigqueue({grader}, int(signal.SIGUSR1), 0) == 0 else "refused")
print("signals", results)
def predict_q1(images):
    return scores(images)
"""
    try:
        rc, report = grade_q1(tmp_path, code, layer)
        time.sleep(0.5)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert received == []
    assert rc == 0 and report["extra_data"]["metrics"]["q1"]["n"] == 20
    if layer == "user":  # the filter refuses each; in the namespaces these pids do not even exist
        assert "signals ['refused', 'refused', 'refused', 'refused']" in by_question(report)["Q1"]["output"]


def test_no_file_can_make_the_kernel_signal_the_grader(tmp_path: Path, layer: str) -> None:
    """F_SETOWN + O_ASYNC on a pipe made the kernel send SIGIO (or, with F_SETSIG, any signal) to the grader,
    which died in the process layer: the filter refuses every way to name a signal owner, in every layer."""
    grader = os.getpid()
    code = f"""
import ctypes, fcntl, os, struct
r, w = os.pipe()
results = []
for name, call in [("F_SETOWN", lambda: fcntl.fcntl(r, fcntl.F_SETOWN, {grader})),
                   ("F_SETSIG", lambda: fcntl.fcntl(r, 10, 9)),
                   ("F_SETOWN_EX", lambda: fcntl.fcntl(r, 15, struct.pack("ii", 1, {grader}))),
                   ("FIOSETOWN", lambda: fcntl.ioctl(r, 0x8901, struct.pack("i", {grader})))]:
    try:
        call()
        results.append(name + " allowed")
    except OSError as exc:
        results.append(name + " refused " + str(exc.errno))
fcntl.fcntl(r, fcntl.F_SETFL, os.O_ASYNC)  # without an owner, no one is signalled
os.write(w, b"x")
print("owners", results)
def predict_q1(images):
    return scores(images)
"""
    rc, report = grade_q1(tmp_path, code, layer)
    assert rc == 0 and report["extra_data"]["metrics"]["q1"]["n"] == 20
    assert "owners ['F_SETOWN refused 1', 'F_SETSIG refused 1', 'F_SETOWN_EX refused 1', 'FIOSETOWN refused 1']" \
        in by_question(report)["Q1"]["output"]


# --- Processes: nothing outlives its question --------------------------------------------------------


def test_left_behind_processes_are_killed(tmp_path: Path, layer: str) -> None:
    code = """
import subprocess, sys
daemon = subprocess.Popen(["sleep", "300"], start_new_session=True)  # escapes the process group
child = subprocess.Popen(["sleep", "301"])
print("PIDS", daemon.pid, child.pid)
def predict_q1(images):
    return scores(images)
"""
    rc, report = grade_q1(tmp_path, code, layer)
    output = by_question(report)["Q1"]["output"]
    assert rc == 0 and report["extra_data"]["metrics"]["q1"]["n"] == 20
    if layer == "user":  # in the namespaces they die with the main process, often before they can be counted
        assert "2 process(es) your code left running were stopped" in output
    assert not student_processes()
    # No `sleep 300` of any other user either (root's are left out: an operator's shell may run one).
    assert not [p for p in map(int, filter(str.isdigit, os.listdir("/proc"))) if _alive(p) and _sleeping_300(p)]


SURVIVOR = """
import glob, os, signal, time
EVIDENCE, TARGETS = {evidence!r}, {targets!r}

def attack():
    # Stop or kill every process it can see (the grader's helpers included), read the labels and the config
    # the moment they open, plant a predict.py in any later question's scratch folder.
    me = os.getpid()
    for pid in [p for p in os.listdir("/proc") if p.isdigit() and int(p) != me]:
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            try:
                os.kill(int(pid), sig)
            except OSError:
                pass
    try:
        os.kill(-1, signal.SIGKILL)
    except OSError:
        pass
    for path in TARGETS:
        try:
            data = open(path, "rb").read(64)
            with open(os.path.join(EVIDENCE, "READ-" + os.path.basename(path)), "wb") as f:
                f.write(data)
        except OSError:
            pass
    for folder in glob.glob("/tmp/grader-*/submission"):
        try:
            with open(os.path.join(folder, "predict.py"), "w") as f:
                f.write("def predict_q2(images):\\n    raise SystemExit('sabotaged')\\n")
        except OSError:
            pass

def predict_q1(images):  # Q1 only: the daemon is to outlive Q1 and spoil Q2
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            end = time.time() + 90
            while time.time() < end:
                attack()
                time.sleep(0.05)
        os._exit(0)
    time.sleep(1)
    return scores(images)
"""


def survivor(tmp_path: Path) -> tuple[str, Path]:
    """A submission whose import starts a daemon (see SURVIVOR), and where it would leave evidence: a
    folder the student user owns inside a root-owned one, which no sweep touches."""
    root = Path(tempfile.mkdtemp(prefix="evidence-", dir="/var/tmp"))
    os.chmod(root, 0o755)
    evidence = root / "drop"
    evidence.mkdir()
    if os.geteuid() == 0:  # without root the student's processes are the tester's own
        os.chown(evidence, student_uid(), -1)
    targets = [tmp_path / "data" / "q1" / "labels.npy", tmp_path / "data" / "q2" / "labels", tmp_path / "config.toml",
               REPO / ".git" / "HEAD", REPO / "reference_data" / "q1" / "labels.npy", REPO / "grader" / "config.toml"]
    code = SURVIVOR.format(evidence=str(evidence), targets=[str(t) for t in targets])
    return code, evidence


def test_a_daemon_that_fights_the_cleanup_dies_with_its_question(open_dir: Path, layer: str) -> None:
    """The daemon stops and kills what it can and waits for the labels; Q2 (honest) scores exactly as
    the same code without the daemon, no file was read, modes are restored, nothing is left."""
    honest_dir, hostile_dir = open_dir / "honest", open_dir / "hostile"
    code, evidence = survivor(hostile_dir)
    modes = {p: stat.S_IMODE(p.stat().st_mode) for p in (REPO / "grader", REPO / "reference_data", REPO / ".git")
             if p.exists()}
    _, honest = grade_q1(honest_dir, "def predict_q1(images):\n    return scores(images)\n" + HONEST_Q2, layer,
                         "--timeout", "15", questions="q1 q2")
    started = time.monotonic()
    rc, report = grade_q1(hostile_dir, code + HONEST_Q2, layer, "--timeout", "15", questions="q1 q2")
    elapsed = time.monotonic() - started
    assert rc == 0, report["output"]
    assert by_question(report)["Q2"]["score"] == by_question(honest)["Q2"]["score"]
    assert report["extra_data"]["metrics"]["q2"] == honest["extra_data"]["metrics"]["q2"]
    assert list(evidence.iterdir()) == []
    assert not student_processes()
    assert {p: stat.S_IMODE(p.stat().st_mode) for p in modes} == modes
    assert elapsed < 2 * 15 + 20


def test_fork_bomb_is_contained(tmp_path: Path, layer: str) -> None:
    code = """
import os, time
def predict_q1(images):
    for _ in range(100_000):
        try:
            os.fork()
        except OSError:
            time.sleep(0.01)
    return scores(images)
"""
    started = time.monotonic()
    rc, report = grade_q1(tmp_path, code, layer, "--timeout", "8")
    assert time.monotonic() - started < 8 + 15
    assert error(report).startswith(("Time limit exceeded", "Memory limit exceeded"))  # whichever it reaches first
    assert by_question(report)["Q1"]["score"] == 0
    assert not student_processes()


def test_a_daemon_holding_the_channel_open_cannot_stall_grading(tmp_path: Path, layer: str) -> None:
    code = """
import os
pid = os.fork()
if pid == 0:  # inherits every pipe, leaves the session, drops the environment marker
    os.setsid()
    os.execve("/bin/sleep", ["sleep", "300"], {})
def predict_q1(images):
    return scores(images)
"""
    started = time.monotonic()
    rc, report = grade_q1(tmp_path, code, layer, "--timeout", "30")
    assert time.monotonic() - started < 30
    assert rc == 0 and report["extra_data"]["metrics"]["q1"]["n"] == 20
    assert not student_processes()


def test_memory_is_counted_as_a_cgroup_counts_it(tmp_path: Path) -> None:
    """Pages of files mapped from disk (the libraries) are left out; anonymous and shared memory count."""
    from grader.sandbox import resident_bytes

    (tmp_path / "file").write_bytes(os.urandom(64 * 2**20))
    code = """
import mmap, sys
f = open(sys.argv[1], "rb")
mapped = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
sum(mapped[i] for i in range(0, len(mapped), 4096))  # every page of the file resident
shared = mmap.mmap(-1, 32 * 2**20)  # shared anonymous memory (shmem)
shared.write(b"x" * len(shared))
private = bytearray(48 * 2**20)
print("ready", flush=True)
sys.stdin.read()
"""
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "file")], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        status = dict(line.split(":", 1) for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines())
        assert int(status["RssFile"].split()[0]) * 1024 > 64 * 2**20  # the mapped file is resident...
        counted = resident_bytes(proc.pid)
        assert 80 * 2**20 <= counted < 80 * 2**20 + 40 * 2**20  # ...but only the 32 + 48 MiB count
    finally:
        proc.kill()
        proc.wait()


def test_student_processes_are_the_oom_killers_first_choice(tmp_path: Path, layer: str) -> None:
    """In a container short of memory the kernel must kill the student's process, not the grader."""
    code = """
import subprocess
print("adj", open("/proc/self/oom_score_adj").read().strip(),
      subprocess.run(["cat", "/proc/self/oom_score_adj"], capture_output=True, text=True).stdout.strip())
def predict_q1(images):
    return scores(images)
"""
    rc, report = grade_q1(tmp_path, code, layer)
    assert rc == 0 and "adj 1000 1000" in report["tests"][0]["output"]
    assert Path("/proc/self/oom_score_adj").read_text().strip() != "1000"  # the grader's own is untouched


def test_a_survivor_stops_the_run_fail_closed(tmp_path: Path, monkeypatch) -> None:
    """If a process could not be killed (simulated: the kill does nothing), Q2 does not start, the closed
    folders stay closed, results.json says why, and the exit status is 2."""
    need("user")
    code = "import subprocess\nsubprocess.Popen(['sleep', '120'], start_new_session=True)\n"
    submission = write_submission(tmp_path / "submission", code + "def predict_q1(images):\n    return scores(images)\n"
                                  + VALID_SCORES + HONEST_Q2)
    data = make_reference(tmp_path / "data", n_q1=20, n_q2=1)
    config = config_with(tmp_path)
    closed = [data, config, REPO / "grader", REPO / "reference_data", REPO / ".git"]
    modes = {p: stat.S_IMODE(p.stat().st_mode) for p in closed if p.exists()}
    monkeypatch.setattr(jail_module.Jail, "_kill_round", lambda self: None)
    monkeypatch.setattr(jail_module, "KILL_SECONDS", 1.0)
    left = _jail_leftovers()
    try:
        rc, report = grade(submission, data, tmp_path / "results.json", "--config", str(config), *LAYERS["user"])
        assert rc == 2
        assert "survived every attempt to kill them" in error(report, "q1")
        assert "not graded, because" in error(report, "q2")
        assert "Grading stopped" in report["output"]
        assert {p: stat.S_IMODE(p.stat().st_mode) for p in modes} == {p: m & 0o700 for p, m in modes.items()}
    finally:
        monkeypatch.undo()
        prepare("user", "processes").close()  # kills the survivor
        for path, mode in modes.items():
            path.chmod(mode)
        for path in _jail_leftovers() - left:  # what the breach left for staff to look at: the scratch, the cgroups
            if path.name.startswith("grader-"):
                subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)  # a tmpfs, if mounted
                shutil.rmtree(path)
            else:
                path.rmdir()
    assert not student_processes()


def _jail_leftovers() -> set[Path]:
    """Scratch folders and question cgroups that exist now."""
    found = set(Path(tempfile.gettempdir()).glob("grader-q*-*"))
    for controller in ("cpu", "memory"):
        where = cgroup_parent(controller)
        if not isinstance(where, str):
            found |= set(where[0].glob("mp-grader-*"))
    return found


def test_ten_hostile_then_honest_runs_leave_the_honest_score_unchanged(tmp_path: Path) -> None:
    need("user")
    sabotage = """
import glob, os, subprocess
subprocess.Popen(["sleep", "600"], start_new_session=True)
for path in ["/tmp/planted.py", "/var/tmp/planted.py", "/dev/shm/planted.py", "/run/lock/planted.py"]:
    try:
        open(path, "w").write("raise SystemExit('sabotaged')")
    except OSError:
        pass
def predict_q1(images):
    return -scores(images)
"""
    honest = "def predict_q1(images):\n    return scores(images)\n"
    seen = []
    for i in range(10):
        grade_q1(tmp_path / f"hostile{i}", sabotage, "user", n=50)
        _, report = grade_q1(tmp_path / f"honest{i}", honest, "user", n=50)
        seen.append((by_question(report)["Q1"]["score"], report["extra_data"]["metrics"]["q1"]["accuracy"]))
    assert len(set(seen)) == 1, seen
    assert not student_processes()


# --- Files: nothing of the grader readable, nothing left behind ---------------------------------------


def test_labels_config_git_and_grader_are_out_of_reach(open_dir: Path, layer: str) -> None:
    tmp_path = open_dir
    metadata = tmp_path / "submission_metadata.json"  # Gradescope's: earlier results, hidden tests included
    metadata.write_text('{"created_at": "2026-12-03T12:00:00+00:00", "previous_submissions": []}')
    metadata.chmod(0o644)
    targets = [tmp_path / "data" / "q1" / "labels.npy", tmp_path / "config.toml", REPO / "grader" / "scoring.py",
               REPO / ".git" / "HEAD", REPO / "reference_data" / "q1" / "labels.npy", metadata]
    installed = {p: stat.S_IMODE(p.stat().st_mode) for p in INSTALL_CLOSED if p.exists()}
    code = f"""
import pwd, os
print("running as", pwd.getpwuid(os.getuid()).pw_name)
for path in {[str(t) for t in targets]!r}:
    try:
        open(path, "rb").read(10)
        print("READ", path)
    except OSError as exc:
        print("refused", type(exc).__name__, path)
try:
    open({str(REPO / "grader" / "scoring.py")!r}, "a").write("# planted")
    print("WROTE grader")
except OSError:
    print("refused write")
def predict_q1(images):
    return scores(images)
"""
    rc, report = grade_q1(tmp_path, code, layer, "--submission-metadata", str(metadata))
    output = by_question(report)["Q1"]["output"]
    assert f"running as {DEFAULT_USER if os.geteuid() == 0 else pwd.getpwuid(os.getuid()).pw_name}" in output
    assert "READ" not in output and "WROTE" not in output
    assert output.count("refused") == len(targets) + 1
    assert rc == 0 and report["extra_data"]["metrics"]["q1"]["n"] == 20
    assert "# planted" not in (REPO / "grader" / "scoring.py").read_text()
    assert {p: stat.S_IMODE(p.stat().st_mode) for p in installed} == installed  # closed at set-up, never changed
    assert metadata.stat().st_mode & 0o777 == 0o644  # closed for the run, then restored


def test_grading_changes_no_mode_in_the_grader_folder(open_dir: Path, layer: str, monkeypatch) -> None:
    """The checkout (or the image's /autograder/source) is closed at install time: no grading run chmods
    anything in it (a build made meanwhile would bake the modes in, and the folder may be read-only). The
    namespace layer closes nothing at all."""
    calls: list[Path] = []
    real = os.chmod

    def chmod(path, mode, **kwargs) -> None:
        calls.append(Path(path).resolve())
        real(path, mode, **kwargs)

    def checkout() -> tuple[str, dict[str, int]]:
        """`git status` and the mode of every file and folder of the checkout (its environment aside)."""
        status = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain"], capture_output=True, text=True).stdout
        return status, {str(p): p.lstat().st_mode for p in REPO.rglob("*")
                        if ".venv" not in p.parts and "__pycache__" not in p.parts and ".pytest_cache" not in p.parts}

    before = checkout()
    monkeypatch.setattr(os, "chmod", chmod)
    rc, _ = grade_q1(open_dir, "def predict_q1(images):\n    return scores(images)\n", layer)
    assert rc == 0
    assert not [c for c in calls if c == REPO or REPO in c.parents], calls  # during: not one chmod
    assert checkout() == before  # after
    inputs = {open_dir / "data", open_dir / "config.toml"}  # handed in from outside: closed for a user-layer run
    assert inputs & set(calls) == (set() if layer == "namespace" else inputs), calls


def test_an_open_grader_folder_is_refused_in_the_user_layer_and_left_as_it_is(open_dir: Path) -> None:
    need("user")
    path = REPO / "reference_data"
    mode = stat.S_IMODE(path.stat().st_mode)
    path.chmod(0o755)
    try:
        rc, report = grade_q1(open_dir, "def predict_q1(images):\n    return scores(images)\n", "user")
        assert stat.S_IMODE(path.stat().st_mode) == 0o755
    finally:
        path.chmod(mode)
    assert rc != 0 and report["tests"][0]["score"] == 0
    assert f"{path} is open to other users" in report["output"] and "make protect" in report["output"]
    assert "running as" not in json.dumps(report)  # refused before any student code


def test_labels_inside_a_mounted_system_folder_are_hidden_by_the_namespace(open_dir: Path) -> None:
    """The namespace layer mounts /usr and the like read-only; reference data kept there (a checkout in
    /usr/local/src, say) is covered, not closed: its modes stay open and the student reads nothing."""
    need("namespace")
    if not os.access("/usr/local/share", os.W_OK):
        pytest.skip("needs a folder of its own in /usr/local/share, which only root may make")
    home = Path(tempfile.mkdtemp(prefix="mp-grader-test-", dir="/usr/local/share"))
    try:
        home.chmod(0o755)
        data = make_reference(home / "data", n_q1=20)
        subprocess.run(["chmod", "-R", "go+rX", str(home)], check=True)
        code = f"""
for path in {[str(data / "q1" / "labels.npy"), str(data / "q1" / "images.npy")]!r}:
    try:
        print("READ", len(open(path, "rb").read()), path)
    except OSError as exc:
        print("refused", type(exc).__name__, path)
def predict_q1(images):
    return scores(images)
"""
        submission = write_submission(open_dir / "submission", code + VALID_SCORES)
        rc, report = grade(submission, data, open_dir / "results.json", "--config", str(config_with(open_dir, "q1")),
                           *LAYERS["namespace"])
        output = by_question(report)["Q1"]["output"]
        assert rc == 0 and output.count("refused") == 2 and "READ" not in output, output
        assert stat.S_IMODE((data / "q1" / "labels.npy").stat().st_mode) == 0o644
    finally:
        shutil.rmtree(home)


def test_files_left_in_world_writable_folders_are_removed(tmp_path: Path, layer: str) -> None:
    planted = [Path(p) / f"planted-{os.getpid()}" for p in ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")]
    code = f"""
import os
for path in {[str(p) for p in planted]!r}:
    try:
        open(path, "w").write("still here?")
        print("planted", path)
    except OSError as exc:
        print("could not plant", path, type(exc).__name__)
def predict_q1(images):
    return scores(images)
"""
    rc, report = grade_q1(tmp_path, code, layer)
    output = by_question(report)["Q1"]["output"]
    assert rc == 0 and report["extra_data"]["metrics"]["q1"]["n"] == 20
    assert not any(p.exists() for p in planted)
    if layer == "user":  # in the namespaces /tmp and /dev/shm are private and the rest is read-only
        assert all(f"planted {p}" in output for p in planted)
        assert "Removed what your code left in shared temp folders" in output


def test_sysv_ipc_and_kernel_keys_are_refused(tmp_path: Path, layer: str) -> None:
    code = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
print("shmget", "refused" if libc.shmget(0, 1 << 20, 0o1600) == -1 else "ALLOWED")   # IPC_PRIVATE | IPC_CREAT
print("msgget", "refused" if libc.msgget(0, 0o1600) == -1 else "ALLOWED")
print("semget", "refused" if libc.semget(0, 1, 0o1600) == -1 else "ALLOWED")
print("add_key", "refused" if libc.syscall(248, b"user", b"k", b"v", 1, -4) == -1 else "ALLOWED")
def predict_q1(images):
    return scores(images)
"""
    rc, report = grade_q1(tmp_path, code, layer)
    output = by_question(report)["Q1"]["output"]
    assert "ALLOWED" not in output and output.count("refused") == 4
    uid = str(student_uid())
    for kind in ("shm", "msg", "sem"):
        rows = Path(f"/proc/sysvipc/{kind}").read_text().splitlines()[1:]
        assert not [r for r in rows if uid in r.split()[7:10]]


# --- Memory: counted where it is spent --------------------------------------------------------------

MEMORY_HOGS = {
    "anonymous": "hog = bytearray(700 * 2**20)",
    "dev_shm_file": "f = open('/dev/shm/hog-' + str(os.getpid()), 'wb')\n"
                    "    try:\n        for _ in range(70):\n            f.write(b'x' * 10 * 2**20)\n"
                    "    except OSError:\n        pass",
    "memfd": "fd = os.memfd_create('hog')\n    for _ in range(70):\n        os.write(fd, b'x' * 10 * 2**20)",
    # 350 GiB mapped read-only, one byte read every 2 MiB: each read maps the shared zero page (no resident
    # memory) but costs a page of page tables, 700 MiB of them in all.
    "page_tables": "import mmap\n    m = mmap.mmap(-1, 350 << 30, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | 0x4000, "
                   "prot=mmap.PROT_READ)\n    sum(m[i] for i in range(0, len(m), 2 << 20))",
}


def test_pipes_held_open_count_towards_the_memory_limit(tmp_path: Path, layer: str) -> None:
    """16 processes each hold 500 pipes (the fd cap allows 511), filled as far as the kernel lets them.
    Counted the processes' way, each pipe held open costs its 64 KiB whether or not the kernel gave it all
    (past 64 MiB of pipe buffers a user's new pipes get 2 pages: fs.pipe-user-pages-soft): 500 MiB, stopped
    at a 400 MiB limit in either layer. A cgroup counts the pages the kernel really gave instead."""
    code = """
import os, time
def predict_q1(images):
    for _ in range(16):
        if os.fork() == 0:
            held = []
            for _ in range(500):
                r, w = os.pipe()
                os.set_blocking(w, False)
                try:
                    os.write(w, b"x" * 65536)
                except BlockingIOError:
                    pass
                held.append((r, w))
            time.sleep(60)
            os._exit(0)
    time.sleep(30)
    return scores(images)
"""
    started = time.monotonic()
    _, report = grade_q1(tmp_path, code, layer, "--memory-limit", "400", "--memory-accounting", "processes")
    assert time.monotonic() - started < 30
    assert error(report).startswith("Memory limit exceeded"), error(report)
    assert not student_processes()


@pytest.mark.parametrize("hog", sorted(MEMORY_HOGS))
def test_memory_limit_counts_shared_memory(tmp_path: Path, layer: str, hog: str) -> None:
    code = f"""
import os, time
def predict_q1(images):
    {MEMORY_HOGS[hog]}
    time.sleep(30)
    return scores(images)
"""
    started = time.monotonic()
    _, report = grade_q1(tmp_path, code, layer, "--memory-limit", "400")
    assert time.monotonic() - started < 30
    assert error(report).startswith("Memory limit exceeded"), error(report)
    assert by_question(report)["Q1"]["score"] == 0
    assert not list(Path("/dev/shm").glob("hog-*"))


def test_what_the_grader_puts_on_a_shared_tmpfs_is_not_the_students_memory(tmp_path: Path, monkeypatch) -> None:
    """Where the scratch folder lies on a tmpfs others share (a /tmp that is one; here /dev/shm), its growth
    counts as the student's memory from the moment its code starts: the images and the copy of a 360 MiB
    submission, which the grader put there, do not count; what the code writes there does."""
    need("user")
    monkeypatch.setattr(tempfile, "tempdir", "/dev/shm")
    monkeypatch.setattr(layers_module, "mount_refused", lambda: "no mount, as in Docker")  # no tmpfs of its own
    weights = {f"weights{i}.bin": b"\0" * (90 * 2**20) for i in range(4)}
    quiet = "def predict_q1(images):\n    return scores(images)\n"
    writer = ("def predict_q1(images):\n    with open('more.bin', 'wb') as f:\n        for _ in range(450):\n"
              "            f.write(b'x' * 2**20)\n    import time\n    time.sleep(30)\n")
    for name, code in (("quiet", quiet), ("writer", writer)):
        submission = write_submission(tmp_path / name, code + VALID_SCORES, **weights)
        data = make_reference(tmp_path / f"data-{name}", n_q1=20)
        _, report = grade(submission, data, tmp_path / f"{name}.json", "--config", str(config_with(tmp_path, "q1")),
                          *LAYERS["user"], "--memory-limit", "400")
        if name == "quiet":
            assert error(report) == "", error(report)
        else:
            assert error(report).startswith("Memory limit exceeded"), error(report)
    assert not [p for p in Path("/dev/shm").glob("grader-*") if p.stat().st_uid == 0 and "q1" in p.name]


def test_open_files_are_capped_for_good(tmp_path: Path, layer: str) -> None:
    """RLIMIT_NOFILE is hard before any student code: it cannot be raised, so pipes (and their buffers) are
    bounded per process, and each one held open counts towards the memory limit."""
    code = """
import os, resource
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
try:
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard * 2, hard * 2))
    raised = "raised"
except (ValueError, OSError):
    raised = "refused"
pipes = []
try:
    while True:
        pipes.append(os.pipe())
except OSError:
    pass
print("files", soft, hard, raised, len(pipes))
def predict_q1(images):
    return scores(images)
"""
    _, report = grade_q1(tmp_path, code, layer)
    output = by_question(report)["Q1"]["output"]
    line = next(line for line in output.splitlines() if line.startswith("files"))
    _, soft, hard, raised, pipes = line.split()
    assert (soft, hard, raised) == ("1024", "1024", "refused") and 500 <= int(pipes) < 512, line
    assert report["extra_data"]["metrics"]["q1"]["n"] == 20


def test_pipes_held_open_count_as_memory() -> None:
    from grader.sandbox.memory import PIPE_BYTES, descriptor_bytes

    code = "import os, sys\npipes = [os.pipe() for _ in range(100)]\nprint('ready', flush=True)\nsys.stdin.read()\n"
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        counted = descriptor_bytes([proc.pid, proc.pid], time.monotonic() + 10)  # each pipe once
        assert 100 * PIPE_BYTES <= counted <= 102 * PIPE_BYTES  # and its stdin and stdout
    finally:
        proc.kill()
        proc.wait()


# --- The upload: checked before it is copied ---------------------------------------------------------


def upload_case(root: Path, case: str) -> None:
    root.mkdir(parents=True)
    (root / "predict.py").write_text("def predict_q1(images):\n    return images.flatten(1)[:, :10]\n")
    if case == "fifo":
        os.mkfifo(root / "weights.pt")
    elif case == "deep":
        folder = root
        for _ in range(600):
            folder = folder / "d"
        folder.mkdir(parents=True)
    elif case == "symlink":
        (root / "others").symlink_to("/etc")
    elif case == "sparse":  # 11 files of 99 MiB, each under the per-file cap, that take no disk space
        for i in range(11):
            with open(root / f"weights{i}.pt", "wb") as f:
                f.truncate(99 * 2**20)
    elif case == "many_files":
        (root / "many").mkdir()
        for i in range(10_050):
            (root / "many" / str(i)).touch()


UPLOADS = {"fifo": "weights.pt is a named pipe (FIFO)", "deep": "folders nest deeper than 32 levels",
           "symlink": "others is a symbolic link", "sparse": "files add up to more than 1024 MiB",
           "many_files": "more than 10000 files and folders"}


@pytest.mark.parametrize("case", sorted(UPLOADS))
def test_bad_uploads_are_refused_before_any_copy(tmp_path: Path, case: str) -> None:
    submission = tmp_path / "submission"
    upload_case(submission, case)
    data = make_reference(tmp_path / "data", n_q1=5)
    started = time.monotonic()
    rc, report = grade(submission, data, tmp_path / "results.json", "--config", str(config_with(tmp_path, "q1")))
    assert time.monotonic() - started < 10
    assert rc == 0  # the student's error, not the grader's
    assert error(report).startswith("Your submission cannot be graded: ") and UPLOADS[case] in error(report)
    assert UPLOADS[case] in by_question(report)["Q1"]["output"]
    assert (tmp_path / "results.json").stat().st_size < 20_000


def test_an_upload_the_student_user_cannot_read_is_staged_by_the_grader(tmp_path: Path, layer: str) -> None:
    """Gradescope's upload may be root's alone: the grader stages a readable copy, never the original."""
    (tmp_path / "private").mkdir(mode=0o700)
    rc, report = grade_q1(tmp_path / "private", "def predict_q1(images):\n    return scores(images)\n", layer)
    assert rc == 0 and report["extra_data"]["metrics"]["q1"]["n"] == 20


# --- Output: student text cannot forge what people read ------------------------------------------------


def test_control_characters_and_bad_bytes_are_escaped_everywhere(tmp_path: Path, layer: str, capsys) -> None:
    forged = "\\x1b[2J\\x1b[H\\rTotal: 50 / 50\\u202e"
    code = f"""
import sys
sys.stdout.buffer.write(b"bytes \\xff\\xfe and \\x1b[31mred\\n")
def predict_q1(images):
    raise ValueError("{forged}")
"""
    submission = tmp_path / "upload" / "my\nfolder"
    write_submission(submission, code + VALID_SCORES)
    data = make_reference(tmp_path / "data", n_q1=5)
    rc, report = grade(submission.parent, data, tmp_path / "results.json", "--config",
                       str(config_with(tmp_path, "q1")), *LAYERS[layer])
    out = capsys.readouterr().out
    assert rc == 0
    text = (tmp_path / "results.json").read_text(encoding="utf-8")
    json.loads(text)
    for shown in (out, text, json.dumps(report, ensure_ascii=False)):
        assert "\x1b" not in shown and "\r" not in shown and "\u202e" not in shown
    assert "\nTotal: 50 / 50" not in out and "Total: 0 / 20" in out
    q1 = by_question(report)["Q1"]["output"]
    assert "\\x1b[2J" in q1 and "bytes \\xff\\xfe" in q1
    assert "my\\nfolder/predict.py" in report["output"]


# --- Set-up: never as root, one run at a time, results even on a full disk ----------------------------


def test_root_refuses_an_interpreter_the_student_user_cannot_run(tmp_path: Path, monkeypatch) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    hidden = tmp_path / "hidden"
    hidden.mkdir(mode=0o700)
    import sys

    monkeypatch.setattr(sys, "base_prefix", str(hidden))
    rc, report = grade_q1(tmp_path, "def predict_q1(images):\n    return scores(images)\n", "auto")
    assert rc == 2
    assert "refusing to run student code as root: Python lives under /tmp" in report["output"]
    assert "q1" not in report["extra_data"]["metrics"]


def test_two_runs_at_once_are_refused(tmp_path: Path) -> None:
    need("user")
    holder = prepare("user", "processes")
    try:
        rc, report = grade_q1(tmp_path, "def predict_q1(images):\n    return scores(images)\n", "user")
    finally:
        holder.close()
    assert rc == 2 and "another grading run is using the user" in report["output"]


@contextlib.contextmanager
def small_tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `folder` (made) for the block; the test skips where none can be mounted."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_results_are_written_on_a_full_disk(tmp_path: Path) -> None:
    from grader.report import ResultsFile, fallback_results

    with small_tmpfs(tmp_path / "disk", "8m") as disk:
        results = ResultsFile(disk / "results.json")
        with open(disk / "filler", "wb") as f:  # what a submission could do to the disk
            with pytest.raises(OSError):
                while True:
                    f.write(b"x" * 2**16)
                    f.flush()
        report = fallback_results("x" * 100_000)
        results.write(report)
        assert json.loads((disk / "results.json").read_text()) == report


def test_an_input_on_a_read_only_mount_is_refused_unless_closed_already(tmp_path: Path) -> None:
    """A config the grader cannot close (read-only mount) stopped the grade with "the autograder itself
    failed" and a traceback: now it refuses, saying what to do, and a config closed already just grades."""
    need("user")
    with small_tmpfs(tmp_path / "ro", "1m") as disk:
        text = config_with(tmp_path, "q1").read_text()
        for name, mode in (("open.toml", 0o644), ("closed.toml", 0o600)):
            (disk / name).write_text(text)
            (disk / name).chmod(mode)
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        submission = write_submission(tmp_path / "submission", "def predict_q1(images):\n    return images.flatten(1)[:, :10]\n")
        data = make_reference(tmp_path / "data", n_q1=10)
        rc, report = grade(submission, data, tmp_path / "r1.json", "--config", str(disk / "open.toml"), *LAYERS["user"])
        assert rc == 2 and "cannot be closed to the student user (Read-only file system)" in report["output"]
        assert "itself failed" not in report["output"]
        rc, report = grade(submission, data, tmp_path / "r2.json", "--config", str(disk / "closed.toml"), *LAYERS["user"])
        assert rc == 0 and report["extra_data"]["metrics"]["q1"]["n"] == 10


# --- The weak layer and the parts that do not depend on the layer --------------------------------------


def test_without_root_or_namespaces_the_grader_says_so(tmp_path: Path) -> None:
    _, report = grade_q1(tmp_path, "def predict_q1(images):\n    return scores(images)\n", "process")
    assert "The stronger isolation needs bubblewrap, or root as in the Docker image" in report["output"]


def test_cuda_asked_for_but_missing(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    submission = write_submission(tmp_path / "submission", "def predict_q1(images):\n    return images\n")
    data = make_reference(tmp_path / "data", n_q1=5)
    rc, report = grade(submission, data, tmp_path / "results.json", "--config", str(config_with(tmp_path, "q1")),
                       "--device", "cuda")
    assert rc == 2  # a set-up problem, not the student's
    assert "grader problem, not yours: CUDA was asked for (--device cuda), but torch sees no CUDA device" in error(report)


def test_forged_results_are_replaced(tmp_path: Path, layer: str) -> None:
    results = tmp_path / "results" / "results.json"
    forged = json.dumps({"tests": [{"name": "Q1", "score": 1000, "max_score": 20}], "score": 1000})
    code = f"""
import os
def predict_q1(images):
    for path in ({str(results)!r}, {str(results.parent / "extra.json")!r}):
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write({forged!r})
        except OSError as exc:
            print("refused:", type(exc).__name__)
    return scores(images)
"""
    rc, report = grade_q1(tmp_path, code, layer)
    assert rc == 0 and "score" not in report
    assert json.loads(results.read_text()) == report
    assert not (results.parent / "extra.json").exists()


def test_submission_cannot_shadow_the_childs_imports_or_run_before_the_filter(tmp_path: Path, layer: str) -> None:
    shadow = "print('SHADOW RAN')\nraise SystemExit(0)\n"
    code = """
def predict_q1(images):
    status = open("/proc/self/status").read()
    print([line for line in status.splitlines() if line.startswith("Seccomp:")])
    return scores(images)
"""
    submission = write_submission(tmp_path / "submission", code + VALID_SCORES, **{"numpy.py": shadow, "torch.py": shadow})
    data = make_reference(tmp_path / "data", n_q1=10)
    rc, report = grade(submission, data, tmp_path / "results.json", "--config", str(config_with(tmp_path, "q1")),
                       *LAYERS[layer])
    output = by_question(report)["Q1"]["output"]
    assert rc == 0 and report["extra_data"]["metrics"]["q1"]["n"] == 10
    assert "SHADOW RAN" not in output
    assert "['Seccomp:\\t2']" in output  # 2 = filter mode


CHANNEL_ATTACKS = {
    "closes_channel_and_waits": ("os.close(FD)\ntime.sleep(1000)",
                                 "closed its channel to the grader (0 of 20 images done) but kept running"),
    "deeply_nested_json": ("os.write(FD, b'[' * 60000 + b'\\n')\ntime.sleep(1000)", "malformed data: RecursionError"),
    "huge_npy_header": ("os.write(FD, b'{\"type\": \"batch\", \"start\": 0, \"count\": 20}\\n' + b'\\x93NUMPY\\x02\\x00'"
                        " + (2**30).to_bytes(4, 'little'))\ntime.sleep(1000)", "malformed data: unsupported .npy version (2, 0)"),
    "second_ready": ("os.write(FD, b'{\"type\": \"ready\"}\\n')\ntime.sleep(1000)", "unexpected 'ready' message"),
}


@pytest.mark.parametrize("attack", sorted(CHANNEL_ATTACKS))
def test_attacks_on_the_channel_end_in_a_clear_error(tmp_path: Path, layer: str, attack: str) -> None:
    action, message = CHANNEL_ATTACKS[attack]
    code = f"""
import json, os, sys, time
FD = json.loads(sys.argv[1])["fd"]
def predict_q1(images):
{textwrap.indent(action, "    ")}
"""
    started = time.monotonic()
    rc, report = grade_q1(tmp_path, code, layer, "--timeout", "20")
    assert time.monotonic() - started < 20
    assert rc == 0
    assert message in error(report)


# --- GPU: released with the processes (these skip without CUDA) --------------------------------------

def _gpu_free_bytes() -> int:
    import torch

    return torch.cuda.mem_get_info()[0]


def _needs_cuda() -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")


def test_a_process_left_holding_gpu_memory_is_killed_and_the_memory_released(tmp_path: Path, layer: str) -> None:
    _needs_cuda()
    before = _gpu_free_bytes()
    code = """
import subprocess, sys
HOLD = "import time, torch; x = torch.empty(2**30, dtype=torch.uint8, device='cuda'); print('held', flush=True); time.sleep(600)"
def predict_q1(images):
    p = subprocess.Popen([sys.executable, "-c", HOLD], start_new_session=True, stdout=subprocess.PIPE)
    p.stdout.readline()
    return scores(images.cpu()).to(images.device)
"""
    rc, report = grade_q1(tmp_path, code, layer, "--device", "cuda", "--timeout", "120")
    assert rc == 0 and report["extra_data"]["metrics"]["q1"]["n"] == 20
    assert not student_processes()
    deadline = time.monotonic() + 10
    while _gpu_free_bytes() < before - 2**28 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _gpu_free_bytes() >= before - 2**28


def test_a_gpu_kernel_spinning_past_the_time_limit_is_stopped(tmp_path: Path, layer: str) -> None:
    _needs_cuda()
    before = _gpu_free_bytes()
    code = """
import torch
def predict_q1(images):
    torch.cuda._sleep(10**13)  # a kernel that spins for hours
    torch.cuda.synchronize()
    return scores(images)
"""
    started = time.monotonic()
    _, report = grade_q1(tmp_path, code, layer, "--device", "cuda", "--timeout", "20")
    assert time.monotonic() - started < 20 + 15
    assert "Time limit exceeded" in error(report)
    deadline = time.monotonic() + 10
    while _gpu_free_bytes() < before - 2**28 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _gpu_free_bytes() >= before - 2**28


def test_what_the_student_writes_is_bounded(tmp_path: Path, layer: str) -> None:
    """Its copy of the submission and its home are a tmpfs of their own where root may mount one: writing
    gigabytes there stops near the memory limit, as memory, and the disk other runs share is untouched."""
    from grader.sandbox.scratch import mount_refused

    if (why := mount_refused()) is not None:
        pytest.skip(f"no tmpfs can be mounted here: {why}")
    code = """
import os
written, error = 0, None
block = b"x" * (4 << 20)
try:
    for i in range(1000):
        for folder in (".", os.environ["HOME"]):
            with open(os.path.join(folder, f"fill{i}"), "wb") as f:
                f.write(block)
            written += 4
except OSError as exc:
    error = exc.strerror
print("wrote", written, "MiB:", error, flush=True)
"""
    before = shutil.disk_usage(tempfile.gettempdir()).used
    rc, report = grade_q1(tmp_path, code + "def predict_q1(images):\n    return scores(images)\n", layer,
                          "--memory-limit", "300")
    grown = shutil.disk_usage(tempfile.gettempdir()).used - before
    assert rc == 0
    q1 = by_question(report)["Q1"]
    if "error" in report["extra_data"]["metrics"]["q1"]:
        assert report["extra_data"]["metrics"]["q1"]["error_kind"] == "memory", q1["output"]
    else:
        wrote = int(q1["output"].split("wrote ")[1].split()[0])
        assert "No space left on device" in q1["output"] and wrote <= 300 + 64, q1["output"]
    assert grown < 100 * 2**20, grown  # 8 GB were asked for
    assert "a tmpfs of its own" in report["output"]
