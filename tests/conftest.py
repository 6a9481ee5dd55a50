"""Fixtures that rebuild the grading layout under a temporary folder, from the committed reference data."""
from __future__ import annotations

import functools
import json
import os
import shutil
import textwrap
from pathlib import Path
from typing import Iterator

import jsonschema
import numpy as np
import pytest

from grader.cli import main as grader_main
from grader.sandbox import SandboxError, prepare

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "reference_data"
SHARED_DATA = REPO.parent / "shared" / "data"
SCHEMA = json.loads((Path(__file__).with_name("gradescope_results.schema.json")).read_text())
# The Docker test builds a several-GB image: `make docker-test` runs it, `make test` leaves it out.
collect_ignore = [] if os.environ.get("MP_GRADER_DOCKER_TEST") == "1" else ["docker"]


INSTALL_CLOSED = [REPO / "grader", REFERENCE, REPO / ".git"]  # what `make protect` closes as root


@pytest.fixture(scope="session", autouse=True)
def closed_at_install() -> Iterator[None]:
    """As root, the checkout's protected folders closed for the session as set-up closes them (`make
    protect`): the grader refuses the user layer when they are open and never closes them itself. The
    modes are put back at the end, as found."""
    if os.geteuid() != 0:
        yield
        return
    modes = {p: p.stat().st_mode & 0o7777 for p in INSTALL_CLOSED if p.exists()}
    for path, mode in modes.items():
        path.chmod(mode & 0o700)
    try:
        yield
    finally:
        for path, mode in modes.items():
            path.chmod(mode)


def make_reference(root: Path, n_q1: int = 0, n_q2: int = 0, own: bool = False) -> Path:
    """A small reference set: the first images of the committed reference data, same layout. Those are public
    (Fashion-MNIST's t10k, the assignment's val): `own` changes every image a little (Q1: the lowest bit of
    each pixel; Q2: mirrored, with its label, and encoded anew), standing in for an instructor's own
    held-out set, which packaging requires (grader/public_data.py)."""
    if n_q1:
        (root / "q1").mkdir(parents=True)
        images = np.load(REFERENCE / "q1" / "images.npy")[:n_q1]
        np.save(root / "q1" / "images.npy", images ^ 1 if own else images)
        np.save(root / "q1" / "labels.npy", np.load(REFERENCE / "q1" / "labels.npy")[:n_q1])
        shutil.copy(REFERENCE / "q1" / "classes.txt", root / "q1")
    if n_q2:
        for sub in ("images", "labels"):
            (root / "q2" / sub).mkdir(parents=True)
        stems = sorted(p.stem for p in (REFERENCE / "q2" / "images").glob("*.jpg"))[:n_q2]
        for stem in stems:
            for sub, ext in (("images", "jpg"), ("labels", "png")):
                source, target = REFERENCE / "q2" / sub / f"{stem}.{ext}", root / "q2" / sub / f"{stem}.{ext}"
                if own:
                    from PIL import Image, ImageOps

                    with Image.open(source) as picture:
                        ImageOps.mirror(picture).save(target, quality=95)
                else:
                    shutil.copy(source, target)
        shutil.copy(REFERENCE / "q2" / "classes.txt", root / "q2")
    return root


def write_submission(root: Path, predict: str, **files: bytes | str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "predict.py").write_text(textwrap.dedent(predict))
    for name, content in files.items():
        path = root / name
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(textwrap.dedent(content))
    return root


def config_with(tmp_path: Path, questions: str = "q1 q2", **replacements: str) -> Path:
    """The default config, optionally limited to some questions and with text replaced."""
    text = (REPO / "grader" / "config.toml").read_text()
    if "q2" not in questions.split():
        text = text[: text.index("[q2]")]
    if "q1" not in questions.split():
        text = text[: text.index("[q1]")] + text[text.index("[q2]") :]
    for old, new in replacements.items():
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def grade(submission: Path, data: Path, results: Path, *extra: str) -> tuple[int, dict]:
    """Run the grader's CLI in-process; return its exit status and the validated results.json."""
    rc = grader_main(["--submission", str(submission), "--data", str(data), "--results", str(results),
                      "--device", "cpu", *extra])
    report = json.loads(results.read_text())
    jsonschema.validate(report, SCHEMA)
    return rc, report


def by_question(report: dict) -> dict[str, dict]:
    return {t["name"][:2]: t for t in report["tests"]}


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "fashion-mnist").is_dir():
        pytest.skip(f"needs the training data in {SHARED_DATA} (not part of a fresh clone)")
    return SHARED_DATA


# The strong layers hostile submissions run in (never the process layer): "namespace" is bubblewrap (with root
# also the separate user and, where it can be had, a memory cgroup); "user" is what default Docker and
# Gradescope allow, forced here with --memory-accounting processes.
LAYERS = {"namespace": ("--isolation", "namespace"), "user": ("--isolation", "user", "--memory-accounting", "processes")}


@functools.cache
def unavailable(layer: str) -> str | None:
    """Why `layer` cannot be had here, or None."""
    args = LAYERS[layer]
    memory = args[args.index("--memory-accounting") + 1] if "--memory-accounting" in args else "auto"
    try:
        sandbox = prepare(args[1], memory)
    except SandboxError as exc:
        return f"{layer} isolation unavailable: {exc}"
    sandbox.close()
    return None if sandbox.isolation == layer else f"{layer} isolation unavailable: {sandbox.note}"


@pytest.fixture(params=sorted(LAYERS))
def layer(request) -> str:
    """A strong isolation layer (each test runs once per layer)."""
    reason = unavailable(request.param)
    if reason:
        pytest.skip(reason)
    return request.param


def need(layer_name: str) -> None:
    reason = unavailable(layer_name)
    if reason:
        pytest.skip(reason)
