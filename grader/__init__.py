"""mp-grader: grades a two-question deep-learning assignment, with student code sandboxed."""

__version__ = "0.2.0"
