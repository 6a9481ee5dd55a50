"""What a student reads in a question's test: the course's own print-out of the metrics, the intervals,
the score and its reason, the run's notes and the student's printed output (shown only as the course
allows: show_output)."""
from __future__ import annotations

from grader.config import QuestionConfig
from grader.evaluation import QuestionResult
from grader.scoring import Score, scored_metrics
from grader.text import markdown_block, markdown_code, printable, student_lines, student_tail
from grader.visibility import WHEN


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def two(x: float | None) -> str:
    return "n/a" if x is None else f"{x:0.2f}"


def metrics_text(question: str, m: dict) -> str:
    """The course's own print-out of a question's metrics (the whole set's, or a part's)."""
    if question == "q1":
        lines = [f"Accuracy: {pct(m['accuracy'])}"]
        lines += [f"Accuracy of {name} : {pct(v)}" for name, v in m["per_class_accuracy"].items()]
    else:
        lines = [f"{name:>20s}: AP: {two(v['AP'])}, IoU: {two(v['IoU'])}" for name, v in m["per_class"].items()]
        lines.append(f"{'mean':>20s}: AP: {two(m['mAP'])}, IoU: {two(m['mIoU'])}")
    return "\n".join(lines)


def shown_error(cfg: QuestionConfig, result: QuestionResult) -> tuple[str, str]:
    """(error, details) as students may see them: with show_output = false, an error whose words the student's
    code chose (an exception's message, a traceback: output by another name) is named by its kind only."""
    if result.error_from_student and not cfg.show_output:
        return (f"your code failed ({result.error_kind}); its message is not shown (the course keeps what your code "
                "prints private: show_output = false)"), ""
    return result.error or "", result.details


def metrics_markdown(question: str, m: dict) -> str:
    """The metrics as Gradescope renders Markdown: the headline in bold, a table per class and, for Q1, the
    classes most often taken for one another."""
    if question == "q1":
        rows = [f"| {_cell(name)} | {pct(v)} |" for name, v in m["per_class_accuracy"].items()]
        lines = [f"**Accuracy: {pct(m['accuracy'])}**", "", "| class | accuracy |", "| :-- | --: |", *rows]
        confused = [f"{_cell(c['true'])} taken for {_cell(c['predicted'])} ({c['images']})" for c in m.get("most_confused", [])]
        if confused:
            lines += ["", "Most confused: " + "; ".join(confused) + "."]
        return "\n".join(lines)
    rows = [f"| {_cell(name)} | {two(v['AP'])} | {two(v['IoU'])} |" for name, v in m["per_class"].items()]
    return "\n".join([f"**mAP: {two(m['mAP'])}, mIoU: {two(m['mIoU'])}**", "", "| class | AP | IoU |",
                      "| :-- | --: | --: |", *rows, f"| **mean** | **{two(m['mAP'])}** | **{two(m['mIoU'])}** |"])


def _cell(name: str) -> str:
    """A class name (the instructor's classes.txt) inside a table cell."""
    return printable(name, name=True).replace("|", "\\|")


def test_output(cfg: QuestionConfig, result: QuestionResult, score: Score, part: str = "", markdown: bool = False) -> str:
    """A question's test output, plain text or Markdown (`markdown`: Gradescope's output_format "md", where
    every string the student's code chose sits in a code block and renders as nothing else). For a split
    question, `part` "public" is the test students see now (the public part's metrics and what they would
    score, the run's notes and printed output) and "scored" the test that carries the points (the metrics
    the score comes from, and the score)."""
    where = f" on {result.run.device}" if result.run.device else ""
    cpu = "" if result.run.cpu_seconds is None else f", {result.run.cpu_seconds:.1f} s of CPU time"
    if result.error is not None:
        error, details = shown_error(cfg, result)
        if markdown:
            parts = [f"**Could not grade {cfg.title}:**", markdown_block("\n\n".join(t.rstrip() for t in (error, details) if t))]
        else:
            parts = [f"Could not grade {cfg.title}: {student_tail(error)}",
                     *([student_lines(details.rstrip())] if details else [])]
    else:
        shown = (result.metrics["public"] if part == "public" else scored_metrics(cfg, result.metrics)) or {}
        private = part == "scored" and cfg.score_on == "private"
        label = "the public part's " if part == "public" else "the private part's " if private else ""
        parts = [(metrics_markdown if markdown else metrics_text)(result.question, shown),
                 f"({label}{shown.get('n')} held-out images, {result.run.seconds:.1f} s{cpu}{where})",
                 *interval_lines(cfg, shown)]
    if part == "public":
        counted = "the private part's images" if cfg.score_on == "private" else "all the held-out images"
        note = f"Your score comes from {counted}, and is shown {WHEN.get(cfg.private_visibility, 'later')}."
        if result.error is None:
            note += f" On this public part alone it would be {score.points:g} / {score.max_points:g} ({score.reason})."
        parts.append(note)
    else:
        line = f"Score: {score.points:g} / {score.max_points:g}"
        parts.append(f"**{line}**: {score.reason}" if markdown else f"{line}: {score.reason}")
    if part == "scored":  # the run's notes and printed output are in the public part's test
        return "\n\n".join(parts) + "\n"
    if result.run.leftovers:
        parts.append(f"{result.run.leftovers} process(es) your code left running were stopped.")
    if result.run.cleanup_note:
        parts.append(f"Note for staff: {result.run.cleanup_note}")
    if result.run.leftover_files:
        files = result.run.leftover_files[:5]
        more = max(result.run.leftover_count, len(result.run.leftover_files)) - len(files)
        parts.append(f"Removed what your code left in shared temp folders ({len(files) + more}): "
                     + ", ".join(map(markdown_code, files) if markdown else files) + (f", and {more} more" if more else ""))
    if result.run.confinement:
        parts.append(f"Note for staff: {result.run.confinement}")
    printed = result.run.output.text().strip()
    if printed and cfg.show_output:
        parts.append("**Your code printed:**\n\n" + markdown_block(printed) if markdown
                     else "Your code printed:\n" + student_lines(printed))
    return "\n\n".join(parts) + "\n"


def interval_lines(cfg: QuestionConfig, metrics: dict) -> list[str]:
    """The 95 % interval over the images of each thresholded metric, saying so when the full-credit line
    lies inside it: a score that close to the line is within the test set's noise."""
    lines = []
    for metric, threshold in cfg.thresholds.items():
        interval = (metrics.get("interval") or {}).get(metric)
        if not isinstance(interval, list):
            continue
        low, high = (value_text(metric, v) for v in interval)
        line = f"95 % interval over the images: {metric} {low} to {high}"
        if interval[0] <= threshold <= interval[1]:
            line += (f"; the full-credit line ({value_text(metric, threshold)}) lies inside it: on another draw of "
                     "test images this model could land on either side of it")
        lines.append(line + ".")
    return lines


def value_text(metric: str, value: float | None) -> str:
    return pct(value) if metric == "accuracy" else two(value)
