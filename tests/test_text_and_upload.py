"""Student text made safe to show, and the upload checks, as pure functions on small inputs."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import unicodedata
from pathlib import Path

import pytest

from grader.runner import OutputTrim
from grader.text import printable
from grader.upload import UploadError, UploadLimits, check_upload, stage_upload, unstage

LIMITS = UploadLimits(max_files=20, max_bytes=1000, max_depth=3)


def shown_safely(text: str, newlines: bool) -> bool:
    """Independent check: nothing left that a terminal or a JSON reader would treat specially."""
    allowed = {"\n", "\t"} if newlines else set()
    for ch in text:
        category = unicodedata.category(ch)
        bidi = ch in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
        if ch not in allowed and (category in ("Cc", "Cs", "Zl", "Zp") or bidi):
            return False
    return True


@pytest.mark.parametrize("newlines", [True, False])
def test_printable_escapes_every_control_character_and_surrogate(newlines: bool) -> None:
    every = "".join(chr(c) for c in range(0x0, 0x3000)) + "\ud800\udcff"
    out = printable(every, name=not newlines)
    assert shown_safely(out, newlines)
    out.encode("utf-8")  # valid UTF-8: no lone surrogate survived
    assert printable("plain text, ünïcode, 数字") == "plain text, ünïcode, 数字"
    assert printable("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert printable("line\nnext\ttab", name=True) == "line\\nnext\\ttab"
    assert printable("line\nnext") == "line\nnext"


def test_bytes_that_are_not_utf8_are_escaped() -> None:
    def shown(data: bytes) -> str:
        trim = OutputTrim(1000)
        trim.feed(data)
        return trim.text()

    assert shown(b"ok \xff\xfe \xe2\x82\xac") == "ok \\xff\\xfe \u20ac"
    assert shown("\u202eevil".encode()) == "\\u202eevil"
    assert printable(b"name\xff".decode("utf-8", "surrogateescape"), name=True) == "name\\xff"


@pytest.mark.parametrize("limit", [0, 1, 2, 10, 101])
def test_output_is_trimmed_by_characters(limit: int) -> None:
    text = "".join(chr(0x00E9 + i % 50) for i in range(5000))  # two bytes each in UTF-8
    trim = OutputTrim(limit)
    data = text.encode()
    for i in range(0, len(data), 333):  # chunks that split characters
        trim.feed(data[i : i + 333])
    half = limit // 2
    head, _, tail = trim.text().partition("\n[... ")
    assert head == text[:half]
    tail = tail.split(" ...]\n", 1)[1] if tail else ""
    assert tail == (text[len(text) - half:] if half else "")
    assert f"[... {len(data) - 4 * half} bytes of output left out ...]" in trim.text()


def test_short_output_is_kept_whole() -> None:
    trim = OutputTrim(100)
    trim.feed(("é" * 100).encode())
    assert trim.text() == "é" * 100


def tree(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def test_a_plain_upload_is_staged_byte_for_byte(tmp_path: Path) -> None:
    upload = tree(tmp_path / "upload", {"predict.py": b"x = 1\n", "models/w.bin": bytes(range(256)), "a/b/c.txt": b"c"})
    staged = stage_upload(upload, LIMITS)
    try:
        copied = {str(p.relative_to(staged)): p.read_bytes() for p in staged.rglob("*") if p.is_file()}
        assert copied == {"predict.py": b"x = 1\n", "models/w.bin": bytes(range(256)), "a/b/c.txt": b"c"}
        assert oct(staged.stat().st_mode & 0o777) == "0o700"  # no reader named: this process's user alone
        assert all(oct(p.stat().st_mode & 0o777) == "0o644" for p in staged.rglob("*") if p.is_file())
    finally:
        unstage(staged)
    assert not staged.parent.exists()


def test_a_staged_upload_is_the_student_users_alone_and_a_killed_graders_goes(tmp_path: Path) -> None:
    """Staged for the student user's copy step, an upload is readable by that user and root only; a staging
    folder of that user's that a killed grader left (its submission inside) is gone with the next staging,
    which holds that user's lock; another user's stays."""
    if os.geteuid() != 0:
        pytest.skip("staging for another user is root's")
    from grader.sandbox import DEFAULT_USER, ensure_user
    from grader.sandbox.users import KILLER_USER

    uid, gid = ensure_user(DEFAULT_USER)
    left = Path(tempfile.mkdtemp(prefix=f"grader-upload-{uid}-"))  # as a grader killed mid-grade left it
    (left / "weights.pt").write_bytes(b"the last student's")
    others = Path(tempfile.mkdtemp(prefix=f"grader-upload-{uid}0-"))
    upload = tree(tmp_path / "upload", {"predict.py": b"x = 1\n"})
    os.chmod(tmp_path, 0o755)
    os.chmod(upload, 0o755)
    staged = stage_upload(upload, LIMITS, (uid, gid))
    try:
        st, top = staged.stat(), staged.parent.stat()
        assert (oct(st.st_mode & 0o777), st.st_uid, st.st_gid) == ("0o750", 0, gid)
        # root's alone at the top of /tmp, so the sweep of the student's leftovers (by owner or group) leaves it
        assert (oct(top.st_mode & 0o777), top.st_uid, top.st_gid) == ("0o711", 0, 0)
        assert not left.exists() and others.exists()

        def reads(user: str) -> bool:
            return subprocess.run(["runuser", "-u", user, "--", "cat", str(staged / "predict.py")],
                                  capture_output=True).returncode == 0

        assert reads(DEFAULT_USER) and not reads(KILLER_USER)
    finally:
        unstage(staged)
        shutil.rmtree(others)


@pytest.mark.parametrize("case, message", [
    ("too_many", "more than 20 files and folders"),
    ("too_big", "add up to more than 1000 bytes (reached at big)"),
    ("too_deep", "nest deeper than 3 levels"),
    ("symlink", "link is a symbolic link: only regular files and folders can be graded (upload the file itself)"),
    ("fifo", "pipe is a named pipe (FIFO)"),
    ("socket", "sock is a socket"),
])
def test_uploads_outside_the_caps_are_refused(tmp_path: Path, case: str, message: str) -> None:
    import socket

    upload = tree(tmp_path / "upload", {"predict.py": b""})
    if case == "too_many":
        tree(upload, {f"f{i}": b"" for i in range(25)})
    elif case == "too_big":
        tree(upload, {"big": b"x" * 1001})
    elif case == "too_deep":
        tree(upload, {"a/b/c/d/e.py": b""})
    elif case == "symlink":
        (upload / "link").symlink_to("predict.py")
    elif case == "fifo":
        os.mkfifo(upload / "pipe")
    elif case == "socket":
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(upload / "sock"))
    staged_before = set(Path(tempfile.gettempdir()).glob("grader-upload-*"))
    with pytest.raises(UploadError) as caught:
        stage_upload(upload, LIMITS)
    assert message in str(caught.value)
    assert set(Path(tempfile.gettempdir()).glob("grader-upload-*")) == staged_before  # refused before any copy


def test_a_missing_upload_is_the_students_error(tmp_path: Path) -> None:
    with pytest.raises(UploadError, match="no submission was found"):
        check_upload(tmp_path / "nothing", LIMITS)


def test_one_file_over_its_cap_is_refused_naming_it(tmp_path: Path) -> None:
    (tmp_path / "predict.py").write_text("x = 1\n")
    (tmp_path / "weights.pt").write_bytes(b"\0" * 600)
    limits = UploadLimits(max_files=20, max_bytes=1000, max_depth=3, max_file_bytes=500)
    with pytest.raises(UploadError, match=r"^weights.pt is 0.0 MiB, more than the 500 bytes one file may have$"):
        check_upload(tmp_path, limits)
    check_upload(tmp_path, LIMITS)  # no per-file cap: the 606 bytes fit the total
