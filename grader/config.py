"""The grading configuration: one frozen, typed object, validated on load with "expected X, got Y" messages."""
from __future__ import annotations

import dataclasses
import hashlib
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from grader.split import DEFAULT_SEED, PUBLIC_SEED
from grader.upload import UploadLimits
from grader.visibility import may_show

if sys.version_info >= (3, 11):
    import tomllib
else:  # Gradescope's default base image (Ubuntu 22.04) has Python 3.10
    import tomli as tomllib

DEFAULT_CONFIG = Path(__file__).with_name("config.toml")
VISIBILITIES = ("visible", "hidden", "after_due_date", "after_published")
KEEPS = ("best", "last")  # the earlier score that stands for a submission past the daily limit
DEVICES = ("auto", "cpu", "cuda")
OUTPUT_FORMATS = ("md", "text")  # Gradescope's output_format of the questions' tests
QUESTION_METRICS = {"q1": ("accuracy",), "q2": ("mIoU", "mAP")}
# Command-line flags that override a setting of every question.
OVERRIDES = {"--timeout": "time_limit", "--memory-limit": "memory_limit", "--output-limit": "output_limit"}
# Seconds of a run that are not the questions' own: the grader's start, reading the reference data, the
# instructor's checks and the reports (measured: about 2 s of the reference grade's 56 s at 0.5 CPU;
# the rest is room for the instructor's checks and a slow start).
RESERVE_SECONDS = 60


class ConfigError(ValueError):
    """The configuration is unusable; the message names the file and the key."""


@dataclass(frozen=True)
class Bound:
    """The allowed range of one numeric setting, declared once: the config file and the command-line
    overrides both check it."""

    kind: type  # int or float
    low: float
    inclusive: bool = True  # value >= low, else value > low
    high: float = math.inf  # value <= high

    def check(self, where: str, value: Any) -> Any:
        _check_type(where, value, int if self.kind is int else (int, float))
        value = self.kind(value)
        if not math.isfinite(value) or not (value >= self.low if self.inclusive else value > self.low) or value > self.high:
            what = "an integer" if self.kind is int else "a number"
            upper = f" and <= {self.high:g}" if math.isfinite(self.high) else ""
            raise ConfigError(f"{where}: expected {what} {'>=' if self.inclusive else '>'} {self.low:g}{upper}, "
                              f"got {value!r}")
        return value


@dataclass(frozen=True)
class QuestionConfig:
    key: str = field(metadata={"doc": "q1 or q2"})
    title: str = field(metadata={"doc": "test name shown on Gradescope; must start with Q1/Q2"})
    points: float = field(metadata={"doc": "maximum score", "bound": Bound(float, 0)})
    thresholds: Mapping[str, float] = field(metadata={"doc": "full-credit line per metric, in (0, 1]"})
    partial_credit: str = field(default="proportional", metadata={"doc": "proportional or none"})
    combine: str = field(default="min", metadata={"doc": "how several metric ratios combine: min or mean"})
    round_to: float = field(default=1.0, metadata={"doc": "partial credit is a multiple of this; 0 = exact",
                                                   "bound": Bound(float, 0)})
    rounding: str = field(default="nearest", metadata={"doc": "nearest, down or up"})
    visibility: str = field(default="visible", metadata={"doc": "Gradescope visibility of this test"})
    batch_size: int = field(default=100, metadata={"doc": "images per predict() call", "bound": Bound(int, 1)})
    time_limit: float = field(default=240.0, metadata={"doc": "seconds for the whole question: wall-clock alone, at the "
                                                              "CPU cap's rate beside other runs",
                                                       "bound": Bound(float, 0, inclusive=False)})
    output_limit: int = field(default=4000, metadata={"doc": "characters of student output kept",
                                                      "bound": Bound(int, 0)})
    memory_limit: int = field(default=2048, metadata={"doc": "MiB of anonymous + shared memory of the student's processes",
                                                      "bound": Bound(int, 64)})
    show_output: bool = field(default=True, metadata={"doc": "show the student's printed output in the test"})
    mode: str = field(default="code", metadata={"doc": "code: run predict(); predictions: score an uploaded .npy file"})
    predictions_file: str = field(default="", metadata={"doc": "the .npy file graded in predictions mode "
                                                               "(default Q1_label_predictions.npy, Q2_sseg_predictions.npy)"})
    private_fraction: float = field(default=0.0, metadata={"doc": "share of the images whose metrics decide the score "
                                                                  "but are shown only at private_visibility (0: no split)",
                                                           "bound": Bound(float, 0, high=0.95)})
    private_visibility: str = field(default="after_due_date", metadata={"doc": "when the private part's score is shown"})
    score_on: str = field(default="private", metadata={"doc": "what the thresholds apply to when split: private or all"})
    memorization_copies: float = field(default=0.0, metadata={
        "doc": "share of the images also graded as a copy with a few grey levels of noise, mixed in at secret "
               "positions and scored apart for staff: a lookup of public labels falls on the copies, a model does "
               "not (0: off)",
        "bound": Bound(float, 0, high=0.5)})
    memorization_line: float = field(default=0.03, metadata={
        "doc": "a drop of the metric from the originals to their copies above this is flagged for staff",
        "bound": Bound(float, 0, inclusive=False, high=1)})
    grace: str = field(default="none", metadata={"doc": "none, or interval: each full-credit line is lowered to the "
                                                         "lower end of its own 95 % interval at the number of images "
                                                         "graded (the same for every submission)"})

    @property
    def split(self) -> bool:
        return self.private_fraction > 0

    @property
    def memorization(self) -> bool:
        return self.memorization_copies > 0


@dataclass(frozen=True)
class GraderConfig:
    questions: Mapping[str, QuestionConfig]
    device: str = "auto"
    visibility: str = "visible"
    stdout_visibility: str = "visible"
    checks: Path | None = None
    upload_max_files: int = field(default=10_000, metadata={"bound": Bound(int, 1)})
    upload_max_mib: int = field(default=1024, metadata={"bound": Bound(int, 1)})
    upload_max_depth: int = field(default=32, metadata={"bound": Bound(int, 1)})
    upload_max_file_mib: int = field(default=100, metadata={"bound": Bound(int, 1)})
    # Gradescope's autograder timeout for the assignment (its default: 10 minutes): the question time
    # limits must fit inside it with RESERVE_SECONDS to spare, or Gradescope kills the run mid-question.
    time_budget: float = field(default=600.0, metadata={"bound": Bound(float, 0, inclusive=False)})
    # Valid submissions per rolling 24 hours (0: no limit), and which earlier score stands past it.
    daily_submission_limit: int = field(default=0, metadata={"bound": Bound(int, 0)})
    over_limit_keeps: str = "best"
    # The seed of the public/private split (grader/split.py): set your own to make it unguessable.
    split_seed: str = DEFAULT_SEED
    # How Gradescope shows each question's test: "md" (Markdown: tables per class) or "text" (the course's lines).
    output_format: str = "md"
    source: Path = DEFAULT_CONFIG
    sha256: str = ""  # of the config file's text, for audits of a regrade

    @property
    def max_score(self) -> float:
        return sum(q.points for q in self.questions.values())

    @property
    def public_seed_warning(self) -> str | None:
        """For staff: a split or a memorization probe seeded with the public default (students can compute
        the private part, or the probe's copies)."""
        secret = any(q.split or q.memorization for q in self.questions.values())
        return PUBLIC_SEED if secret and self.split_seed == DEFAULT_SEED else None

    @property
    def upload_markers(self) -> list[str]:
        """The files that mark the top of an upload: predict.py when any question runs code, else the
        prediction files."""
        if any(q.mode == "code" for q in self.questions.values()):
            return ["predict.py"]
        return [q.predictions_file for q in self.questions.values()]

    @property
    def upload_limits(self) -> UploadLimits:
        return UploadLimits(self.upload_max_files, self.upload_max_mib * 2**20, self.upload_max_depth,
                            self.upload_max_file_mib * 2**20)


def _bounds(cls: type) -> dict[str, Bound]:
    """The Bound of every numeric field of a config dataclass, by field name."""
    return {f.name: f.metadata["bound"] for f in dataclasses.fields(cls) if "bound" in f.metadata}


_CHOICES = {
    "partial_credit": ("proportional", "none"), "combine": ("min", "mean"),
    "rounding": ("nearest", "down", "up"), "visibility": VISIBILITIES, "mode": ("code", "predictions"),
    "private_visibility": VISIBILITIES, "score_on": ("private", "all"), "grace": ("none", "interval"),
}
# The same for the [grader] table.
_GRADER_CHOICES = {"device": DEVICES, "output_format": OUTPUT_FORMATS, "over_limit_keeps": KEEPS,
                   "visibility": VISIBILITIES, "stdout_visibility": VISIBILITIES}
# The course's own file names for prediction-file mode.
PREDICTION_FILES = {"q1": "Q1_label_predictions.npy", "q2": "Q2_sseg_predictions.npy"}


def _check_type(where: str, value: Any, expected: type | tuple[type, ...]) -> None:
    if isinstance(value, bool) or not isinstance(value, expected):
        names = " or ".join(t.__name__ for t in (expected if isinstance(expected, tuple) else (expected,)))
        raise ConfigError(f"{where}: expected {names}, got {value!r}")


def _question(path: Path, key: str, table: dict) -> QuestionConfig:
    fields = {f.name: f for f in dataclasses.fields(QuestionConfig) if f.name != "key"}
    for name in table:
        if name not in fields:
            raise ConfigError(f"{path}: unknown key [{key}].{name} (expected one of: {', '.join(fields)})")
    for name in ("title", "points", "thresholds"):
        if name not in table:
            raise ConfigError(f"{path}: [{key}] is missing '{name}'")
    where = lambda name: f"{path}: [{key}].{name}"  # noqa: E731
    values = dict(table)
    _check_type(where("title"), values["title"], str)
    if not values["title"].upper().startswith(key.upper()):
        raise ConfigError(f"{where('title')}: expected a name starting with '{key.upper()}', got {values['title']!r}")
    for name, bound in _bounds(QuestionConfig).items():
        if name in values:
            values[name] = bound.check(where(name), values[name])
    if "show_output" in values and not isinstance(values["show_output"], bool):
        raise ConfigError(f"{where('show_output')}: expected true or false, got {values['show_output']!r}")
    for name, choices in _CHOICES.items():
        if name in values and values[name] not in choices:
            raise ConfigError(f"{where(name)}: expected one of {', '.join(choices)}, got {values[name]!r}")
    values["predictions_file"] = values.get("predictions_file") or PREDICTION_FILES[key]
    _check_type(where("predictions_file"), values["predictions_file"], str)
    name = values["predictions_file"]
    if "/" in name or "\\" in name or name.startswith(".") or not name.endswith(".npy"):
        raise ConfigError(f"{where('predictions_file')}: expected a file name ending in .npy at the top of the "
                          f"submission, got {name!r}")
    thresholds = values["thresholds"]
    _check_type(where("thresholds"), thresholds, dict)
    known = QUESTION_METRICS[key]
    if not thresholds:
        raise ConfigError(f"{where('thresholds')}: expected at least one of {', '.join(known)}")
    for metric, threshold in thresholds.items():
        if metric not in known:
            raise ConfigError(f"{where('thresholds')}: unknown metric {metric!r} (expected one of: {', '.join(known)})")
        _check_type(f"{where('thresholds')}.{metric}", threshold, (int, float))
        if not 0 < threshold <= 1:
            raise ConfigError(f"{where('thresholds')}.{metric}: expected a fraction in (0, 1], got {threshold!r}")
    values["thresholds"] = MappingProxyType({m: float(t) for m, t in thresholds.items()})
    if values.get("memorization_copies", 0) > 0 and values.get("mode", "code") != "code":
        raise ConfigError(f"{where('memorization_copies')}: the memorization probe adds images to what predict() "
                          f"sees, so it needs mode = \"code\" (an uploaded predictions file has no rows for them): "
                          f"expected 0 with mode = {values['mode']!r}")
    if values.get("private_fraction", 0) > 0:
        private, shown = values.get("private_visibility", "after_due_date"), values.get("visibility", "visible")
        if private == "visible":
            raise ConfigError(f"{where('private_visibility')}: a split question's private part must not be visible at "
                              f"once (that would show the score it keeps for later): expected after_due_date, "
                              f"after_published or hidden, or private_fraction = 0")
        if not may_show(shown, private):
            raise ConfigError(f"{where('private_visibility')} = {private!r} would show the private part to readers that "
                              f"[{key}].visibility = {shown!r} keeps the question from: expected {shown!r} or 'hidden'")
    return QuestionConfig(key=key, **values)


def load_config(path: Path = DEFAULT_CONFIG) -> GraderConfig:
    """Read and validate a config file; raises ConfigError with the file and key in the message."""
    try:
        text = path.read_text()
        raw = tomllib.loads(text)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    allowed = {"grader", *QUESTION_METRICS}
    for name in raw:
        if name not in allowed:
            raise ConfigError(f"{path}: unknown table [{name}] (expected: {', '.join(sorted(allowed))})")
    grader = dict(raw.get("grader", {}))
    bounds = _bounds(GraderConfig)
    grader_keys = ("device", "visibility", "stdout_visibility", "checks", "over_limit_keeps", "split_seed", "output_format",
                   *bounds)
    for name in grader:
        if name not in grader_keys:
            raise ConfigError(f"{path}: unknown key [grader].{name} (expected one of: {', '.join(grader_keys)})")
        if name in bounds:
            grader[name] = bounds[name].check(f"{path}: [grader].{name}", grader[name])
        else:
            _check_type(f"{path}: [grader].{name}", grader[name], str)
    for name, choices in _GRADER_CHOICES.items():
        if name in grader and grader[name] not in choices:
            raise ConfigError(f"{path}: [grader].{name}: expected one of {', '.join(choices)}, got {grader[name]!r}")
    questions = {key: _question(path, key, raw[key]) for key in QUESTION_METRICS if key in raw}
    if not questions:
        raise ConfigError(f"{path}: no question configured (expected [q1] and/or [q2])")
    needed = sum(q.time_limit for q in questions.values()) + RESERVE_SECONDS
    budget = grader.get("time_budget", GraderConfig.time_budget)
    if needed > budget:
        parts = " + ".join(f"[{k}].time_limit {q.time_limit:g}" for k, q in questions.items())
        raise ConfigError(f"{path}: {parts} + {RESERVE_SECONDS} s for the grader itself = {needed:g} s, more than "
                          f"[grader].time_budget {budget:g} s (the assignment's autograder timeout on Gradescope): "
                          "lower the time limits, or raise the timeout in Gradescope's settings and time_budget here")
    checks = grader.pop("checks", "")
    checks_dir = (path.parent / checks).resolve() if checks else None
    if checks_dir is not None and not checks_dir.is_dir():
        raise ConfigError(f"{path}: [grader].checks: folder {checks_dir} does not exist")
    return GraderConfig(questions=MappingProxyType(questions), checks=checks_dir, source=path,
                        sha256=hashlib.sha256(text.encode()).hexdigest(), **grader)


def fit_memory(config: GraderConfig, available_mib: int | None, where: str) -> tuple[GraderConfig, list[str]]:
    """Lower each question's memory_limit to what the machine leaves the student (`available_mib`, None
    when unlimited), with a note for results.json: past it the kernel would kill at random, the grader
    included, instead of the grader stopping the student with a clear message."""
    if available_mib is None:
        return config, []
    notes, questions = [], dict(config.questions)
    for key, q in config.questions.items():
        if q.memory_limit > available_mib:
            questions[key] = dataclasses.replace(q, memory_limit=max(available_mib, 64))
            notes.append(f"Note: {key.upper()}'s memory limit is {questions[key].memory_limit} MiB, not the configured "
                         f"{q.memory_limit} MiB: that is what {where} leaves for your code.")
    return dataclasses.replace(config, questions=MappingProxyType(questions)), notes


def with_overrides(config: GraderConfig, device: str | None = None,
                   overrides: Mapping[str, float | int | None] = MappingProxyType({})) -> GraderConfig:
    """Merge command-line overrides, in this one place: `overrides` maps a flag of OVERRIDES to its value
    (None: not given), checked against the same bound as the config file's key."""
    bounds = _bounds(QuestionConfig)
    per_question: dict[str, Any] = {}
    for flag, value in overrides.items():
        if value is not None:
            name = OVERRIDES[flag]
            per_question[name] = bounds[name].check(flag, value)
    if per_question:
        questions = {k: dataclasses.replace(q, **per_question) for k, q in config.questions.items()}
        config = dataclasses.replace(config, questions=MappingProxyType(questions))
    if device is not None:
        if device not in DEVICES:
            raise ConfigError(f"--device: expected one of {', '.join(DEVICES)}, got {device!r}")
        config = dataclasses.replace(config, device=device)
    return config


# Shown by `make autograder` in lines of their own: not repeated among the settings off their defaults.
SUMMARISED = {"title", "points", "thresholds", "partial_credit", "time_limit", "memory_limit", "batch_size"}


def non_default_settings(config: GraderConfig) -> list[str]:
    """`[table].key = value` for every setting that is not at its default, so that an instructor can see what
    went into an autograder (a daily limit, a hidden question, a stdout visibility)."""
    changed = []
    for f in dataclasses.fields(GraderConfig):
        value = getattr(config, f.name)
        if f.name not in ("questions", "source", "sha256") and f.default is not dataclasses.MISSING and value != f.default:
            changed.append(f"[grader].{f.name} = {_toml(value)}")
    for key, question in config.questions.items():
        for f in dataclasses.fields(QuestionConfig):
            value = getattr(question, f.name)
            default = PREDICTION_FILES.get(key) if f.name == "predictions_file" else f.default
            if f.name not in SUMMARISED and f.name != "key" and value != default:
                changed.append(f"[{key}].{f.name} = {_toml(value)}")
    return changed


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (str, Path)):
        return f'"{value}"'
    return f"{value:g}" if isinstance(value, float) else str(value)
