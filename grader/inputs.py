"""What student code must never read, decided in one place for every entry point (cli, batch).

The sandbox closes these paths to the student user while student code may run (grader/sandbox/closing.py);
this module only names them, beneath both the single grade and the batch.
"""
from __future__ import annotations

from pathlib import Path

from grader.config import GraderConfig

GRADER = Path(__file__).resolve().parent


def protected_inputs(data: Path, config: GraderConfig, metadata: Path | None = None) -> list[Path]:
    """What student code must never read: the reference data, the config, the grader, the checks, and
    Gradescope's submission metadata (earlier submissions' results, hidden tests included)."""
    paths = [data, config.source, GRADER, *([config.checks] if config.checks else [])]
    if metadata is not None and metadata.exists():
        paths.append(metadata)
    return [p.resolve() for p in paths]
