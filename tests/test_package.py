"""The two zips: the student's (files at the top, checked and tried first) and the instructor's autograder
(Gradescope's layout, from the working tree, refusing what cannot work there)."""
from __future__ import annotations

import shutil
import stat
import tempfile
import zipfile
from pathlib import Path

import pytest

from conftest import REFERENCE, REPO, config_with, make_reference, write_submission
from grader.package import main

GOOD = """
import torch
def predict_q1(images):
    return torch.zeros(len(images), 10)
def predict_q2(images):
    n, _, h, w = images.shape
    return torch.zeros(n, 6, h, w)
"""


def zipped(*argv: str) -> int:
    return main([str(a) for a in argv])


def names(path: Path) -> set[str]:
    with zipfile.ZipFile(path) as z:
        return set(z.namelist())


def test_the_reference_submission_zips_with_its_files_at_the_top(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "work"
    shutil.copytree(REPO / "submission", folder)
    for junk in ("__pycache__/predict.cpython-311.pyc", ".git/HEAD", ".ipynb_checkpoints/x.py", ".env", "old.pyc"):
        (folder / junk).parent.mkdir(parents=True, exist_ok=True)
        (folder / junk).write_text("junk")
    for i in range(30):  # a virtual environment inside: over the grader's 10,000-entry cap, but never zipped
        (folder / ".venv" / str(i)).mkdir(parents=True)
        for j in range(400):
            (folder / ".venv" / str(i) / f"{j}.py").touch()
    (folder / "notes").mkdir()
    (folder / "notes" / "ablation.txt").write_text("kept: not hidden")
    assert zipped("submission", folder, "--out", tmp_path / "s.zip") == 0
    kept = [p for p in (REPO / "submission").iterdir() if p.name != "__pycache__"]  # made by any local run
    expected = {p.name for p in kept} | {"notes/ablation.txt"}
    assert names(tmp_path / "s.zip") == expected
    out = capsys.readouterr().out
    assert "predict_q1: ran on 4 reference images" in out and "predict_q2: ran on 4 reference images" in out
    with zipfile.ZipFile(tmp_path / "s.zip") as z:
        assert z.read("predict.py") == (REPO / "submission" / "predict.py").read_bytes()


@pytest.mark.parametrize(("predict", "message"), [
    (GOOD.replace("def predict_q2", "def predict_q3"), "trial run of predict_q2 on 4 reference images failed: "
                                                       "predict.py has no function predict_q2(images)"),
    (GOOD.replace("torch.zeros(len(images), 10)", "torch.full((len(images), 10), float('nan'))"),
     "trial run of predict_q1 on 4 reference images failed: predict_q1 returned 40 NaN or infinite values"),
    (GOOD.replace("torch.zeros(n, 6, h, w)", "torch.zeros(n, h, w)"), "expected (4, 6, 224, 224)"),
])
def test_a_submission_that_would_fail_is_not_zipped(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                    predict: str, message: str) -> None:
    folder = write_submission(tmp_path / "sub", predict)
    assert zipped("submission", folder, "--out", tmp_path / "s.zip") == 2
    err = capsys.readouterr().err
    assert "\nnot zipped: " in err and message in err
    assert not (tmp_path / "s.zip").exists()


def test_refusals_before_any_code_runs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_submission(tmp_path / "outer" / "inner", GOOD)
    assert zipped("submission", tmp_path / "outer", "--out", tmp_path / "s.zip") == 2
    assert "no predict.py at its top (it is in inner/: give that folder instead)" in capsys.readouterr().err
    folder = write_submission(tmp_path / "big", GOOD, **{"weights.pt": b"\0" * (2 * 2**20)})
    config = config_with(tmp_path, **{"upload_max_file_mib = 100": "upload_max_file_mib = 1"})
    assert zipped("submission", folder, "--config", config, "--out", tmp_path / "s.zip") == 2
    assert "weights.pt is 2.0 MiB, more than the 1 MiB one file may have" in capsys.readouterr().err
    (folder / "weights.pt").unlink()
    (folder / "link").symlink_to("/etc/passwd")
    assert zipped("submission", folder, "--out", tmp_path / "s.zip") == 2
    assert "link is a symbolic link: put the file itself in the folder" in capsys.readouterr().err
    (folder / "link").unlink()
    (folder / "data").symlink_to(tmp_path, target_is_directory=True)
    assert zipped("submission", folder, "--out", tmp_path / "s.zip") == 2
    assert "data is a symbolic link" in capsys.readouterr().err
    assert not (tmp_path / "s.zip").exists()


def test_the_autograder_zip_has_gradescopes_layout_and_the_instructors_data(tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture) -> None:
    secret = make_reference(tmp_path / "secret", n_q1=30, n_q2=3, own=True)
    config = config_with(tmp_path, **{"accuracy = 0.90": "accuracy = 0.85",  # edits not committed
                                      "daily_submission_limit = 0": "daily_submission_limit = 3",
                                      "show_output = true": "show_output = false"})
    assert zipped("autograder", "--reference", secret, "--config", config, "--out", tmp_path / "a.zip") == 0
    out = capsys.readouterr().out
    assert "accuracy >= 0.85" in out and "q1: 30 images, q2: 3 images" in out and "checks: none" in out
    assert "settings not at their defaults: [grader].daily_submission_limit = 3; [q1].show_output = false" in out
    with zipfile.ZipFile(tmp_path / "a.zip") as z:
        listed = set(z.namelist())
        modes = {i.filename: i.external_attr >> 16 for i in z.infolist()}
        assert z.read("grader/config.toml") == config.read_bytes()
        assert z.read("reference_data/q1/labels.npy") == (secret / "q1" / "labels.npy").read_bytes()
    assert {"setup.sh", "run_autograder", "requirements.txt", "grader/cli.py", "reference_data/q2/labels/0.png"} <= listed
    assert modes["setup.sh"] & stat.S_IXUSR and modes["run_autograder"] & stat.S_IXUSR
    assert not [n for n in listed if n.startswith(("submission/", ".venv/", "tests/", ".git")) or "__pycache__" in n]
    assert len([n for n in listed if n.startswith("reference_data/q2/images/")]) == 3  # nothing of the public set


def test_the_autograder_zip_refuses_what_cannot_work_on_gradescope(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "a.zip"
    assert zipped("autograder", "--out", out) == 2
    assert "say which reference data to grade on" in capsys.readouterr().err
    too_long = config_with(tmp_path, **{"time_limit = 300": "time_limit = 900"})
    assert zipped("autograder", "--reference", REFERENCE, "--config", too_long, "--out", out) == 2
    assert "more than [grader].time_budget 600 s" in capsys.readouterr().err
    (tmp_path / "checks").mkdir()
    outside = config_with(tmp_path, **{'checks = ""': f'checks = "{tmp_path / "checks"}"'})
    assert zipped("autograder", "--reference", REFERENCE, "--config", outside, "--out", out) == 2
    assert "would not be in the zip where the config looks for it" in capsys.readouterr().err
    assert zipped("autograder", "--reference", tmp_path / "nowhere", "--out", out) == 2
    assert "no such folder" in capsys.readouterr().err
    assert not out.exists()


def test_a_checks_folder_inside_the_repository_goes_into_the_zip(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The trap: checks = "../examples/checks" worked locally and gave every student 0 / 0 on Gradescope."""
    text = (REPO / "grader" / "config.toml").read_text().replace('checks = ""', 'checks = "../examples/checks"')
    # Beside the real config (hidden, so no zip takes it), where the relative path means what it will in the zip.
    with tempfile.NamedTemporaryFile("w", dir=REPO / "grader", prefix=".test-", suffix=".toml") as f:
        f.write(text)
        f.flush()
        assert zipped("autograder", "--reference", REFERENCE, "--config", f.name, "--out", tmp_path / "a.zip",
                      "--allow-public") == 0
    assert "checks: examples/checks" in capsys.readouterr().out
    listed = names(tmp_path / "a.zip")
    assert "examples/checks/test_submission_checks.py" in listed


def test_a_split_with_the_public_seed_is_not_zipped(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """With the shipped seed, anyone with this source computes which images are private (#27): refused."""
    out = tmp_path / "a.zip"
    split = config_with(tmp_path, **{"private_fraction = 0.0": "private_fraction = 0.5"})
    assert zipped("autograder", "--reference", REFERENCE, "--config", split, "--out", out) == 2
    assert "split_seed is the public default" in capsys.readouterr().err and not out.exists()
    secret = tmp_path / "secret.toml"
    secret.write_text(split.read_text().replace('split_seed = "mp-grader"', 'split_seed = "a secret of the course"'))
    assert zipped("autograder", "--reference", REFERENCE, "--config", secret, "--out", out, "--allow-public") == 0
    assert out.exists()


def test_a_public_held_out_set_is_refused_unless_allowed_and_then_shouted(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture) -> None:
    """The committed reference data is Fashion-MNIST's t10k and the assignment's val set: a submission could
    ship their labels and score without a model (#27). Zipping it needs --allow-public, and the summary
    says so in capitals."""
    out = tmp_path / "a.zip"
    assert zipped("autograder", "--reference", REFERENCE, "--out", out) == 2
    err = capsys.readouterr().err
    assert "Q1: 100 % of its 10000 held-out images are Fashion-MNIST t10k images" in err
    assert "Q2: 100 % of its 100 held-out images are assignment segmentation val images" in err
    assert "--allow-public" in err and not out.exists()
    assert zipped("autograder", "--reference", REFERENCE, "--out", out, "--allow-public") == 0
    shouted = capsys.readouterr().out
    assert "WARNING: PUBLIC HELD-OUT DATA (--allow-public): Q1: 100 % OF ITS 10000" in shouted
    assert "WARNING: MEMORIZATION PROBE OFF FOR Q1" in shouted and "MEMORIZATION PROBE OFF FOR Q2" in shouted
    probed = config_with(tmp_path, "q1", **{"memorization_copies = 0.0": "memorization_copies = 0.1",
                                            'split_seed = "mp-grader"': 'split_seed = "a secret of the course"'})
    assert zipped("autograder", "--reference", REFERENCE, "--config", probed, "--out", out, "--allow-public") == 0
    shouted = capsys.readouterr().out
    assert "memorization probe on q1: 0.1 of the images copied" in shouted and "PROBE OFF" not in shouted


def test_a_trial_run_that_cannot_start_says_why_and_leaves_nothing(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Another grade holding the student user (a refusal of the sandbox's) was a traceback, and the staged copy
    of the submission stayed in the temporary folder."""
    import grader.sandbox
    from grader.sandbox import SandboxError

    def refused(*args: object, **kwargs: object) -> None:
        raise SandboxError("another grading run is using the user 'grader-student'")

    monkeypatch.setattr(grader.sandbox, "prepare", refused)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    folder = write_submission(tmp_path / "mine", "def predict_q1(images):\n    return images.flatten(1)[:, :10]\n")
    assert zipped("submission", folder, "--out", tmp_path / "s.zip") == 2
    assert "the trial run could not start: another grading run is using the user" in capsys.readouterr().err
    assert not list(tmp_path.glob("grader-upload-*")) and not (tmp_path / "s.zip").exists()
