"""What students read in a test: Markdown by default (the score in bold, a table per class, Q1's most
confused classes, their own output in a code block it cannot break out of), or the course's plain lines."""
from __future__ import annotations

import numpy as np

from conftest import by_question, config_with, grade, make_reference, write_submission
from grader.evaluation import most_confused
from grader.text import markdown_block

SHOUTING = '''
print("```\\n# Heading\\n![x](https://evil.example/p.png)\\n````")
def predict_q1(images):
    return images.flatten(1)[:, :10]
def predict_q2(images):
    import torch
    n, _, h, w = images.shape
    return torch.zeros(n, 6, h, w)
'''


def test_the_most_confused_classes_are_the_largest_off_diagonal_cells() -> None:
    cm = np.array([[5, 1, 7], [0, 4, 0], [7, 2, 9]])
    assert most_confused(cm, ["a", "b", "c"]) == [{"true": "a", "predicted": "c", "images": 7},
                                                  {"true": "c", "predicted": "a", "images": 7},
                                                  {"true": "c", "predicted": "b", "images": 2}]
    assert most_confused(np.eye(3, dtype=int), ["a", "b", "c"]) == []


def test_a_code_block_holds_any_text() -> None:
    block = markdown_block("a\n```\n`````b\x1b")
    fence = block.split("\n")[0]
    assert fence == "``````" and block.endswith("\n" + fence) and "\\x1b" in block
    assert all(not line.startswith(fence) for line in block.split("\n")[1:-1])


def test_tests_are_markdown_with_tables_and_the_students_text_in_a_block(tmp_path) -> None:
    data = make_reference(tmp_path / "data", n_q1=60, n_q2=2)
    submission = write_submission(tmp_path / "submission", SHOUTING)
    _, report = grade(submission, data, tmp_path / "results.json", "--config", str(config_with(tmp_path)),
                      "--isolation", "process")
    q1, q2 = by_question(report)["Q1"], by_question(report)["Q2"]
    assert q1["output_format"] == q2["output_format"] == "md"
    metrics = report["extra_data"]["metrics"]["q1"]
    assert f"**Accuracy: {100 * metrics['accuracy']:.1f} %**" in q1["output"]
    assert "| class | accuracy |" in q1["output"] and "| Ankle boot |" in q1["output"]
    first = metrics["most_confused"][0]
    assert f"Most confused: {first['true']} taken for {first['predicted']} ({first['images']})" in q1["output"]
    assert "| class | AP | IoU |" in q2["output"] and "| **mean** |" in q2["output"]
    assert f"**Score: {q1['score']:g} / 20**" in q1["output"]
    printed = q1["output"].split("**Your code printed:**\n\n")[1]
    fence = printed.split("\n")[0]
    assert len(fence) >= 5 and printed.rstrip().endswith(fence)  # longer than the student's ```` run
    assert "# Heading" in printed and "![x]" in printed  # inside the block: shown as typed, not rendered
    text_config = config_with(tmp_path, **{'output_format = "md"': 'output_format = "text"'})
    _, plain = grade(submission, data, tmp_path / "plain.json", "--config", str(text_config), "--isolation", "process")
    assert by_question(plain)["Q1"]["output_format"] == "text"
    assert "Accuracy of Ankle boot :" in by_question(plain)["Q1"]["output"]
