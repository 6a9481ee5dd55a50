"""A generated class in Gradescope's "Export Submissions" layout: honest, broken and hostile submissions mixed.

Used by tests/test_batch.py and bench/batch.py. Every submission is small (numpy and torch only, no weights
to train), so that a batch of 30 grades in a few minutes on two cores.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import yaml

HONEST = """
import numpy as np
import torch

W = torch.from_numpy(np.load("w1.npy"))
def predict_q1(images):
    return images.flatten(1) @ W
def predict_q2(images):
    n, _, h, w = images.shape
    out = torch.zeros(n, 6, h, w)
    out[:, {q2_class}] = images[:, 0]
    return out
"""
Q2_ZEROS = """
def predict_q2(images):
    import torch
    n, _, h, w = images.shape
    return torch.zeros(n, 6, h, w)
"""
Q1_PLAIN = """
def predict_q1(images):
    return images.flatten(1)[:, :10]
"""
BROKEN = {
    "syntax": "def predict_q1(images)\n    return images\n",
    "exception": "def predict_q1(images):\n    return 1 / 0\n" + Q2_ZEROS,
    "shape": "def predict_q1(images):\n    return images.flatten(1)[:, :5]\n" + Q2_ZEROS,
    "nan": "def predict_q1(images):\n    return images.flatten(1)[:, :10] * float('nan')\n" + Q2_ZEROS,
    "timeout": "import time\ndef predict_q1(images):\n    time.sleep(600)\n" + Q2_ZEROS,
    "no_predict": None,  # an upload without predict.py
}
FORGED = '=HYPERLINK("http://evil.example/", "x") ![pixel](http://evil.example/p.png) <img src=x>'
HOSTILE_SUBMITTER = {":name": "=cmd|' /C calc'!A0", ":email": "![pixel](http://evil.example/p.png)", ":sid": "666"}
# Each tries something the sandbox must stop, prints what it got, and still returns valid scores.
HOSTILE = {
    "reads_labels": """
import glob, os
found, own = [], os.path.dirname(os.getcwd())  # its own scratch folder (the working directory's parent)
for pattern in ("{data}/q1/labels.npy", "{export}/*/predict.py", "{out}/submissions/*/results.json", "/tmp/grader-*/*"):
    for path in glob.glob(pattern):
        if path.startswith(own + "/"):
            continue
        try:
            open(path, "rb").read(1)
            found.append(path)
        except OSError:
            pass
print("READ", found)
""" + Q1_PLAIN + Q2_ZEROS,
    "daemon": """
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        time.sleep(120)
    os._exit(0)
""" + Q1_PLAIN + Q2_ZEROS,
    "signals_everyone": """
import os, signal
try:
    os.kill(-1, signal.SIGKILL)
    print("KILLED everyone")
except OSError as exc:
    print("kill(-1) refused:", exc)
""" + Q1_PLAIN + Q2_ZEROS,
    # Writes its own error message on the grader's channel: it may choose the words, never the kind or the
    # blame, and its words reach the CSV and the Markdown summary only as inert text.
    "forges_error": """
import json, os, sys
message = {{"type": "error", "kind": "grader", "message": FORGED, "traceback": "Traceback: " + "x" * 5000}}
os.write(json.loads(sys.argv[1])["fd"], (json.dumps(message) + "\\n").encode())
os._exit(0)
""".replace("FORGED", repr(FORGED)),
}
KINDS = ["honest"] * 3 + list(BROKEN) + list(HOSTILE)


def kind_of(index: int) -> str:
    return KINDS[index % len(KINDS)]


def make_export(root: Path, n: int, data: Path, out: Path, seed: int = 0) -> Path:
    """`n` submissions `submission_<1000 + i>` under `root`, with submission_metadata.yml; returns `root`.
    `data` and `out` are the reference data and batch output the hostile ones try to read."""
    rng = np.random.default_rng(seed)
    metadata = {}
    for i in range(n):
        name, kind = f"submission_{1000 + i}", kind_of(i)
        folder = root / name
        folder.mkdir(parents=True)
        if kind == "honest":
            code = HONEST.format(q2_class=i % 6)
            np.save(folder / "w1.npy", rng.normal(size=(784, 10)).astype(np.float32))
        elif kind in BROKEN:
            code = BROKEN[kind]
        else:
            code = HOSTILE[kind].format(data=data, export=root, out=out)
        if code is None:
            (folder / "README.txt").write_text("forgot the code\n")
        else:
            (folder / "predict.py").write_text(textwrap.dedent(code))
        person = HOSTILE_SUBMITTER if kind == "forges_error" else {":name": f"Student {i}", ":email": f"s{i}@example.edu",
                                                                   ":sid": str(i)}
        metadata[name] = {":submitters": [person],
                          ":created_at": f"2026-11-30 12:{i % 60:02d}:00.000000000 -08:00", ":score": 0.0}
    (root / "submission_metadata.yml").write_text(yaml.safe_dump(metadata))
    return root
