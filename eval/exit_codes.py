"""The process exit statuses of every klhill command, one meaning per number.

``miner.py`` (check, eval, commit), ``python -m validator``, ``python -m validator.pod``
and ``python -m api`` exit with these and nothing else. Scripts and PM2 read them:
``scripts/ecosystem.config.js`` does not restart a process that exits with
``NO_VERDICT`` (2), because a restart cannot fix a command line.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Why a command ended; the README lists what each command means by each."""

    OK = 0
    """Done: admissible, estimated, committed (or already committed), the epoch ran."""

    REFUSED = 1
    """A definite no, and re-running unchanged gives the same answer: the model is not
    admissible or could not be scored (a model error), the commit was refused (not
    registered, already committed, not confirmed, the chain said no), or the one epoch of
    ``--once`` failed."""

    NO_VERDICT = 2
    """Nothing was judged or written, and nothing is known to be wrong with the model: the
    command line, settings, rules or wallet cannot be used (fix them; argparse's own usage
    errors exit 2 too), or a store or chain did not answer (try again later)."""

    UNCONFIRMED = 3
    """``miner.py commit``: the commitment was submitted but is not readable on chain yet;
    re-run the same command later to see it (it never writes twice)."""
