"""Evaluate one question: stream the child's predictions into the metrics, keeping labels in this process."""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from grader.config import QuestionConfig
from grader.metrics import ClassificationAccumulator, SegmentationAccumulator, quantize, softmax
from grader.reference import ReferenceSet
from grader.runner import ChildRun, OutputTrim, StudentError, run_predictions


@dataclass
class QuestionResult:
    """Metrics (JSON-ready: fractions, None where undefined) or the error that stopped grading."""

    question: str
    metrics: dict = field(default_factory=dict)
    error: str | None = None
    details: str = ""
    confusion_matrix: np.ndarray | None = None
    run: ChildRun = field(default_factory=ChildRun)


def _value(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _q1_metrics(state: dict, classes: list[str]) -> dict:
    return {"n": state["n"], "accuracy": _value(state["accuracy"]),
            "per_class_accuracy": {c: _value(v) for c, v in zip(classes, state["per_class_accuracy"])}}


def _q2_metrics(state: dict, classes: list[str]) -> dict:
    return {"n": state["n"], "mAP": _value(state["mAP"]), "mIoU": _value(state["mIoU"]),
            "per_class": {c: {"AP": _value(ap), "IoU": _value(iou)}
                          for c, ap, iou in zip(classes, state["AP"], state["IoU"])}}


def evaluate(ref: ReferenceSet, submission: Path, cfg: QuestionConfig, device: str) -> QuestionResult:
    """Grade one question; a StudentError becomes `error`, anything else is the grader's and propagates."""
    num_classes = len(ref.classes)
    if ref.question == "q1":
        accumulator, tail = ClassificationAccumulator(num_classes), (num_classes,)
    else:
        accumulator, tail = SegmentationAccumulator(num_classes), (num_classes, *ref.images.shape[1:3])
    result = QuestionResult(ref.question, run=ChildRun(output=OutputTrim(cfg.output_limit)))
    progress = tqdm(total=len(ref), desc=f"{ref.question.upper()} predict", unit="img", file=sys.stderr,
                    dynamic_ncols=True)
    try:
        for start, scores in run_predictions(ref.question, submission, ref.images, tail, cfg.batch_size, device,
                                             cfg.time_limit, result.run):
            target = ref.labels[start : start + len(scores)]
            if ref.question == "q1":
                accumulator.update(scores, target)
            else:
                accumulator.update(quantize(softmax(scores, axis=1)), target)
            progress.update(len(scores))
    except StudentError as exc:
        result.error, result.details = exc.message, exc.details
        return result
    finally:
        progress.close()
    state = accumulator.compute()
    result.confusion_matrix = state["confusion_matrix"]
    result.metrics = (_q1_metrics if ref.question == "q1" else _q2_metrics)(state, ref.classes)
    return result
