"""Right grades wherever the grader runs (#26): an interpreter under /tmp, a user without root, and whatever a
student leaves behind (a folder thousands deep, half a million files), in each strong layer where it applies.
Each hostile submission runs only in the namespace and user layers, as in test_isolation.py."""
from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from conftest import REPO, by_question, config_with, make_reference, need, write_submission
from grader import batch
from grader.sandbox import SandboxError, prepare
from grader.sandbox import cleanup as cleanup_module
from grader.sandbox import jail as jail_module
from grader.sandbox import namespaces
from grader.sandbox.memory import used_bytes
from test_isolation import VALID_SCORES, error, grade_q1

HONEST = "def predict_q1(images):\n    return scores(images)\n"
# Makes `depth` nested folders under `top` relative to a folder descriptor, as an attacker would: no path
# is ever longer than one name, and it takes well under a second.
DEEP = """
import os
def deep(top, depth):
    os.makedirs(top, exist_ok=True)
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):
        os.mkdir("d", dir_fd=fd)
        inner = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = inner
    os.close(fd)
"""


def _student_files(folder: Path, uid: int) -> list[str]:
    """Names at the top of `folder` that `uid` owns."""
    found = []
    with os.scandir(folder) as entries:
        for entry in entries:
            try:
                if entry.stat(follow_symlinks=False).st_uid == uid:
                    found.append(entry.name)
            except OSError:
                continue
    return found


def _student_uid() -> int:
    import pwd

    from grader.sandbox import DEFAULT_USER

    return pwd.getpwnam(DEFAULT_USER).pw_uid if os.geteuid() == 0 else os.getuid()


# --- The namespace layer never hides what the child needs ----------------------------------------------------

@pytest.fixture
def venv_in_tmp() -> Path:
    """A virtual environment under /tmp whose site-packages lead (by a .pth file) to this one's: its prefix
    and a sys.path entry of the child's lie where the sandbox lays its private /tmp."""
    folder = Path(tempfile.mkdtemp(prefix="grader-venv-", dir="/tmp"))
    os.chmod(folder, 0o755)
    try:
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder / "venv")], check=True,
                       capture_output=True, timeout=120)
        inner = subprocess.run([str(folder / "venv" / "bin" / "python"), "-c", "import site; print(site.getsitepackages()[0])"],
                               check=True, capture_output=True, text=True).stdout.strip()
        Path(inner, "outer.pth").write_text("\n".join(site.getsitepackages()) + "\n")
        yield folder / "venv" / "bin" / "python"
    finally:
        subprocess.run(["rm", "-rf", str(folder)], check=False)


def test_an_interpreter_under_tmp_grades_in_the_namespace_layer(tmp_path: Path, venv_in_tmp: Path) -> None:
    """A clone under /tmp: its interpreter was hidden by the private /tmp, and every question ended as the
    grader's problem (bubblewrap: execvp ... No such file or directory)."""
    need("namespace")
    os.chmod(tmp_path, 0o755)
    submission = write_submission(tmp_path / "submission", VALID_SCORES + HONEST)
    data = make_reference(tmp_path / "data", n_q1=20)
    results = tmp_path / "results" / "results.json"
    proc = subprocess.run([str(venv_in_tmp), "-m", "grader", "--submission", str(submission), "--data", str(data),
                           "--results", str(results), "--config", str(config_with(tmp_path, "q1")), "--device", "cpu",
                           "--isolation", "namespace"], cwd=REPO, capture_output=True, text=True, timeout=300)
    report = json.loads(results.read_text())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert str(venv_in_tmp.parent.parent) in subprocess.run(
        [str(venv_in_tmp), "-c", "import sys; print(sys.prefix)"], capture_output=True, text=True).stdout
    assert report["extra_data"]["metrics"]["q1"]["n"] == 20 and "error" not in report["extra_data"]["metrics"]["q1"]
    assert "private PID, mount" in report["output"]


def test_the_probe_runs_what_a_question_runs(monkeypatch) -> None:
    """A sandbox that would hide a folder the child's imports need fails the probe (so `auto` falls back and
    `--isolation namespace` refuses, with the reason), rather than every question failing as the grader's."""
    need("namespace")
    assert namespaces.probe_bwrap(*_ids()) is None
    monkeypatch.setattr(namespaces, "interpreter_paths", lambda protected: [])  # the prefix and site-packages left out
    why = namespaces.probe_bwrap(*_ids())
    assert why is not None and ("hides folders the interpreter needs" in why or "cannot make namespaces" in why), why
    with pytest.raises(SandboxError, match="--isolation namespace: "):
        prepare("namespace")


def test_root_that_cannot_hold_the_sandboxs_first_process_gets_no_namespace_layer() -> None:
    """Root without CAP_SYS_PTRACE (Docker drops it by default) can make namespaces but cannot open the
    question's init (the student user's, in a user namespace of its own) to hold it: the probe says so, and
    `--isolation namespace` refuses before any student code runs, rather than every question failing as the
    grader's problem (as it did in a worker container, #29)."""
    need("namespace")
    if os.geteuid() != 0:
        pytest.skip("the student's init runs as another user only when the grader is root")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) drops the capability for the test, and it is not installed")
    probe = ("from grader.sandbox import prepare, SandboxError\n"
             "try:\n    prepare('namespace').close()\nexcept SandboxError as exc:\n    print(exc)\n")
    ran = subprocess.run(["setpriv", "--bounding-set=-sys_ptrace", "--inh-caps=-sys_ptrace", sys.executable, "-c", probe],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert "--isolation namespace: this grader lacks CAP_SYS_PTRACE" in ran.stdout, ran.stdout + ran.stderr
    assert "--cap-add SYS_PTRACE" in ran.stdout


def _ids() -> tuple[int | None, int | None]:
    if os.geteuid() != 0:
        return None, None
    from grader.sandbox import DEFAULT_USER, ensure_user

    return ensure_user(DEFAULT_USER)


# --- Without root: memory, the process cap, the launcher ----------------------------------------------------

def test_memory_is_never_read_from_the_host_before_the_sandbox_is_set_up() -> None:
    """Without a memory cgroup the private /tmp and /dev/shm count as memory. Read through /proc/<init>/root
    before bubblewrap has mounted them, they were the host's /tmp (the root disk: 55-60 GB) and an honest
    submission lost its question. Each jail is read at once and often, beside other sandboxes being set up."""
    need("namespace")
    host = used_bytes("/tmp")
    if host < 2**30:
        pytest.skip(f"the host's /tmp has {host >> 20} MiB used: a wrong reading could not be told from a right one")
    sandbox = prepare("namespace", "processes")
    stop = threading.Event()

    def neighbours() -> None:  # other sandboxes being set up all along
        while not stop.is_set():
            subprocess.run([*sandbox.bwrap.program, "--ro-bind", "/", "/", "--tmpfs", "/tmp", "--", "/bin/true"],
                           capture_output=True, check=False)

    threads = [threading.Thread(target=neighbours, daemon=True) for _ in range(2)]
    for t in threads:
        t.start()
    highest = 0
    try:
        for _ in range(15):
            jail = sandbox.jail("q1", 256 * 2**20)
            try:
                jail.start([sys.executable, "-I", "-S", "-c", "import time; time.sleep(0.3)"], jail.env(), ())
                until = time.monotonic() + 0.4
                while time.monotonic() < until:
                    highest = max(highest, jail.memory(until))
            finally:
                jail.close()
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        sandbox.close()
    assert highest < 128 * 2**20, f"{highest >> 20} MiB counted for a sleeping interpreter (host /tmp: {host >> 20} MiB)"


def test_a_fork_bomb_is_capped_and_ends_as_the_students_error(tmp_path: Path, layer: str) -> None:
    """Processes are capped (RLIMIT_NPROC: the student user's, or the user namespace's), and a bomb of sleeping
    processes ends as the student's own error or a graded question, never as a containment breach: without
    root, bubblewrap's launcher (the grader's own) waits for its namespace to empty and is no student process."""
    code = """
import os
count = 0
try:
    for _ in range(5000):
        os.posix_spawn("/bin/sleep", ["sleep", "120"], {})
        count += 1
except OSError as exc:
    print("spawned", count, "then", type(exc).__name__, flush=True)
def predict_q1(images):
    return scores(images)
"""
    started = time.monotonic()
    rc, report = grade_q1(tmp_path, code, layer, "--timeout", "60")
    output = by_question(report)["Q1"]["output"]
    assert rc == 0, report["output"]
    assert "survived every attempt" not in report["output"]
    spawned = int(output.split("spawned ")[1].split()[0])
    assert 0 < spawned <= 512, output
    assert report["extra_data"]["metrics"]["q1"]["n"] == 20, output
    assert time.monotonic() - started < 120


# --- Clean-up that cannot fail and is bounded ----------------------------------------------------------------

def test_a_folder_thousands_deep_in_tmp_and_home_is_removed(tmp_path: Path, layer: str) -> None:
    """3,000 levels made in a second: shutil.rmtree raised RecursionError (no OSError handler catches it), the
    grade ended as 'the autograder itself failed', and left in /tmp it failed the next student's grade too."""
    top = f"/tmp/deep-{os.getpid()}"
    code = DEEP + f"""
deep({top!r}, 3000)
deep(os.path.join(os.environ["HOME"], "deep"), 3000)
os.chmod(os.path.join(os.environ["HOME"], "deep"), 0)  # closed even to its owner: rm alone cannot enter it
print("made", flush=True)
""" + HONEST
    scratch = set(Path(tempfile.gettempdir()).glob("grader-q1-*"))
    rc, report = grade_q1(tmp_path / "hostile", code, layer)
    assert not set(Path(tempfile.gettempdir()).glob("grader-q1-*")) - scratch  # its home went with the scratch
    assert rc == 0, report["output"]
    assert "made" in by_question(report)["Q1"]["output"]
    assert report["extra_data"]["metrics"]["q1"]["n"] == 20
    assert not os.path.lexists(top)
    rc, honest = grade_q1(tmp_path / "next", HONEST, layer)  # the next student, on the same machine
    assert rc == 0 and honest["extra_data"]["metrics"]["q1"] == report["extra_data"]["metrics"]["q1"]
    assert "grader-q1-" not in Path("/proc/self/mountinfo").read_text()  # every scratch tmpfs unmounted


def test_a_flood_of_files_is_swept_within_a_bound(tmp_path: Path) -> None:
    """500,000 files left in a shared temporary folder (user layer: the namespace layer's are private) are
    removed within the sweep's bound, in bounded memory, and listed for staff by count, not one by one. The
    flood goes to /dev/shm: made on the disk's /tmp it takes minutes, and leaves the folder's index grown."""
    need("user")
    code = """
import os
folder = "/dev/shm"
made = 0
try:
    for i in range(500_000):
        os.close(os.open(f"{folder}/flood-%d" % i, os.O_CREAT | os.O_WRONLY, 0o600))
        made += 1
except OSError as exc:
    print("stopped:", exc.strerror)
print("made", made, flush=True)
""" + HONEST
    started = time.monotonic()
    rc, report = grade_q1(tmp_path, code, "user", "--timeout", "120")
    seconds = time.monotonic() - started
    output = by_question(report)["Q1"]["output"]
    assert rc == 0, report["output"]
    assert "made 500000" in output, output
    assert not _student_files(Path("/dev/shm"), _student_uid())
    assert "Removed what your code left in shared temp folders (500000): " in output and ", and 499995 more" in output
    assert seconds < 120 + cleanup_module.SWEEP_SECONDS, seconds


def test_past_the_sweeps_bound_the_grade_stands_and_the_next_run_starts_clean(tmp_path: Path, monkeypatch) -> None:
    """A sweep cut short by its bound keeps the grade, tells staff, and leaves a mark: the next run removes
    the rest before any student code runs, in the usual folders and in every world-writable folder the
    walk finds (or refuses, naming the user)."""
    need("user")
    elsewhere = Path(tempfile.mkdtemp(prefix="grader-test-shared-", dir="/var/tmp"))  # world-writable, not a usual one
    os.chmod(elsewhere, 0o1777)
    monkeypatch.setattr(jail_module, "SWEEP_SECONDS", 0.0)  # the sweep after the question, not the one before
    code = f"""
import os
for i in range(3000):
    os.close(os.open("/tmp/left-%d" % i, os.O_CREAT | os.O_WRONLY, 0o600))
open({str(elsewhere / "left")!r}, "w").write("for the next student")
""" + HONEST
    try:
        rc, report = grade_q1(tmp_path / "cut", code, "user")
        assert rc == 0 and report["extra_data"]["metrics"]["q1"]["n"] == 20
        assert "were not all removed within" in by_question(report)["Q1"]["output"]
        uid = _student_uid()
        assert _student_files(Path("/tmp"), uid) and _student_files(elsewhere, uid)  # left for the next run
        monkeypatch.undo()
        rc, report = grade_q1(tmp_path / "next", HONEST, "user")
        assert rc == 0 and report["extra_data"]["metrics"]["q1"]["n"] == 20
        assert not _student_files(Path("/tmp"), uid) and not _student_files(elsewhere, uid)
    finally:
        subprocess.run(["rm", "-rf", str(elsewhere)], check=False)


def test_a_batch_takes_a_folder_thousands_deep_as_that_submissions_problem(tmp_path: Path) -> None:
    """os.walk recursed once per level: a submission 1,500 folders deep ended the batch with no scores.csv for
    anyone, on every rerun. Now it is refused when graded, and the rest of the class is graded."""
    need("namespace")
    os.chmod(tmp_path, 0o755)
    data = make_reference(tmp_path / "data", n_q1=10)
    export = tmp_path / "class"
    write_submission(export / "alice", VALID_SCORES + HONEST)
    deep = write_submission(export / "mallory", VALID_SCORES + HONEST)
    exec(DEEP + f"deep({str(deep / 'nest')!r}, 1500)", {})
    try:
        out = tmp_path / "out"
        argv = [str(export), "--data", str(data), "--out", str(out), "--config", str(config_with(tmp_path, "q1")),
                "--device", "cpu"]
        assert batch.main(argv) == 0
        reports = {name: json.loads((out / "submissions" / name / "results.json").read_text())
                   for name in ("alice", "mallory")}
        assert "error" not in reports["alice"]["extra_data"]["metrics"]["q1"]
        assert "folders nest deeper than" in error(reports["mallory"])
        assert batch.main(argv) == 0  # the rerun reads both stored results back
    finally:
        subprocess.run(["rm", "-rf", str(deep)], check=False)  # pytest's own clean-up recurses too


def test_oom_score_and_process_cap_in_every_strong_layer(tmp_path: Path, layer: str) -> None:
    """The student's processes are the OOM killer's first choice and capped, with or without root."""
    code = """
import resource
print("adj", open("/proc/self/oom_score_adj").read().strip(), "nproc", resource.getrlimit(resource.RLIMIT_NPROC)[0],
      flush=True)
""" + HONEST
    rc, report = grade_q1(tmp_path, code, layer)
    assert rc == 0 and "adj 1000 nproc 512" in by_question(report)["Q1"]["output"]



def test_a_scratch_folder_a_killed_grader_left_mounted_is_unmounted_by_the_next_run() -> None:
    """A grader killed mid-question (a batch's timeout, Gradescope's) cannot unmount its scratch tmpfs, with
    the test images in it: the next run of the same student user unmounts it before any student code runs."""
    need("user")
    from grader.sandbox.scratch import mount_refused

    if (why := mount_refused()) is not None:
        pytest.skip(f"no tmpfs can be mounted here: {why}")
    sandbox = prepare("user", "processes")
    jail = sandbox.jail("q1", 64 * 2**20)  # never closed, as if the grader had been killed
    sandbox.close()
    assert jail.mounted and os.path.ismount(jail.scratch)
    try:
        prepare("user", "processes").close()
    finally:
        for group in jail.groups:
            group.remove()
    assert not os.path.lexists(jail.scratch)
