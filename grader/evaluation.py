"""Evaluate one question: stream the child's predictions into the metrics, keeping labels in this process."""
from __future__ import annotations

import math
import sys
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from grader import prediction_file
from grader.config import QuestionConfig
from grader.memorization import Probe
from grader.metrics import ClassificationAccumulator, SegmentationAccumulator, first_argmax, quantized_softmax
from grader.reference import ReferenceSet
from grader.runner import ChildRun, GraderError, Limits, OutputTrim, StudentError, run_predictions
from grader.sandbox import Sandbox
from grader.uncertainty import binomial_interval, bootstrap_intervals


EXAMPLES = 4  # Q2 images kept for the overlay picture


@dataclass
class QuestionResult:
    """Metrics (JSON-ready: fractions, None where undefined) or the error that stopped grading."""

    question: str
    metrics: dict = field(default_factory=dict)
    error: str | None = None
    error_kind: str = ""  # a short name for the error (StudentError.kind, "grader", "upload"), for batch reports
    details: str = ""
    error_from_student: bool = False  # `error` and `details` are text the student's code chose (its output)
    staff_problem: bool = False  # the error is the grader's, not the student's
    examples: list = field(default_factory=list)  # Q2: (name, image, label, predicted label) of the first images
    memorization: dict | None = None  # the memorization probe's finding (grader/memorization.py), for staff

    @property
    def reported_metrics(self) -> dict:
        """What extra_data.metrics shows for this question: the metrics, or the error."""
        return {"error": self.error, "error_kind": self.error_kind} if self.error is not None else self.metrics
    confusion_matrix: np.ndarray | None = None
    run: ChildRun = field(default_factory=ChildRun)
    predicted: np.ndarray | None = None  # predicted class ids (uint8), when asked for: batch duplicate checks


def _value(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _intervals(state: dict) -> dict:
    """95 % intervals over the images, JSON-ready: [low, high], or None where undefined."""
    return {m: None if math.isnan(lo) or math.isnan(hi) else [lo, hi] for m, (lo, hi) in state["interval"].items()}


def most_confused(cm: np.ndarray, classes: list[str], count: int = 3) -> list[dict]:
    """The `count` largest off-diagonal cells of a confusion matrix: which class is taken for which, how often."""
    off = cm.copy()
    np.fill_diagonal(off, 0)
    cells = sorted(((int(off[t, p]), t, p) for t, p in zip(*np.nonzero(off))), key=lambda c: (-c[0], c[1], c[2]))
    return [{"true": classes[t], "predicted": classes[p], "images": n} for n, t, p in cells[:count]]


def _q1_metrics(state: dict, classes: list[str]) -> dict:
    return {"n": state["n"], "accuracy": _value(state["accuracy"]),
            "per_class_accuracy": {c: _value(v) for c, v in zip(classes, state["per_class_accuracy"])},
            "most_confused": most_confused(state["confusion_matrix"], classes), "interval": _intervals(state)}


def _q2_metrics(state: dict, classes: list[str]) -> dict:
    return {"n": state["n"], "mAP": _value(state["mAP"]), "mIoU": _value(state["mIoU"]),
            "per_class": {c: {"AP": _value(ap), "IoU": _value(iou)}
                          for c, ap, iou in zip(classes, state["AP"], state["IoU"])},
            "interval": _intervals(state)}


def evaluate(ref: ReferenceSet, submission: Path, cfg: QuestionConfig, device: str, sandbox: Sandbox,
             keep_predictions: bool = False, private: np.ndarray | None = None, probe: Probe | None = None) -> QuestionResult:
    """Grade one question, by running the submission's predict() in the sandbox or, in prediction-file mode,
    from its uploaded file; a StudentError or GraderError becomes `error`, anything else propagates.
    `keep_predictions`: also return each image's predicted class ids (Q2: per pixel), as uint8.
    `private`: the split (grader/split.py); the same single pass then also gives each part's metrics.
    `probe`: the memorization probe, whose copies the child sees mixed in; they count in no metric but its own."""
    num_classes = len(ref.classes)
    kind = ClassificationAccumulator if ref.question == "q1" else SegmentationAccumulator
    tail = (num_classes,) if ref.question == "q1" else (num_classes, *ref.images.shape[1:3])
    # The whole set's state is the parts' merged: one pass, each image counted once.
    parts = [kind(num_classes)] if private is None else [kind(num_classes), kind(num_classes)]
    result = QuestionResult(ref.question, run=ChildRun(output=OutputTrim(cfg.output_limit)))
    kept: list[np.ndarray] = []
    from_file, labels_only = cfg.mode == "predictions", False
    shown = ref.images if probe is None else probe.images
    progress = tqdm(total=len(shown), desc=f"{ref.question.upper()} {'score file' if from_file else 'predict'}", unit="img",
                    file=sys.stderr, dynamic_ncols=True)
    started = time.monotonic()
    try:
        if from_file:
            result.run.device = f"your {cfg.predictions_file}"
            labels_only, inner = prediction_file.batches(submission / cfg.predictions_file, ref.question, len(ref),
                                                         num_classes, ref.images.shape[1:3], cfg.batch_size)
            source = inner
        else:
            limits = Limits(cfg.batch_size, cfg.time_limit, cfg.memory_limit * 2**20)
            inner = run_predictions(ref.question, submission, shown, tail, limits, device, sandbox, result.run)
            source = inner if ref.question == "q1" else ((start, quantized_softmax(s)) for start, s in inner)
        # closing(): however this loop ends, the generator's cleanup (killing the child) runs now,
        # while the grader's files are still closed to the student user.
        with closing(inner):
            for start, scores in source:
                progress.update(len(scores))
                if probe is not None:
                    start, scores = probe.route(start, scores)
                    if not len(scores):
                        continue
                target = ref.labels[start : start + len(scores)]
                if private is None:
                    parts[0].update(scores, target)
                else:
                    chosen = private[start : start + len(scores)]
                    for part, mask in zip(parts, (~chosen, chosen)):
                        if mask.any():
                            part.update(scores[mask], target[mask])
                if ref.question == "q1":
                    if keep_predictions:
                        kept.append(np.argmax(scores, axis=1).astype(np.uint8))
                else:
                    if keep_predictions:
                        kept.append(first_argmax(scores))
                    for i in range(max(0, min(len(scores), EXAMPLES - start))):
                        result.examples.append((ref.names[start + i], ref.images[start + i], target[i],
                                                np.argmax(scores[i], axis=0)))
    except StudentError as exc:
        result.error, result.details, result.examples = exc.message, exc.details, []  # no pictures of a failed run
        result.error_kind, result.error_from_student = exc.kind, exc.from_student
        return result
    except GraderError as exc:
        result.error, result.staff_problem, result.examples = f"grader problem, not yours: {exc}", True, []
        result.error_kind = "grader"
        return result
    finally:
        progress.close()
        if from_file:
            result.run.seconds = time.monotonic() - started
    def metrics(accumulator: ClassificationAccumulator | SegmentationAccumulator) -> tuple[dict, dict]:
        state = accumulator.compute()
        if isinstance(accumulator, SegmentationAccumulator):
            state["interval"] = bootstrap_intervals(*accumulator.per_image())
        else:
            state["interval"] = {"accuracy": binomial_interval(int(np.trace(state["confusion_matrix"])), state["n"])}
        if labels_only and ref.question == "q2":  # AP ranks scores; labels have none
            state["AP"], state["mAP"] = [math.nan] * num_classes, math.nan
            state["interval"]["mAP"] = (math.nan, math.nan)
        return state, (_q1_metrics if ref.question == "q1" else _q2_metrics)(state, ref.classes)

    whole = parts[0] if len(parts) == 1 else parts[0].merged(parts[1])  # type: ignore[arg-type]
    state, result.metrics = metrics(whole)
    if private is not None:
        result.metrics["public"], result.metrics["private"] = (metrics(part)[1] for part in parts)
    result.predicted = np.concatenate(kept) if kept else None
    result.confusion_matrix = state["confusion_matrix"]
    result.memorization = probe.result() if probe is not None else None
    return result
