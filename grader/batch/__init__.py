"""`mp-grader batch`: a whole class graded N at a time (command.py says how and what it guarantees).

- submissions.py: finding the submissions of an export, unpacking zips
- runs.py: grading each in its own grader process and student user, on threads or Dask, resumable
- cluster.py: a cluster of other machines: TLS only, workers checked before they grade, status.json
- class_report.py: scores.csv, summary.md and the pictures
- command.py: the command line and the checks that keep concurrent runs apart
"""
from grader.batch.command import main
from grader.batch.runs import grading_key, student_users
from grader.batch.submissions import unpack

__all__ = ["grading_key", "main", "student_users", "unpack"]
