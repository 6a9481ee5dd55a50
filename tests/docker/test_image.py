"""The Docker image, built and run for real: `make docker-test` (not part of `make test`: it builds a
several-GB image). No image registry is reachable from the build machines, so the base is a local
stand-in, a Debian minbase from debootstrap imported into Docker; only the BASE build argument differs
from the image users build. Each grade runs under Gradescope's default limits (0.5 CPU, 768 MB, no
network) through `make docker-grade`, and is compared with the same grade outside Docker."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

from conftest import REFERENCE, REPO, by_question, grade, make_reference
from grader.package import main as package

STAND_IN = os.environ.get("MP_GRADER_TEST_BASE", "mp-grader-base:bookworm")
IMAGE = "mp-grader:docker-test"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def _run(*cmd: str, timeout: float = 1800, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def _daemon() -> str | None:
    """Why no Docker daemon can be used here, or None."""
    if shutil.which("docker") is None:
        return "no docker command"
    if _run("docker", "info", timeout=60).returncode != 0:
        return "no Docker daemon answers (start one: dockerd &, as root)"
    return None


def _stand_in_base() -> str | None:
    """Import the stand-in base image if it is missing; why it cannot be had, or None."""
    if _run("docker", "image", "inspect", STAND_IN, timeout=60).returncode == 0:
        return None
    if os.geteuid() != 0 or shutil.which("debootstrap") is None:
        return f"no image {STAND_IN}, and debootstrap (as root) is needed to make it"
    with tempfile.TemporaryDirectory(dir="/var/tmp") as root:
        made = _run("debootstrap", "--variant=minbase", "bookworm", root, "http://deb.debian.org/debian")
        if made.returncode != 0:
            return f"debootstrap failed: {made.stderr[-500:]}"
        tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(["docker", "import", "-", STAND_IN], stdin=tar.stdout, capture_output=True, text=True)
        tar.wait()
        if imported.returncode != 0:
            return f"docker import failed: {imported.stderr[-500:]}"
    return None


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    for why in (_daemon(), _stand_in_base()):
        if why:
            pytest.skip(f"Docker test not run: {why}")
    started = time.monotonic()
    # Torch from PyPI (CUDA build): PyTorch's CPU index, the users' default, is out of reach here.
    ca = f"CA_BUNDLE={CA_BUNDLE}" if CA_BUNDLE.is_file() else "CA_BUNDLE="
    built = _run("make", "-C", str(REPO), "docker-image", f"IMAGE={IMAGE}", f"BASE={STAND_IN}", "TORCH_INDEX=", ca)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    size = _run("docker", "image", "inspect", "-f", "{{.Size}}", IMAGE).stdout.strip()
    print(f"\nimage {IMAGE} on {STAND_IN}: built in {time.monotonic() - started:.0f} s, {int(size) / 1e9:.2f} GB")
    yield IMAGE
    _run("docker", "image", "prune", "-f", timeout=300)  # the layers of earlier builds, untagged since


def docker_grade(image: str, submission: Path, results: Path, via_make: bool = True) -> tuple[dict, str]:
    """`make docker-grade` as a user types it after the first build, BASE and TORCH_INDEX not repeated: it
    brings `image` up to date with the build arguments it was built with (Docker's cache: no new base, no
    new torch). Or the same `docker run` by hand for an image made otherwise."""
    started = time.monotonic()
    if via_make:
        ran = _run("make", "-C", str(REPO), "docker-grade", f"IMAGE={image}", f"SUBMISSION={submission}",
                   f"DOCKER_RESULTS={results}", timeout=900)
        assert f"from BASE={STAND_IN} TORCH_INDEX= (not given: as {image} was built)" in ran.stdout, ran.stdout[-2000:]
    else:
        results.mkdir(parents=True)
        ran = _run("docker", "run", "--rm", "--cpus", "0.5", "--memory", "768m", "--network", "none",
                   "-v", f"{submission}:/autograder/submission:ro", "-v", f"{results}:/autograder/results",
                   image, "/autograder/run_autograder", timeout=900)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    print(f"docker-grade of {submission.name}: {time.monotonic() - started:.0f} s")
    return json.loads((results / "results.json").read_text()), ran.stdout


def _scores(report: dict) -> dict[str, float]:
    return {t["name"]: t["score"] for t in report["tests"]}


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The reference submission graded outside Docker, as `make grade` does."""
    rc, report = grade(REPO / "submission", REFERENCE, tmp_path_factory.mktemp("local") / "results.json")
    assert rc == 0
    return report


def test_the_reference_grade_in_the_container_equals_the_local_one(image: str, outside: dict, tmp_path: Path) -> None:
    inside, shown = docker_grade(image, REPO / "submission", tmp_path / "docker")
    assert _scores(inside) == _scores(outside) and sum(_scores(inside).values()) > 0
    assert inside["extra_data"]["metrics"] == outside["extra_data"]["metrics"]
    assert f"Total: {sum(_scores(inside).values()):g} / 50" in shown  # the terminal summary, as make grade's
    assert "memory limit is" in inside["output"]  # lowered to what the 768 MB container leaves, and said


def test_a_broken_submission_gets_its_message_and_the_other_question(image: str, outside: dict, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(REPO / "submission", broken)
    (broken / "predict.py").write_text((broken / "predict.py").read_text()
                                       + "\n\ndef predict_q1(images):\n    raise RuntimeError('forgot to load')\n")
    report, _ = docker_grade(image, broken, tmp_path / "docker")
    q = by_question(report)
    assert q["Q1"]["score"] == 0 and "predict_q1 raised RuntimeError: forgot to load" in q["Q1"]["output"]
    assert q["Q2"]["score"] == by_question(outside)["Q2"]["score"] > 0  # the reference's Q2, unchanged
    assert report["extra_data"]["metrics"]["q2"] == outside["extra_data"]["metrics"]["q2"]


HOSTILE = '''
import socket, torch
def attempt(what, action):
    try:
        action()
        print(what, "REACHED")
        return True
    except Exception as exc:
        print(what, "refused:", type(exc).__name__)
        return False

def predict_q1(images):
    import numpy as np
    stolen = {}
    def read():
        stolen["labels"] = np.load("/autograder/source/reference_data/q1/labels.npy")
    attempt("labels", read)
    attempt("network", lambda: socket.create_connection(("151.101.0.223", 443), timeout=5))
    attempt("dns", lambda: socket.getaddrinfo("pypi.org", 443))
    import glob
    named = []
    for path in glob.glob("/proc/[0-9]*/cmdline"):  # every process's command line is readable here
        try:
            named += [path] if b"submission_metadata" in open(path, "rb").read() else []
        except OSError:
            pass
    print("metadata path", "SEEN" if named else "hidden")
    out = torch.zeros(len(images), 10)
    if "labels" in stolen:
        out[:, 0] = 1  # would use them; a read at all is the failure
    return out

def predict_q2(images):
    n, _, h, w = images.shape
    return torch.zeros(n, 6, h, w)
'''


def test_a_hostile_submission_reads_no_labels_and_reaches_no_network(image: str, tmp_path: Path) -> None:
    hostile = tmp_path / "hostile"
    hostile.mkdir()
    (hostile / "predict.py").write_text(HOSTILE)
    report, _ = docker_grade(image, hostile, tmp_path / "docker")
    output = by_question(report)["Q1"]["output"]
    assert "labels refused: PermissionError" in output
    assert "network refused" in output and "dns refused" in output and "REACHED" not in output
    assert "metadata path hidden" in output  # run_autograder names it in the grader's environment, not its command line


def test_the_autograder_zip_works_as_gradescope_unpacks_it(image: str, tmp_path: Path) -> None:
    """Gradescope's own steps on the instructor's zip: unzip into /autograder/source, run setup.sh there,
    copy run_autograder to /autograder/. On the built image, so the install is already done (setup.sh
    must then finish quickly: it is run again, as Gradescope would run it on a fresh base)."""

    secret = make_reference(tmp_path / "secret", n_q1=30, n_q2=3, own=True)
    context = tmp_path / "context"
    context.mkdir()
    assert package(["autograder", "--reference", str(secret), "--out", str(context / "autograder.zip")]) == 0
    (context / "Dockerfile").write_text(f"""FROM {image}
RUN apt-get update -qq && apt-get install -y -qq unzip > /dev/null
COPY autograder.zip /tmp/
RUN rm -rf /autograder/source && mkdir /autograder/source && cd /autograder/source && unzip -q /tmp/autograder.zip \\
    && bash setup.sh && cp run_autograder /autograder/run_autograder
""")
    tag = f"{image}-zip"
    built = _run("docker", "build", "-t", tag, str(context))
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    report, _ = docker_grade(tag, REPO / "submission", tmp_path / "docker", via_make=False)
    metrics = report["extra_data"]["metrics"]
    assert metrics["q1"]["n"] == 30 and metrics["q2"]["n"] == 3  # the instructor's data, not the public set
    config = hashlib.sha256((REPO / "grader" / "config.toml").read_bytes()).hexdigest()
    assert report["extra_data"]["grader"]["config_sha256"] == config
    assert sum(t["score"] for t in report["tests"]) > 0


def test_grading_needs_no_writable_image_and_changes_no_mode(image: str, outside: dict, tmp_path: Path) -> None:
    """What student code must never read was closed when the image was built (/autograder/source 0700) and
    the users were made then too: the grade runs with the image's file system read-only (only /tmp and /run
    writable, as tmpfs), equals the grade outside, and no mode under /autograder/source differs after it."""
    results = tmp_path / "results"
    results.mkdir()
    listing = 'find /autograder/source -printf "%m %p\\n" | sort'
    script = (f"{listing} > /tmp/before && /autograder/run_autograder && {listing} > /tmp/after && "
              "diff /tmp/before /tmp/after && echo modes unchanged && stat -c 'source %a' /autograder/source")
    ran = _run("docker", "run", "--rm", "--read-only", "--tmpfs", "/tmp:rw,exec,size=1g,mode=1777", "--tmpfs", "/run",
               "--cpus", "0.5", "--memory", "768m", "--network", "none",
               "-v", f"{REPO / 'submission'}:/autograder/submission:ro", "-v", f"{results}:/autograder/results",
               image, "bash", "-c", script, timeout=900)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    assert "modes unchanged" in ran.stdout and "source 700" in ran.stdout, ran.stdout[-2000:]
    assert _scores(json.loads((results / "results.json").read_text())) == _scores(outside)
