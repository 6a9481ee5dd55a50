"""What a batch task carries to a worker with no shared file system (grader/batch/carry.py): a submission
folder laid out again on the worker shows the grader the same entries (kinds, modes, sizes, link targets,
names), up to where the grader's upload check would refuse it, so the check says the same thing of both; and
the grading inputs laid out there give the batch's grading key, checks folder and all."""
from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from conftest import REFERENCE, REPO
from grader.batch.carry import Carried, CarryError, lay_out, pack_inputs, pack_submission, inputs_on_disk
from grader.batch.runs import grading_key
from grader.config import load_config
from grader.upload import MAX_PATH_BYTES, UploadError, UploadLimits, check_upload, stage_upload, unstage

LIMITS = UploadLimits(max_files=50, max_bytes=2**20, max_depth=6, max_file_bytes=2**19)


def shape(root: Path, content: bool = True) -> dict[bytes, tuple]:
    """Every entry under `root` as the grader's check sees it, by relative path: kind, permission bits, a
    regular file's size (and bytes), a link's target."""
    seen: dict[bytes, tuple] = {}
    stack = [b""]
    base = os.fsencode(root)
    while stack:
        relative = stack.pop()
        path = base + (b"/" + relative if relative else b"")
        st = os.lstat(path)
        kind = stat.S_IFMT(st.st_mode)
        detail: tuple = ()
        if kind == stat.S_IFREG:
            detail = (st.st_size, open(path, "rb").read() if content else b"")
        elif kind == stat.S_IFLNK:
            detail = (os.readlink(path),)
        seen[relative or b"."] = (kind, stat.S_IMODE(st.st_mode), *detail)
        if kind == stat.S_IFDIR:
            stack += [relative + b"/" + n if relative else n for n in os.listdir(path)]
    return seen


def carried_again(source: Path, tmp_path: Path) -> Path:
    carried = pack_submission("s", source, "digest", LIMITS)
    private = tmp_path / "worker"
    private.mkdir(mode=0o700, parents=True)
    return lay_out(carried, private / "s")


def refusal(root: Path) -> str:
    try:
        check_upload(root, LIMITS)
    except UploadError as exc:
        return str(exc)
    return "accepted"


def honest(root: Path) -> Path:
    (root / "models").mkdir(parents=True)
    (root / "predict.py").write_text("def predict_q1(images):\n    return images\n")
    (root / "models" / "q1.pt").write_bytes(os.urandom(100_000))
    (root / "models" / "notes.txt").write_text("private\n")
    os.chmod(root / "models" / "notes.txt", 0o600)
    os.chmod(root / "models", 0o750)
    (root / os.fsdecode(b"caf\xe9.txt")).write_bytes(b"not UTF-8 in its name")
    return root


def test_an_honest_folder_is_laid_out_entry_for_entry_and_stages_alike(tmp_path: Path) -> None:
    source = honest(tmp_path / "honest")
    again = carried_again(source, tmp_path)
    assert shape(again) == shape(source) and len(shape(source)) == 6
    assert refusal(again) == refusal(source) == "accepted"
    staged = [stage_upload(root, LIMITS) for root in (source, again)]
    try:
        assert shape(staged[0]) == shape(staged[1])
    finally:
        for folder in staged:
            unstage(folder)


def hostile_folders(root: Path) -> dict[str, Path]:
    """One fault each, of every kind the upload check refuses, beside honest files."""
    made = {}

    def folder(name: str) -> Path:
        made[name] = honest(root / name)
        return made[name]

    os.symlink("/etc/shadow", folder("absolute link") / "weights.pt")
    os.symlink("../../outside", folder("dangling link") / "models" / "q2.pt")
    os.mkfifo(folder("fifo") / "models" / "pipe")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(folder("socket") / "s"))
    deep = folder("deep")
    for i in range(40):
        deep = deep / "d"
    deep.mkdir(parents=True)
    long = folder("long path")
    for i in range(5):
        long = long / ("n" * 250)
    long.mkdir(parents=True)
    with open(folder("sparse") / "big.pt", "wb") as f:
        f.truncate(5 * 2**40)  # 5 TiB, all of it a hole
    many = folder("many files")
    for i in range(300):
        (many / f"f{i}").write_bytes(b"x")
    over = folder("over the total")
    for i in range(3):
        (over / f"chunk{i}").write_bytes(os.urandom(400_000))
    return made


def test_a_hostile_folder_is_refused_for_the_same_reason_where_it_is_laid_out(tmp_path: Path) -> None:
    for name, source in hostile_folders(tmp_path / "hostile").items():
        again = carried_again(source, tmp_path / name)
        said = refusal(source)
        assert said != "accepted" and refusal(again) == said, name
        if name in ("absolute link", "dangling link", "fifo", "socket", "sparse", "over the total"):
            # All of it carried; a file past the byte caps by its size alone, which is all the check reads.
            assert shape(again, content=False) == shape(source, content=False), name


def test_what_is_carried_is_bounded_by_the_caps(tmp_path: Path) -> None:
    folders = hostile_folders(tmp_path / "hostile")
    deep = pack_submission("s", folders["deep"], "d", LIMITS)
    assert max(item.path.count(b"/") for item in deep.items) == LIMITS.max_depth  # one level past: refused there
    many = pack_submission("s", folders["many files"], "d", LIMITS)
    assert len(many.items) == LIMITS.max_files + 2  # the top, and one entry past the cap
    long = pack_submission("s", folders["long path"], "d", LIMITS)
    assert max(len(item.path) for item in long.items) <= MAX_PATH_BYTES + 256
    sparse = {item.path: item for item in pack_submission("s", folders["sparse"], "d", LIMITS).items}
    assert sparse[b"big.pt"].content == b"" and sparse[b"big.pt"].size == 5 * 2**40
    over = pack_submission("s", folders["over the total"], "d", LIMITS).items
    assert sum(len(item.content) for item in over) <= LIMITS.max_bytes


def test_a_missing_submission_a_link_and_a_file_stay_what_they_were(tmp_path: Path) -> None:
    real = honest(tmp_path / "real")
    os.symlink(real, tmp_path / "linked")
    (tmp_path / "file").write_text("not a folder")
    for name in ("missing", "linked", "file"):
        again = carried_again(tmp_path / name, tmp_path / f"w-{name}")
        assert refusal(again) == refusal(tmp_path / name) != "accepted", name


@pytest.mark.skipif(os.geteuid() != 0, reason="a device node is made only by root")
def test_a_device_node_is_laid_out_as_one_of_no_device(tmp_path: Path) -> None:
    source = honest(tmp_path / "dev")
    os.mknod(source / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.chmod(source / "predict.py", 0o4755)
    again = carried_again(source, tmp_path)
    assert refusal(again) == refusal(source) == "null is a character device: only regular files and folders can be graded"
    assert os.lstat(again / "null").st_rdev == os.makedev(0, 0)
    assert stat.S_IMODE(os.lstat(again / "predict.py").st_mode) == 0o755  # no set-user bit on root's copy


def test_an_unreadable_file_is_the_batchs_problem_not_a_silent_gap(tmp_path: Path) -> None:
    source = honest(tmp_path / "s")
    os.unlink(source / "predict.py")
    os.mkfifo(source / "predict.py")  # the batch opens no pipe: swapped in, it is carried as a pipe
    assert pack_submission("s", source, "d", LIMITS).items
    if os.geteuid() != 0:
        os.chmod(source / "models" / "notes.txt", 0)
        with pytest.raises(CarryError, match="could not be read by the batch"):
            pack_submission("s", source, "d", LIMITS)


def test_inputs_laid_out_on_a_worker_give_the_batchs_grading_key(tmp_path: Path) -> None:
    course = tmp_path / "course" / "autograder"
    course.mkdir(parents=True)
    checks = tmp_path / "course" / "checks"
    checks.mkdir()
    (checks / "check_style.py").write_text("# an instructor's check\n")
    text = (REPO / "grader" / "config.toml").read_text().replace('checks = ""', 'checks = "../checks"', 1)
    (course / "config.toml").write_text(text)
    config = load_config(course / "config.toml")
    assert config.checks == checks
    inputs = pack_inputs(config, REFERENCE)
    laid_config, laid_data = inputs_on_disk(inputs, tmp_path / "worker")
    again = load_config(laid_config)
    assert again.checks is not None and (again.checks / "check_style.py").read_text() == "# an instructor's check\n"
    options = ["--device=cpu"]
    assert grading_key(again, laid_data, options) == grading_key(config, REFERENCE, options)
    assert stat.S_IMODE(os.stat(tmp_path / "worker").st_mode) == 0o700  # held-out labels: the worker's alone
    assert inputs_on_disk(inputs, tmp_path / "worker") == (laid_config, laid_data)  # once per worker
    (course / "config.toml").write_text(text + "\n# edited\n")
    assert pack_inputs(load_config(course / "config.toml"), REFERENCE).digest != inputs.digest


def test_carried_is_what_a_task_pickles(tmp_path: Path) -> None:
    import pickle

    carried = pack_submission("s", honest(tmp_path / "s"), "d", LIMITS)
    assert pickle.loads(pickle.dumps(carried)) == carried and isinstance(carried, Carried)
