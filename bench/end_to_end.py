"""Grading a submission against the bare work it contains, and where the difference goes.

    PYTHONPATH=. .venv/bin/python bench/end_to_end.py [--submission submission] [--data reference_data] [--repeat 3]

The bare work is one process that imports torch, loads the reference images, and calls predict_q1 and
predict_q2 over them in the grader's batch sizes (the models load on the first call). The grade is
`python -m grader` on the same submission and data, without pictures. Both are timed from outside,
alternating, `--repeat` times each; the ratio of the medians is the overhead. Then one grade runs in this
process with timers on its phases (and on the child's messages, as they arrive) to say where the time goes.
Run it as root for the isolation the grader uses in Docker and on Gradescope (else it grades in the weaker
mode it can have, which the output names).
"""
from __future__ import annotations

import argparse
import functools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable

BARE = """
import json, pathlib, sys, time
t = {"start": time.perf_counter()}
import numpy as np, torch
t["torch imported"] = time.perf_counter()
sys.path.insert(0, sys.argv[1])
from grader.reference import load_reference
import predict
for question, batch in (("q1", int(sys.argv[3])), ("q2", int(sys.argv[4]))):
    images = load_reference(pathlib.Path(sys.argv[2]), question).images
    t[question + " images read"] = time.perf_counter()
    fn = getattr(predict, "predict_" + question)
    for start in range(0, len(images), batch):
        x = torch.from_numpy(np.array(images[start : start + batch]))
        x = (x.unsqueeze(1) if question == "q1" else x.permute(0, 3, 1, 2)).float().div_(255).contiguous()
        with torch.inference_mode():
            np.ascontiguousarray(fn(x).to(torch.float32).numpy())
        t.setdefault(question + " first batch", time.perf_counter())
    t[question + " last batch"] = time.perf_counter()
print(json.dumps(t))
"""


def _wall(argv: list[str], env_path: str) -> tuple[float, str]:
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": env_path,
                                                                       "PYTHONDONTWRITEBYTECODE": "1"})
    if proc.returncode != 0:
        sys.exit(f"{argv[:3]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return time.perf_counter() - started, proc.stdout


class Timers:
    """Cumulative seconds per phase, and the arrival times of the child's messages."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.messages: list[tuple[float, str]] = []

    def wrap(self, owner: object, name: str, phase: str) -> None:
        original: Callable = getattr(owner, name)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[phase] += time.perf_counter() - started

        setattr(owner, name, timed)


class _RecordingQueue:
    """Stands between the grader's pipe reader and its queue, noting when each message arrived."""

    def __init__(self, queue, timers: Timers) -> None:
        self.queue, self.timers = queue, timers

    def put(self, message, *args, **kwargs) -> None:
        self.timers.messages.append((time.perf_counter(), "closed" if message is None else message["type"]))
        self.queue.put(message, *args, **kwargs)


def profile(submission: Path, data: Path, config_path: Path) -> tuple[dict[str, float], list[str], str]:
    """One grade in this process with its phases timed: (seconds per phase, per-question lines, isolation)."""
    import grader.cli as cli
    import grader.evaluation as evaluation
    import grader.reference as reference
    import grader.runner as runner
    from grader.config import fit_memory, load_config
    from grader.metrics import ClassificationAccumulator, SegmentationAccumulator
    from grader.sandbox import Sandbox, memory_left_mib, prepare

    timers = Timers()
    timers.wrap(reference, "load_reference", "reference data: read")
    timers.wrap(runner, "_start_child", "child: scratch folder, image file, copy of the upload, start")
    timers.wrap(runner, "_close", "child: kill, prove gone, remove scratch")
    timers.wrap(evaluation, "quantized_softmax", "metrics: Q2 softmax + quantisation")
    timers.wrap(ClassificationAccumulator, "update", "metrics: update")
    timers.wrap(SegmentationAccumulator, "update", "metrics: update")
    timers.wrap(cli, "build_results", "reports: results.json")
    timers.wrap(cli, "stage_upload", "upload: checked and staged")
    timers.wrap(Sandbox, "jail", "child: jail (memory cgroup, scratch folder)")
    reader = runner.read_messages
    runner.read_messages = lambda channel, messages, *rest: reader(channel, _RecordingQueue(messages, timers), *rest)  # type: ignore[assignment]
    started_child: list[float] = []
    start_child = runner._start_child

    def noted_start(*args, **kwargs):
        started_child.append(time.perf_counter())
        return start_child(*args, **kwargs)

    runner._start_child = noted_start  # type: ignore[assignment]
    evaluated: list[float] = []
    evaluate = evaluation.evaluate

    def noted_evaluate(*args, **kwargs):
        try:
            return evaluate(*args, **kwargs)
        finally:
            evaluated.append(time.perf_counter())

    evaluation.evaluate = noted_evaluate  # type: ignore[assignment]
    total = time.perf_counter()
    config, _ = fit_memory(load_config(config_path), memory_left_mib(), "this machine")
    t = time.perf_counter()
    sandbox = prepare("auto", "auto", [data.resolve(), config.source, Path(cli.__file__).parent])
    timers.seconds["sandbox: prepare (probe, users, lock, cgroups)"] += time.perf_counter() - t
    try:
        t = time.perf_counter()
        graded = cli.grade(config, submission.resolve(), data.resolve(), sandbox)
        timers.seconds["grade() in all"] = time.perf_counter() - t
    finally:
        sandbox.close()
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        cli.draw(graded.results, graded.classes, Path(tmp))
    timers.seconds["pictures (not part of the timed grades)"] = time.perf_counter() - t
    timers.seconds["in all, this process"] = time.perf_counter() - total
    lines = []
    for q, begun, ended in zip(config.questions, started_child, evaluated):
        arrivals = [(at, kind) for at, kind in timers.messages if at >= begun]
        arrivals = arrivals[: next(i for i, (_, kind) in enumerate(arrivals) if kind == "done") + 1]
        ready = next(at for at, kind in arrivals if kind == "ready")
        batches = [at for at, kind in arrivals if kind == "batch"]
        done = next(at for at, kind in arrivals if kind == "done")
        lines.append(f"{q}: start -> ready (process, namespaces, imports of numpy and torch) {ready - begun:.2f} s; "
                     f"ready -> first batch (import predict.py, load the model, first batch) {batches[0] - ready:.2f} s; "
                     f"first -> last batch ({len(batches)} batches) {batches[-1] - batches[0]:.2f} s; "
                     f"last batch -> done {done - batches[-1]:.2f} s; done -> question over (the child exits, "
                     f"cleanup) {ended - done:.2f} s")
    return dict(timers.seconds), lines, sandbox.isolation


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--submission", type=Path, default=Path("submission"))
    p.add_argument("--data", type=Path, default=Path("reference_data"))
    p.add_argument("--config", type=Path, default=Path("grader/config.toml"))
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    from grader.config import load_config

    config = load_config(args.config)
    here = str(Path(__file__).resolve().parent.parent)
    bare_argv = [sys.executable, "-c", BARE, str(args.submission.resolve()), str(args.data.resolve()),
                 str(config.questions["q1"].batch_size), str(config.questions["q2"].batch_size)]
    bare, grades, bare_phases = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / "results.json"
        grade_argv = [sys.executable, "-m", "grader", "--submission", str(args.submission), "--data", str(args.data),
                      "--config", str(args.config), "--results", str(results)]
        for i in range(args.repeat):
            seconds, out = _wall(bare_argv, here)
            bare.append(seconds)
            bare_phases.append(json.loads(out))
            seconds, _ = _wall(grade_argv, here)
            grades.append(seconds)
            score = sum(t["score"] for t in json.loads(results.read_text())["tests"])
            print(f"run {i + 1}: bare {bare[-1]:.2f} s, grade {grades[-1]:.2f} s (score {score:g})", flush=True)
    b, g = statistics.median(bare), statistics.median(grades)
    print(f"\nmedian of {args.repeat}: bare {b:.2f} s, grade {g:.2f} s: overhead {g / b:.2f}x")
    stamps = bare_phases[bare.index(b)] if b in bare else bare_phases[0]
    names = list(stamps)
    print("the bare run of the median, its phases: " + "; ".join(
        f"{before} -> {after} {stamps[after] - stamps[before]:.2f} s" for before, after in zip(names, names[1:])) + "\n")
    seconds, lines, isolation = profile(args.submission, args.data, args.config)
    print(f"profile of one grade in this process (isolation: {isolation}):")
    for phase, value in seconds.items():
        print(f"  {value:7.2f} s  {phase}")
    for line in lines:
        print("  " + line)


if __name__ == "__main__":
    main()
