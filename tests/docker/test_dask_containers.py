"""#29's test across machines, on this one: a class graded on a Dask cluster of containers from the project's
image (cluster/Dockerfile: a scheduler and three workers on a Docker network of their own, each worker under
CPU and memory limits, no volume shared with the batch or with each other, certificates copied in), one
worker killed with `docker kill` while it grades; every score equals a `--jobs 1` batch's on this machine.
The batch itself runs here, as an instructor's machine would, reaching the scheduler over TLS. Part of
`make docker-test`; the times it prints are the throughput docs/benchmarks.md reports."""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from cluster_fixture import kill_mid_grade, make_certificates
from conftest import REPO, make_reference, unavailable
from export_fixture import kind_of, make_export
from test_batch import N, _config, _rows, without_seconds
from test_image import _run, image  # noqa: F401  (the image fixture)
from grader import batch

CLUSTER_IMAGE = "mp-grader-cluster:docker-test"
WORKERS = 3
# The three workers' CPUs fit this 2-core machine's; each grades one submission at a time, at its share.
WORKER_LIMITS = ["--cpus", "0.6", "--memory", "1500m"]
# What the namespace layer and its cgroups need inside a container (cluster/worker says why).
WORKER_RIGHTS = ["--cap-add", "SYS_ADMIN", "--cap-add", "SYS_PTRACE", "--security-opt", "seccomp=unconfined", "--security-opt",
                 "apparmor=unconfined", "--security-opt", "systempaths=unconfined", "--cgroupns", "private"]
TLS = ["--tls-ca-file", "/certs/ca.pem", "--tls-cert", "/certs/cert.pem", "--tls-key", "/certs/key.pem"]


def _ok(ran) -> str:
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-2000:]
    return ran.stdout.strip()


@pytest.fixture(scope="module")
def cluster(image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:  # noqa: F811
    """The scheduler (its TLS port published on this machine's loopback) and the workers, as containers."""
    if os.geteuid() != 0:
        pytest.skip("the --jobs 1 batch it is compared with runs hostile submissions, which needs root here")
    started = time.monotonic()
    _ok(_run("docker", "build", "-f", str(REPO / "cluster" / "Dockerfile"), "--build-arg", f"IMAGE={image}",
             "-t", CLUSTER_IMAGE, str(REPO), timeout=1800))
    print(f"\n{CLUSTER_IMAGE}: built in {time.monotonic() - started:.0f} s")
    tag = f"mpg-{os.getpid()}"
    certs = make_certificates(tmp_path_factory.mktemp("certs"), ("IP:127.0.0.1", f"DNS:{tag}-scheduler"))
    _ok(_run("docker", "network", "create", tag))
    names: list[str] = []
    try:
        def container(name: str, *argv: str) -> str:
            """Create it, copy the course's certificates in (not a volume), start it."""
            _ok(_run("docker", "create", "--name", name, "--network", tag, *argv))
            names.append(name)
            _ok(_run("docker", "cp", f"{certs}/.", f"{name}:/certs"))
            _ok(_run("docker", "start", name))
            return name

        # A task counts as lost after 3 workers died running it; a worker holds one task at a time.
        container(f"{tag}-scheduler", "-p", "127.0.0.1::8786", "-e", "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES=2",
                  "-e", "DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION=1.0", CLUSTER_IMAGE,
                  "dask", "scheduler", "--protocol", "tls", "--port", "8786", "--no-dashboard", *TLS)
        port = _ok(_run("docker", "port", f"{tag}-scheduler", "8786")).splitlines()[0].rsplit(":", 1)[1]
        workers = {}
        for i in range(WORKERS):
            name = container(f"{tag}-w{i}", *WORKER_LIMITS, *WORKER_RIGHTS, CLUSTER_IMAGE, "mp-grader-worker",
                             f"tls://{tag}-scheduler:8786", "--nthreads", "1", "--no-nanny", "--no-dashboard",
                             "--name", f"w{i}", *TLS)
            deadline = time.monotonic() + 120
            while "Registered to:" not in (log := _run("docker", "logs", name)).stderr + log.stdout:
                assert time.monotonic() < deadline, f"worker {name} did not register: {log.stderr[-2000:]}"
                time.sleep(0.5)
            workers[_ok(_run("docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                             name))] = name
        yield {"address": f"tls://127.0.0.1:{port}", "certs": certs, "workers": workers}
    finally:
        for name in names:
            _run("docker", "rm", "-f", name)
        _run("docker", "network", "rm", tag)


def test_a_class_on_worker_containers_that_lose_one_gets_the_scores_of_jobs_1(cluster: dict,
                                                                                 tmp_path: Path) -> None:
    reason = unavailable("namespace")
    if reason:
        pytest.skip(f"the --jobs 1 batch runs hostile submissions only in the namespace layer: {reason}")
    os.chmod(tmp_path, 0o755)
    data = make_reference(tmp_path / "data", n_q1=50, n_q2=2)
    export = make_export(tmp_path / "export", N, data, tmp_path / "out")
    common = [str(export), "--data", str(data), "--config", str(_config(tmp_path)), "--device", "cpu"]

    started = time.monotonic()
    assert batch.main([*common, "--out", str(tmp_path / "serial"), "--jobs", "1"]) == 0
    serial = time.monotonic() - started

    honest = {f"submission_{1000 + i}" for i in range(N) if kind_of(i) == "honest"}

    def kill(address: str) -> bool:
        name = cluster["workers"].get(address.split("://")[-1].rsplit(":", 1)[0])
        return name is not None and _run("docker", "kill", name).returncode == 0

    out = tmp_path / "cluster"
    killed: dict = {}
    killer = threading.Thread(target=lambda: killed.update(kill_mid_grade(out / "status.json", honest, kill, after=2.0)))
    killer.start()
    started = time.monotonic()
    try:
        rc = batch.main([*common, "--out", str(out), "--dask", cluster["address"], "--dask-tls", str(cluster["certs"])])
    finally:
        on_cluster = time.monotonic() - started
        killer.join()
    print(f"\n{N} submissions: --jobs 1 here {serial:.0f} s; {WORKERS} worker containers at 0.6 CPU each, one "
          f"killed {killed.get('worker')} 2 s into {killed.get('name')}: {on_cluster:.0f} s "
          f"({serial / on_cluster:.2f}x)")
    assert rc == 0 and killed, killed
    assert without_seconds(_rows(out)) == without_seconds(_rows(tmp_path / "serial"))
    final = json.loads((out / "status.json").read_text())
    assert {name: state["lost"] for name, state in final.items() if "lost" in state} == {killed["name"]: killed["worker"]}
