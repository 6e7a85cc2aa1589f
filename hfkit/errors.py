"""Errors a user can cause. Each message names the problem and says how to fix it.

The CLI prints `error: <message>` and exits with `exit_code`; the Python API lets them propagate.
"""

from __future__ import annotations


class HfkitError(Exception):
    """Base class; exit code 1 (a failure while running)."""

    exit_code = 1


class ConfigError(HfkitError):
    """A recipe, override or config value is wrong (exit code 2)."""

    exit_code = 2

    def __init__(self, problems: str | list[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        if len(self.problems) == 1:
            text = self.problems[0]
        else:
            text = f"{len(self.problems)} problems in the config: " + "; ".join(self.problems)
        super().__init__(text)


class DataError(HfkitError):
    """Input data is missing, unreadable or has the wrong shape (exit code 2)."""

    exit_code = 2


class OutputDirError(HfkitError):
    """The output directory would be overwritten (exit code 2)."""

    exit_code = 2


class ModelError(HfkitError):
    """A model or tokenizer cannot be built or loaded as asked (exit code 2)."""

    exit_code = 2


class TrainingFailed(HfkitError):
    """Training itself went wrong (e.g. the loss became NaN); exit code 1."""

    exit_code = 1


class Interrupted(HfkitError):
    """SIGTERM/SIGINT stopped training after saving a checkpoint; exit code 130."""

    exit_code = 130


class Preempted(HfkitError):
    """SIGUSR1 (what SLURM sends before a time limit with --signal) stopped training after saving a checkpoint;
    exit code 75 (EX_TEMPFAIL: try again), for a job script to requeue on."""

    exit_code = 75


class DiskFull(HfkitError):
    """A checkpoint or the final model did not fit on the disk; exit code 1."""

    exit_code = 1


class ProcessLost(HfkitError):
    """Another process of a distributed run died or stopped answering (a collective failed or timed out); exit code
    1: the same command run again (a requeued job) resumes from the last good checkpoint."""

    exit_code = 1
