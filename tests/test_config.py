"""The config file: defaults load, every mistake is refused with a message naming the key."""
from __future__ import annotations

from pathlib import Path

import pytest

from grader.config import DEFAULT_CONFIG, ConfigError, load_config, with_overrides


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
        ("batch_size = 500", "batch_size = 0", r"\[q1\].batch_size: expected an integer >= 1, got 0"),
        ("batch_size = 500", "batch_size = 2.5", r"\[q1\].batch_size: expected int, got 2.5"),
        ("time_limit = 600", "time_limit = 0", r"time_limit: expected seconds > 0"),
        ('partial_credit = "proportional"', 'partial_credit = "linear"', r"partial_credit: expected one of proportional, none"),
        ('device = "auto"', 'device = "tpu"', r"\[grader\].device: expected one of auto, cpu, cuda, got 'tpu'"),
        ('visibility = "visible"', 'visibility = "public"', r"visibility: expected one of visible, hidden"),
        ("points = 30", "points = 30\npoint = 3", r"unknown key \[q2\].point"),
        ("[q1]", "[q3]\n[q1]", r"unknown table \[q3\]"),
        ('checks = ""', 'checks = "no-such-folder"', r"\[grader\].checks: folder .* does not exist"),
        ('title = "Q1 Fashion-MNIST classification"', 'title = "Fashion"', r"expected a name starting with 'Q1'"),
        ("thresholds = { accuracy = 0.90 }", "thresholds = {}", r"expected at least one of accuracy"),
        ("show_output = true", 'show_output = "yes"', r"\[q1\].show_output: expected true or false, got 'yes'"),
        ("memory_limit = 4096", "memory_limit = 10", r"\[q1\].memory_limit: expected an integer >= 64, got 10"),
        ('title = "Q2 semantic segmentation"\n', "", r"\[q2\] is missing 'title'"),
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
    config = with_overrides(load_config(), device="cpu", timeout=12)
    assert config.device == "cpu"
    assert {q.time_limit for q in config.questions.values()} == {12.0}
    with pytest.raises(ConfigError, match="--timeout: expected a number > 0, got 0"):
        with_overrides(config, timeout=0)
    config = with_overrides(config, memory_limit=512, output_limit=0)
    assert {(q.memory_limit, q.output_limit) for q in config.questions.values()} == {(512, 0)}
    with pytest.raises(ConfigError, match="--memory-limit: expected a number > 63"):
        with_overrides(config, memory_limit=10)


def test_config_is_frozen() -> None:
    config = load_config()
    with pytest.raises(Exception):
        config.device = "cuda"  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.questions["q1"].thresholds["accuracy"] = 0.1  # type: ignore[index]
