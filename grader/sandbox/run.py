"""What a question's jail is handed by the grading run that makes it, as a protocol defined below both.

Guarantee: jail.py depends on this narrow surface alone, never on layers.py (which builds the run and uses
the jail): the run's settings, the user layer's kill and sweep, and where a breach is recorded for good.
layers.Sandbox provides it (checked by mypy where it hands itself to a Jail).
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

from grader.sandbox.cleanup import Swept
from grader.sandbox.namespaces import Bwrap


class Run(Protocol):
    """What a jail needs of the grading run that makes it (layers.Sandbox, which the jail never imports): its
    layers' settings, the user layer's kill and sweep, and where a breach is recorded for good."""

    uid: int | None  # the student user, when root runs student code as it
    gid: int | None
    bwrap: Bwrap | None
    cgroups: bool
    cpu_share: bool
    cpus: float | None
    cpu_time: bool
    scratch_tmpfs: bool
    marker: str
    breach: str | None

    @property
    def drops_user(self) -> bool: ...

    def kill_user(self) -> list[int]: ...

    def shared_folders(self) -> tuple[list[Path], bool]: ...

    def sweep(self, folders: list[Path], seconds: float) -> Swept: ...
