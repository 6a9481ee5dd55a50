"""The two ways the sandbox says no: it cannot be had (grading refuses to start), or it was breached
(a student process outlived its question: grading stops, fail closed)."""


class SandboxError(RuntimeError):
    """The isolation asked for cannot be had here: grading refuses to start."""


class ContainmentError(RuntimeError):
    """A process of the student outlived its question: the run stops, fail closed."""
