"""The daily submission limit, from Gradescope's /autograder/submission_metadata.json.

Gradescope has no limit of its own; its documented way is for the autograder to count the earlier
submissions in `previous_submissions` and, past the limit, to report an earlier score instead of grading.
A submission counts as valid unless it ended in an autograder error or was itself past the limit (its
results.json says so under extra_data.submission_limit). The metadata is Gradescope's, outside the upload:
the student cannot write it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Collection

from grader.text import printable
from grader.visibility import TOP_OUTPUT, VISIBILITIES, VISIBLE, number, visible_score

WINDOW = timedelta(hours=24)


class MetadataError(ValueError):
    """submission_metadata.json cannot be read as Gradescope documents it."""


@dataclass(frozen=True)
class Earlier:
    """One valid earlier submission."""

    time: datetime
    score: float
    results: dict | None


@dataclass(frozen=True)
class LimitCheck:
    over: bool
    counted: int  # valid submissions in the 24 hours before this one
    limit: int
    kept: Earlier | None = None  # the earlier result that stands, when over
    next_at: datetime | None = None  # when the oldest counted one leaves the window

    @property
    def record(self) -> dict:
        """What results.json keeps, so that later submissions can tell this one's status."""
        return {"over_limit": self.over, "valid_in_24h": self.counted + (0 if self.over else 1), "limit": self.limit}


def _time(value: object, where: str) -> datetime:
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise MetadataError(f"{where}: not an ISO 8601 time: {str(value)[:40]!r}") from None
    if moment.tzinfo is None:
        raise MetadataError(f"{where}: a time without a time zone: {str(value)[:40]!r}")
    return moment


def _valid(entry: dict) -> bool:
    if entry.get("autograder_error"):
        return False
    results = entry.get("results")
    extra = results.get("extra_data") if isinstance(results, dict) else None
    record = extra.get("submission_limit") if isinstance(extra, dict) else None
    return not (isinstance(record, dict) and record.get("over_limit"))


def _score(entry: dict) -> float:
    results = entry.get("results")
    if isinstance(results, dict) and isinstance(results.get("score"), (int, float)):
        return number(results["score"])
    if isinstance(results, dict) and isinstance(results.get("tests"), list):
        return sum(number(t.get("score")) for t in results["tests"] if isinstance(t, dict))
    return number(entry.get("score"))


def read_metadata(path: Path) -> tuple[datetime, list[Earlier]]:
    """(this submission's time, its valid earlier submissions, oldest first)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise MetadataError(f"{path}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("previous_submissions", []), list):
        raise MetadataError(f"{path}: expected an object with a list previous_submissions")
    now = _time(data.get("created_at"), f"{path}: created_at")
    earlier = []
    for i, entry in enumerate(data.get("previous_submissions", [])):
        if not isinstance(entry, dict):
            raise MetadataError(f"{path}: previous_submissions[{i}] is not an object")
        if _valid(entry):
            results = entry.get("results") if isinstance(entry.get("results"), dict) else None
            earlier.append(Earlier(_time(entry.get("submission_time"), f"{path}: previous_submissions[{i}]"),
                                   _score(entry), results))
    return now, sorted(earlier, key=lambda e: e.time)


def shown_now(entry: Earlier, default: str) -> float:
    """The points of an earlier result that students may see at once (its tests of visibility `default`
    when they say none): a choice made by these tells nothing of the hidden ones, a split's private part."""
    tests = (entry.results or {}).get("tests")
    if not isinstance(tests, list):
        return entry.score  # a bare total: what Gradescope showed
    return visible_score([t for t in tests if isinstance(t, dict)], default, TOP_OUTPUT)[0]


def check_limit(now: datetime, earlier: list[Earlier], limit: int, keeps: str, default: str = VISIBLE) -> LimitCheck:
    """Whether this submission is past `limit` valid ones in the 24 hours before it, and if so which
    earlier result stands: the best score students may see now ("best", the latest of equal ones; never by
    hidden points, which the choice would reveal) or the latest ("last"). `default`: the config's visibility."""
    window = [e for e in earlier if now - WINDOW < e.time <= now]
    if len(window) < limit:
        return LimitCheck(False, len(window), limit)
    candidates = [e for e in earlier if e.time <= now]
    kept = max(candidates, key=(lambda e: (shown_now(e, default), e.time)) if keeps == "best" else (lambda e: e.time))
    return LimitCheck(True, len(window), limit, kept, window[len(window) - limit].time + WINDOW)


def _copied_test(test: dict) -> dict:
    """An earlier result's test as Gradescope's schema has it: metadata is Gradescope's, but an earlier
    grader (or a bug) may have left any shape there, and results.json must stay valid."""
    copied = {"name": printable(test.get("name", "")), "score": number(test.get("score")),
              "max_score": number(test.get("max_score")), "output": printable(test.get("output", ""))}
    if test.get("visibility") in VISIBILITIES:
        copied["visibility"] = test["visibility"]
    if test.get("status") in ("passed", "failed"):
        copied["status"] = test["status"]
    if test.get("output_format") in ("md", "text"):
        copied["output_format"] = test["output_format"]
    return copied


def over_limit_results(check: LimitCheck, keeps: str, base: dict, withheld_columns: Collection[str] = ()) -> dict:
    """results.json for a submission past the limit: nothing ran; the kept earlier result's tests and score
    stand, each test saying why. `base` gives the fields of a normal report (visibility, extra_data);
    `withheld_columns` the leaderboard columns of questions students may not see yet."""
    assert check.kept is not None and check.next_at is not None
    kept = check.kept
    tests_of = (kept.results or {}).get("tests")
    earlier = [_copied_test(t) for t in tests_of if isinstance(t, dict)] if isinstance(tests_of, list) else []
    default = str(base.get("visibility", VISIBLE))
    # The message goes where students look at once: it quotes only the points of tests they may see now.
    points, maximum, held = visible_score(earlier, default, TOP_OUTPUT)
    score = f"{points:g} / {maximum:g}" + (f" on the tests shown now ({held} more shown later)" if held else "")
    message = (f"Submission limit reached: {check.counted} valid submissions in the last 24 hours (the limit is "
               f"{check.limit}). This one was not graded. Your {'best' if keeps == 'best' else 'last'} earlier "
               f"result stands: {score}, from the submission of {kept.time.isoformat(timespec='minutes')}. "
               f"Your next submission counts from {check.next_at.isoformat(timespec='minutes')}.")
    tests = [{**test, "output": f"{message}\n\nThe earlier result:\n{test.get('output', '')}"} for test in earlier]
    board = (kept.results or {}).get("leaderboard", [])
    board = [{"name": printable(e["name"]), "value": number(e.get("value")),
              "order": "asc" if e.get("order") == "asc" else "desc"}
             for e in (board if isinstance(board, list) else [])
             if isinstance(e, dict) and isinstance(e.get("name"), str) and e["name"] not in withheld_columns]
    report = {**base, "tests": tests, "output": message, "execution_time": 1, "leaderboard": board}
    if not held:  # a total that holds hidden points is left to Gradescope, which adds up the tests itself
        report["score"] = kept.score
    report["extra_data"] = {**base.get("extra_data", {}), "submission_limit": check.record}
    return report
