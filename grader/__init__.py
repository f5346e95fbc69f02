"""The grading engine: CLI, judge, worker, scoring and reports.

The judge (this package, in the grading process) runs the hidden pytest suites
under ``grader/suites/<set>/``; learner code only ever runs in a worker process
(``grader.worker``) and is reached through proxies (``grader.proxy``).
"""

__version__ = "0.1.0"
