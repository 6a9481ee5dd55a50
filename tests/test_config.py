"""The config file: defaults load, every mistake is refused with a message naming the key."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from grader.config import fit_memory, DEFAULT_CONFIG, OVERRIDES, ConfigError, load_config, with_overrides


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def edited(tmp_path: Path, old: str, new: str) -> Path:
    text = DEFAULT_CONFIG.read_text()
    assert old in text, old
    return write(tmp_path, text.replace(old, new, 1))


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("points = 20", "points = -20", r"\[q1\].points: expected a number >= 0, got -20"),
        ("points = 20", 'points = "20"', r"\[q1\].points: expected int or float, got '20'"),
        ("accuracy = 0.90", "accuracy = 90", r"thresholds.accuracy: expected a fraction in \(0, 1\], got 90"),
        ("accuracy = 0.90", "accuracy = 0", r"expected a fraction in \(0, 1\], got 0"),
        ("mIoU = 0.55", "miou = 0.55", r"unknown metric 'miou' \(expected one of: mIoU, mAP\)"),
        ("batch_size = 100", "batch_size = 0", r"\[q1\].batch_size: expected an integer >= 1, got 0"),
        ("batch_size = 100", "batch_size = 2.5", r"\[q1\].batch_size: expected int, got 2.5"),
        ("time_limit = 240", "time_limit = 0", r"\[q1\].time_limit: expected a number > 0, got 0.0"),
        ('partial_credit = "proportional"', 'partial_credit = "linear"', r"partial_credit: expected one of proportional, none"),
        ('device = "auto"', 'device = "tpu"', r"\[grader\].device: expected one of auto, cpu, cuda, got 'tpu'"),
        ('visibility = "visible"', 'visibility = "public"', r"visibility: expected one of visible, hidden"),
        ("points = 30", "points = 30\npoint = 3", r"unknown key \[q2\].point"),
        ("[q1]", "[q3]\n[q1]", r"unknown table \[q3\]"),
        ('checks = ""', 'checks = "no-such-folder"', r"\[grader\].checks: folder .* does not exist"),
        ('title = "Q1 Fashion-MNIST classification"', 'title = "Fashion"', r"expected a name starting with 'Q1'"),
        ("thresholds = { accuracy = 0.90 }", "thresholds = {}", r"expected at least one of accuracy"),
        ("show_output = true", 'show_output = "yes"', r"\[q1\].show_output: expected true or false, got 'yes'"),
        ("memory_limit = 2048", "memory_limit = 10", r"\[q1\].memory_limit: expected an integer >= 64, got 10"),
        ('title = "Q2 semantic segmentation"\n', "", r"\[q2\] is missing 'title'"),
        ("upload_max_files = 10000", "upload_max_files = 0", r"\[grader\].upload_max_files: expected an integer >= 1, got 0"),
        ("upload_max_mib = 1024", "upload_max_mib = 1.5", r"\[grader\].upload_max_mib: expected int, got 1.5"),
        ("upload_max_file_mib = 100", "upload_max_file_mib = 0", r"\[grader\].upload_max_file_mib: expected an integer >= 1"),
        ("time_budget = 600", "time_budget = 0", r"\[grader\].time_budget: expected a number > 0, got 0.0"),
        # Gradescope kills a run past its timeout, with no results at all: refused before any upload.
        ("time_limit = 300", "time_limit = 301",
         r"\[q1\].time_limit 240 \+ \[q2\].time_limit 301 \+ 60 s for the grader itself = 601 s, more than "
         r"\[grader\].time_budget 600 s"),
        ("time_budget = 600", "time_budget = 599", r"= 600 s, more than \[grader\].time_budget 599 s"),
    ],
)
def test_mistakes_are_refused(tmp_path: Path, old: str, new: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(edited(tmp_path, old, new))


def test_syntax_error_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[q1\n"))
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="no question configured"):
        load_config(write(tmp_path, "[grader]\n"))


def test_one_question_only(tmp_path: Path) -> None:
    text = DEFAULT_CONFIG.read_text()
    config = load_config(write(tmp_path, text[: text.index("[q2]")]))
    assert list(config.questions) == ["q1"] and config.max_score == 20


def test_overrides_merge_in_one_place() -> None:
    config = with_overrides(load_config(), device="cpu", overrides={"--timeout": 12, "--memory-limit": None})
    assert config.device == "cpu"
    assert {q.time_limit for q in config.questions.values()} == {12.0}
    config = with_overrides(config, overrides={"--memory-limit": 512, "--output-limit": 0})
    assert {(q.memory_limit, q.output_limit) for q in config.questions.values()} == {(512, 0)}


@pytest.mark.parametrize(("flag", "key", "bad", "good"), [
    ("--timeout", "time_limit", 0, 0.5), ("--memory-limit", "memory_limit", 63, 64), ("--output-limit", "output_limit", -1, 0),
])
def test_overrides_have_the_config_files_bounds(tmp_path: Path, flag: str, key: str, bad: float, good: float) -> None:
    """The same value is refused (or accepted) on the command line and in the file, with one message."""
    def text(value: float) -> str:  # q1's key set to value
        return re.sub(rf"^{key} = .*$", f"{key} = {value}", DEFAULT_CONFIG.read_text(), count=1, flags=re.M)

    with pytest.raises(ConfigError, match=rf"\[q1\].{key}: expected .* got {bad}") as in_file:
        load_config(write(tmp_path, text(bad)))
    with pytest.raises(ConfigError, match=f"^{flag}: expected .* got {bad}") as on_line:
        with_overrides(load_config(), overrides={flag: bad})
    assert str(in_file.value).split(": expected")[1] == str(on_line.value).split(": expected")[1]
    assert getattr(load_config(write(tmp_path, text(good))).questions["q1"], key) == good
    assert with_overrides(load_config(), overrides={flag: good}).questions["q2"] == \
        dataclasses.replace(load_config().questions["q2"], **{key: good})


def test_every_override_is_a_flag() -> None:
    from grader.cli import get_args_parser

    flags = {o for action in get_args_parser()._actions for o in action.option_strings}
    assert set(OVERRIDES) <= flags


def test_config_is_frozen() -> None:
    config = load_config()
    with pytest.raises(Exception):
        config.device = "cuda"  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.questions["q1"].thresholds["accuracy"] = 0.1  # type: ignore[index]


def test_a_longer_time_budget_admits_longer_limits(tmp_path: Path) -> None:
    text = DEFAULT_CONFIG.read_text().replace("time_budget = 600", "time_budget = 1200")
    config = load_config(write(tmp_path, text.replace("time_limit = 300", "time_limit = 900")))
    assert config.time_budget == 1200 and config.questions["q2"].time_limit == 900


def test_memory_limits_are_lowered_to_what_the_machine_leaves() -> None:
    config = load_config()  # 2048 MiB each
    same, notes = fit_memory(config, None, "the container")
    assert same == config and notes == []
    same, notes = fit_memory(config, 4000, "the container")
    assert same == config and notes == []
    lowered, notes = fit_memory(config, 600, "the container")
    assert {q.memory_limit for q in lowered.questions.values()} == {600}
    assert notes[0] == ("Note: Q1's memory limit is 600 MiB, not the configured 2048 MiB: "
                        "that is what the container leaves for your code.")
    assert len(notes) == 2 and lowered.questions["q1"].time_limit == config.questions["q1"].time_limit
