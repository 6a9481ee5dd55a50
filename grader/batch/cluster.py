"""A batch on a Dask cluster of other machines: who may join, what a worker must be before it grades, what a
lost worker costs, and where each submission stands (#29).

- The door: a remote scheduler is reached only over TLS with the course's certificates (`--dask-tls DIR`:
  ca.pem, cert.pem, key.pem); a plain tcp:// address is refused, since anyone who reaches such a scheduler
  runs code on the workers, as root. `--dask local` runs in this process and listens on no port.
- The worker: each task first checks that its worker runs this batch's grader (the version and the digest
  of its code) and can have the namespace layer with a CPU cgroup per question; a worker that cannot is
  refused before it writes any result, and the batch stops, naming the worker and why.
- A lost worker: Dask gives its task to another; a submission whose task took down as many workers as the
  scheduler allows (its allowed-failures) is recorded as that submission's grader problem, and the rest of
  the class is graded. Time limits hold inside each grader process, never by cancelling a task.
- Status: OUT/status.json says where each submission stands (queued, running on W since T, queued again after
  losing W, graded, failed: why), rewritten as that changes.
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path
from typing import Iterable

from grader import __version__
from grader.atomic import written_atomically
from grader.batch.carry import input_files
from grader.batch.submissions import BatchError

GRADER = Path(__file__).resolve().parents[1]  # the grader package
TLS_FILES = ("ca.pem", "cert.pem", "key.pem")
POLL_SECONDS = 1.0


class WorkerRefused(Exception):
    """A worker that must not grade: the message names it and says why."""


def code_digest(folder: Path = GRADER) -> str:
    """sha256 of the grader's code (every file's relative path and bytes): two machines agree on it when they
    run the same grader."""
    digest = hashlib.sha256()
    for path in input_files(folder):
        digest.update(f"{path.relative_to(folder).as_posix()}\0{path.stat().st_size}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def check_address(address: str, tls: Path | None) -> None:
    """Refuse a scheduler that anyone could reach: remote ones need tls:// and the course's certificates."""
    if address == "local":
        return
    if not address.startswith("tls://"):
        raise BatchError(f"--dask {address}: a scheduler reached over {address.split('://')[0] if '://' in address else 'tcp'} "
                         "runs the tasks of anyone who reaches it, as the workers' user: use tls:// with --dask-tls "
                         "(docs/batch.md), or --dask local")
    if tls is None:
        raise BatchError(f"--dask {address}: needs --dask-tls DIR holding {', '.join(TLS_FILES)}")
    missing = [name for name in TLS_FILES if not (tls / name).is_file()]
    if missing:
        raise BatchError(f"--dask-tls {tls}: missing {', '.join(missing)}")


def security(tls: Path):
    """The client's side of the course's TLS: its certificate, checked by the scheduler, and the CA that the
    scheduler's must be signed by."""
    from distributed.security import Security

    return Security(tls_ca_file=str(tls / "ca.pem"), tls_client_cert=str(tls / "cert.pem"),
                    tls_client_key=str(tls / "key.pem"), require_encryption=True)


def check_worker(version: str, code: str, user: str, cpu_share: int) -> None:
    """Inside a task, before any grading: this worker runs the batch's grader and can have the namespace layer
    with a CPU cgroup per question, or WorkerRefused."""
    from distributed import get_worker

    from grader.sandbox import SandboxError, prepare

    where, mine = get_worker().address, code_digest()
    if version != __version__ or code != mine:
        raise WorkerRefused(f"worker {where} runs grader {__version__} (code {mine[:12]}), the batch "
                            f"{version} (code {code[:12]}): install the batch's grader on every worker")
    try:
        prepare("namespace", "auto", [], user, cpu_share=cpu_share).close()
    except SandboxError as exc:
        raise WorkerRefused(f"worker {where} cannot grade as the batch needs (the namespace layer and a CPU cgroup "
                            f"per question): {exc}") from None


class Status:
    """OUT/status.json: where each submission stands, rewritten whenever that changes (one rename each)."""

    def __init__(self, path: Path, names: Iterable[str]):
        self.path, self.lock = path, threading.Lock()
        self.states: dict[str, dict] = {name: {"state": "queued", "since": _now()} for name in names}
        self._write()

    def set(self, name: str, state: str, **info: str) -> None:
        """`name` is now in `state`; a worker it lost stays named (`lost`) to the end."""
        with self.lock:
            lost = self.states.get(name, {}).get("lost")
            entry = {"state": state, "since": _now(), **({"lost": lost} if lost else {}), **info}
            if {k: v for k, v in entry.items() if k != "since"} == {k: v for k, v in self.states.get(name, {}).items()
                                                                    if k != "since"}:
                return
            self.states[name] = entry
            self._write()

    def get(self, name: str) -> dict:
        with self.lock:
            return dict(self.states.get(name, {}))

    def _write(self) -> None:
        with written_atomically(self.path, mode=0o644) as f:
            f.write(json.dumps(self.states, indent=2, sort_keys=True).encode())


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


TOPIC = "mp-grader-batch"  # the Dask event a task sends when it starts grading


def announce(name: str) -> None:
    """Inside a task, once its worker passed check_worker: tell the batch which worker grades `name`."""
    from distributed import get_worker

    worker = get_worker()
    worker.log_event(TOPIC, {"submission": name, "worker": worker.address})


def watch(client, tracked: dict, lock: threading.Lock, status: Status, stop: threading.Event) -> None:
    """Until `stop`: which worker grades each submission (the event each task sends as it starts), and which
    unfinished ones lost theirs (`tracked`: submission -> its future, added to under `lock` as tasks are handed
    over). Runs in a thread of the batch's client."""
    def pending(name: str) -> bool:
        with lock:
            future = tracked.get(name)
        return future is not None and future.status == "pending"

    def on_start(event: tuple) -> None:
        msg = event[1] if isinstance(event[1], dict) else {}
        name, worker = str(msg.get("submission", "")), str(msg.get("worker", ""))
        if pending(name):
            before = status.get(name)  # a started task starts again only when its worker was lost
            again = before.get("state") == "running" and before.get("worker") != worker
            status.set(name, "running", worker=worker, **({"lost": before["worker"]} if again else {}))

    client.subscribe_topic(TOPIC, on_start)
    while not stop.wait(POLL_SECONDS):
        try:
            alive = set(client.scheduler_info(n_workers=-1).get("workers", {}))
        except Exception:  # the scheduler is busy or going away: the next poll tells
            continue
        with lock:
            names = list(tracked)
        for name in names:
            state = status.get(name)
            if state.get("state") == "running" and state.get("worker") not in alive and pending(name):
                status.set(name, "queued", lost=state["worker"])  # Dask gives its task to another worker
