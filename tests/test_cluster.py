"""A batch on a Dask cluster of other machines (#29): the door is TLS with the course's certificates, a worker
grades only when it runs the batch's grader with the namespace layer and cgroups, and OUT/status.json says
where each submission stands. The cluster here is real: a scheduler and workers as processes of their own,
over TLS on loopback (tests/cluster_fixture.py). Losing a worker mid-grade is in tests/test_batch.py, beside
the class it regrades."""
from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from cluster_fixture import REPO, clean_after_killed_graders, leftovers, make_certificates, tls_cluster
from conftest import config_with, make_reference, unavailable
from export_fixture import make_export
from grader import batch
from grader.batch.cluster import Status, code_digest


def test_a_scheduler_anyone_can_reach_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = make_reference(tmp_path / "data", n_q1=5)
    (tmp_path / "class").mkdir()
    base = [str(tmp_path / "class"), "--data", str(data), "--out", str(tmp_path / "out"), "--config",
            str(config_with(tmp_path))]
    assert batch.main([*base, "--dask", "tcp://127.0.0.1:8786"]) == 2
    assert "runs the tasks of anyone who reaches it" in capsys.readouterr().err
    assert batch.main([*base, "--dask", "tls://127.0.0.1:8786"]) == 2
    assert "needs --dask-tls DIR holding ca.pem, cert.pem, key.pem" in capsys.readouterr().err
    (tmp_path / "tls").mkdir()
    (tmp_path / "tls" / "ca.pem").write_text("")
    assert batch.main([*base, "--dask", "tls://127.0.0.1:8786", "--dask-tls", str(tmp_path / "tls")]) == 2
    assert "missing cert.pem, key.pem" in capsys.readouterr().err


def test_the_code_digest_is_the_graders_code(tmp_path: Path) -> None:
    copy = tmp_path / "grader"
    shutil.copytree(REPO / "grader", copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert code_digest(copy) == code_digest()
    (copy / "metrics.py").write_text((copy / "metrics.py").read_text() + "\n# another build\n")
    assert code_digest(copy) != code_digest()


def test_the_status_file_names_the_lost_worker_until_the_end(tmp_path: Path) -> None:
    status = Status(tmp_path / "status.json", ["a", "b"])
    assert {n: s["state"] for n, s in json.loads((tmp_path / "status.json").read_text()).items()} == {"a": "queued",
                                                                                                     "b": "queued"}
    status.set("a", "running", worker="tls://w1")
    status.set("a", "queued", lost="tls://w1")
    status.set("a", "running", worker="tls://w2")
    status.set("a", "graded")
    status.set("b", "failed", problem="the zip could not be unpacked")
    written = json.loads((tmp_path / "status.json").read_text())
    assert {k: v for k, v in written["a"].items() if k != "since"} == {"state": "graded", "lost": "tls://w1"}
    assert written["b"]["problem"] == "the zip could not be unpacked"


def _need_cluster() -> None:
    pytest.importorskip("distributed", reason="the dask extra is not installed")
    if shutil.which("openssl") is None:
        pytest.skip("openssl makes the test's certificates, and it is not installed")
    reason = unavailable("namespace")
    if reason or os.geteuid() != 0:
        pytest.skip(f"a batch on a cluster needs the namespace layer and CPU cgroups, as root: {reason or 'not root'}")


@pytest.fixture
def one_student(tmp_path: Path) -> list[str]:
    """A class of one honest submission, and the batch's arguments for it."""
    os.chmod(tmp_path, 0o755)
    data = make_reference(tmp_path / "data", n_q1=20)
    export = make_export(tmp_path / "export", 1, data, tmp_path / "out")
    return [str(export), "--data", str(data), "--out", str(tmp_path / "out"), "--config",
            str(config_with(tmp_path, "q1")), "--device", "cpu"]


def _knock(address: str, ca: Path, cert: Path | None = None, key: Path | None = None) -> str:
    """Open a TLS connection to the scheduler as a client would: "refused" when the scheduler drops it, "let in"
    when it waits for the client to speak (Dask's own protocol would follow)."""
    host, port = address.removeprefix("tls://").rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(ca))
    context.check_hostname = False
    if cert is not None:
        context.load_cert_chain(str(cert), str(key))
    with socket.create_connection((host, int(port)), timeout=3) as raw:
        try:
            with context.wrap_socket(raw) as tls:
                return "refused" if tls.recv(1) == b"" else "let in"
        except TimeoutError:
            return "let in"
        except (ssl.SSLError, ConnectionError):
            return "refused"


def test_a_client_without_the_courses_certificate_is_refused(tmp_path: Path) -> None:
    _need_cluster()
    certs = make_certificates(tmp_path / "certs")
    stranger = make_certificates(tmp_path / "stranger")  # a certificate the course's CA never signed
    with tls_cluster(tmp_path / "cluster", certs, 1) as cluster:
        assert _knock(cluster.address, certs / "ca.pem", certs / "cert.pem", certs / "key.pem") == "let in"
        assert _knock(cluster.address, certs / "ca.pem") == "refused"
        assert _knock(cluster.address, certs / "ca.pem", stranger / "cert.pem", stranger / "key.pem") == "refused"


def test_a_worker_with_another_grader_is_refused(tmp_path: Path, one_student: list[str],
                                                 capsys: pytest.CaptureFixture) -> None:
    _need_cluster()
    other = tmp_path / "other"
    shutil.copytree(REPO / "grader", other / "grader", ignore=shutil.ignore_patterns("__pycache__"))
    (other / "grader" / "metrics.py").write_text((other / "grader" / "metrics.py").read_text() + "\n# another build\n")
    certs = make_certificates(tmp_path / "certs")
    with tls_cluster(tmp_path / "cluster", certs, 1, grader_path=other) as cluster:
        assert batch.main([*one_student, "--dask", cluster.address, "--dask-tls", str(certs)]) == 2
    err = capsys.readouterr().err
    assert f"worker {cluster.workers[0].address} runs grader" in err and "install the batch's grader on every worker" in err
    assert not list((tmp_path / "out" / "submissions").glob("*/results.json"))  # nobody got a grade from it


def test_a_worker_without_the_namespace_layer_and_cgroups_is_refused(tmp_path: Path, one_student: list[str],
                                                                      capsys: pytest.CaptureFixture) -> None:
    _need_cluster()
    if subprocess.run(["runuser", "-u", "nobody", "--", sys.executable, "-c", "import distributed"],
                      capture_output=True).returncode != 0:
        pytest.skip("this interpreter or its packages are not readable by the user 'nobody'")
    # pytest's folders and the checkout's grader folder are root's alone: the worker gets copies it can read.
    readable = Path(tempfile.mkdtemp(prefix="mp-grader-worker-"))
    try:
        readable.chmod(0o755)
        shutil.copytree(REPO / "grader", readable / "grader", ignore=shutil.ignore_patterns("__pycache__"))
        certs = make_certificates(readable / "certs")
        subprocess.run(["chmod", "-R", "a+rX", str(readable)], check=True)
        with tls_cluster(tmp_path / "cluster", certs, 1, grader_path=readable, user="nobody") as cluster:
            assert batch.main([*one_student, "--dask", cluster.address, "--dask-tls", str(certs)]) == 2
    finally:
        shutil.rmtree(readable)
    err = capsys.readouterr().err
    assert f"worker {cluster.workers[0].address} cannot grade as the batch needs" in err
    assert not list((tmp_path / "out" / "submissions").glob("*/results.json"))


def test_a_submission_that_keeps_taking_workers_down_is_its_grader_problem(tmp_path: Path) -> None:
    """Every worker that runs submission_1000 is lost (as if it brought each machine down): past the scheduler's
    allowed-failures (2 here: 3 deaths) that submission is recorded as its grader problem, and the rest of
    the class is graded."""
    _need_cluster()
    os.chmod(tmp_path, 0o755)
    data = make_reference(tmp_path / "data", n_q1=20)
    out = tmp_path / "out"
    export = make_export(tmp_path / "export", 3, data, out)
    certs = make_certificates(tmp_path / "certs")
    before = leftovers()
    killed: list[str] = []
    with tls_cluster(tmp_path / "cluster", certs, 4) as cluster:
        workers = {w.address: w for w in cluster.workers}
        done = threading.Event()

        def kill_whoever_grades_it() -> None:
            while not done.wait(0.1):
                try:
                    state = json.loads((out / "status.json").read_text()).get("submission_1000", {})
                except (OSError, ValueError):
                    continue
                if state.get("state") == "running" and state.get("worker") not in killed:
                    workers[state["worker"]].kill()
                    killed.append(state["worker"])

        killer = threading.Thread(target=kill_whoever_grades_it)
        killer.start()
        try:
            rc = batch.main([str(export), "--data", str(data), "--out", str(out), "--config",
                             str(config_with(tmp_path, "q1")), "--device", "cpu", "--dask", cluster.address,
                             "--dask-tls", str(certs)])
        finally:
            done.set()
            killer.join()
            clean_after_killed_graders(before)
    assert rc == 0 and len(killed) == 3, killed
    status = json.loads((out / "status.json").read_text())
    assert status["submission_1000"]["state"] == "failed"
    assert "the workers that ran it died (3 of them" in status["submission_1000"]["problem"]
    assert {status[n]["state"] for n in ("submission_1001", "submission_1002")} == {"graded"}
    with open(out / "scores.csv", newline="") as f:
        rows = {row["submission"]: row for row in csv.DictReader(f)}
    assert rows["submission_1000"]["total"] == "0" and rows["submission_1001"]["q1_score"] != ""
    report = json.loads((out / "submissions" / "submission_1000" / "results.json").read_text())
    assert "Not graded: grader problem: the workers that ran it died" in report["output"]


def test_tasks_no_worker_can_take_end_the_batch_after_a_bounded_wait(tmp_path: Path, one_student: list[str],
                                                                     capsys: pytest.CaptureFixture) -> None:
    """Graded on CUDA, each task asks for a GPU; on a cluster whose only worker has none, the batch waits
    --dask-wait seconds for one to join, then stops saying why, rather than waiting for ever."""
    _need_cluster()
    certs = make_certificates(tmp_path / "certs")
    argv = [a if a != "cpu" else "cuda" for a in one_student]
    with tls_cluster(tmp_path / "cluster", certs, 1) as cluster:
        started = time.monotonic()
        assert batch.main([*argv, "--dask", cluster.address, "--dask-tls", str(certs), "--dask-wait", "3"]) == 2
        waited = time.monotonic() - started
    err = capsys.readouterr().err
    assert "no worker of the cluster could take a task for 3 s (none offers a GPU: start GPU workers with " \
           "--resources GPU=1)" in err, err
    assert 3 <= waited < 60
    assert not list((tmp_path / "out" / "submissions").glob("*/results.json"))
