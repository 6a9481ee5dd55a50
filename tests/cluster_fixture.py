"""A real Dask cluster on this machine for the batch's tests: a scheduler and workers as processes of their own,
talking TLS over loopback with certificates made here by openssl, as a course would run them across machines
(docs/batch.md). Each worker is the leader of its own process group, so killing the group is losing a machine."""
from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

DASK = str(Path(sys.executable).with_name("dask"))
REPO = Path(__file__).resolve().parents[1]


def make_certificates(folder: Path, names: tuple[str, ...] = ("IP:127.0.0.1",)) -> Path:
    """A CA and one certificate it signed, for `names` (subjectAltName entries; scheduler, workers and client
    alike): ca.pem, cert.pem, key.pem, as --dask-tls wants them."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "san.cnf").write_text(f"subjectAltName={','.join(names)}\n")
    for argv in (["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca-key.pem", "-out", "ca.pem", "-days", "1",
                  "-subj", "/CN=mp-grader test CA"],
                 ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem", "-out", "req.pem", "-subj", "/CN=mp-grader"],
                 ["x509", "-req", "-in", "req.pem", "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial", "-out",
                  "cert.pem", "-days", "1", "-extfile", "san.cnf"]):
        subprocess.run(["openssl", *argv], cwd=folder, check=True, capture_output=True)
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (folder / name).chmod(0o644)  # a worker may run as another user
    return folder


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tls(certs: Path) -> list[str]:
    return ["--tls-ca-file", str(certs / "ca.pem"), "--tls-cert", str(certs / "cert.pem"), "--tls-key", str(certs / "key.pem")]


@dataclass
class Worker:
    address: str
    process: subprocess.Popen

    def kill(self) -> None:
        """The machine is lost: the worker and every process it started (its grader runs), at once."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


@dataclass
class Cluster:
    address: str
    workers: list[Worker]


def _wait(check, what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the cluster did not come up: {what}")
        time.sleep(0.2)


@contextmanager
def tls_cluster(folder: Path, certs: Path, workers: int, grader_path: Path = REPO, user: str | None = None,
                hide: tuple[Path, ...] = ()) -> Iterator[Cluster]:
    """A scheduler and `workers` single-threaded workers (no nanny), importing the grader from `grader_path`;
    `user`: run the workers as that user; `hide`: folders the workers cannot see (each an empty tmpfs in a
    mount namespace of theirs), as on other machines (both root only)."""
    folder.mkdir(parents=True, exist_ok=True)
    port = _port()
    address = f"tls://127.0.0.1:{port}"
    logs = []
    # A task counts as lost after 3 workers died running it; a worker holds one task at a time (1 thread, and
    # no second one queued on it), so the worker status.json names is the one grading it.
    env = {**os.environ, "PYTHONPATH": str(grader_path), "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "2",
           "DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION": "1.0"}
    scheduler_log = open(folder / "scheduler.log", "wb")
    logs.append(scheduler_log)
    scheduler = subprocess.Popen([DASK, "scheduler", "--protocol", "tls", "--host", "127.0.0.1", "--port", str(port),
                                  "--no-dashboard", *_tls(certs), "--scheduler-file", str(folder / "scheduler.json")],
                                 stdout=scheduler_log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    started: list[Worker] = []
    try:
        _wait(lambda: (folder / "scheduler.json").is_file(), "no scheduler file")
        for i in range(workers):
            worker_port = _port()
            log = open(folder / f"worker{i}.log", "wb")
            logs.append(log)
            prefix = ["runuser", "-u", user, "--"] if user else []
            if hide:
                mounts = " && ".join(f"mount -t tmpfs -o size=1m,mode=700 none '{h}'" for h in hide)
                prefix = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", f'{mounts} && exec "$@"',
                          "sh", *prefix]
            process = subprocess.Popen([*prefix, DASK, "worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard",
                                        "--host", "127.0.0.1", "--worker-port", str(worker_port), "--name", f"w{i}",
                                        *_tls(certs)],
                                       stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd="/")
            started.append(Worker(f"tls://127.0.0.1:{worker_port}", process))
        _wait(lambda: all("Registered to:" in (folder / f"worker{i}.log").read_text(errors="replace")
                          for i in range(workers)), "a worker did not register (see its log)")
        yield Cluster(address, started)
    finally:
        for w in started:
            if w.process.poll() is None:
                w.kill()
        os.killpg(scheduler.pid, signal.SIGKILL)
        scheduler.wait()
        for log in logs:
            log.close()


def kill_mid_grade(status: Path, names: set[str], kill: Callable[[str], bool], after: float = 0.5,
                   seconds: float = 600) -> dict:
    """Watch the batch's status file until one of `names` has run on a worker for `after` seconds, then
    `kill(worker address)` (True: that worker and the grader it runs are gone). Returns {name, worker}, or {}
    when nothing was killed within `seconds`."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            states = json.loads(status.read_text())
        except (OSError, ValueError):
            states = {}
        for name in names:
            state = states.get(name, {})
            if state.get("state") == "running" and time.monotonic() - seen.setdefault(name, time.monotonic()) >= after:
                if kill(state["worker"]):
                    return {"name": name, "worker": state["worker"]}
        time.sleep(0.05)
    return {}


def leftovers() -> set[Path]:
    """The staged uploads in the temporary folder: a grader killed with its worker cannot remove its own."""
    return set(Path(tempfile.gettempdir()).glob("grader-upload-*"))


def clean_after_killed_graders(before: set[Path]) -> None:
    """What a grader killed with its worker left on this machine (a real lost machine takes it along): its
    staged upload, and its scratch tmpfs, which the next grade by the same student user would unmount."""
    from grader.batch.runs import student_users
    from grader.sandbox.scratch import unmount_stale

    for user in student_users(4):
        try:
            unmount_stale(pwd.getpwnam(user).pw_uid)
        except KeyError:
            continue
    for path in leftovers() - before:
        shutil.rmtree(path, ignore_errors=True)
