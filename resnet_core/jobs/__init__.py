"""Background training jobs: the manager and the job as pages see it (manager.py, job.py), the
messages between the server and where a job trains (protocol.py, worker.py), and one module per
backend (process_backend.py, the default; thread_backend.py). See manager.py's docstring."""

from .job import ACTIVE, STATES, Job
from .manager import JobManager

__all__ = ["ACTIVE", "STATES", "Job", "JobManager"]
