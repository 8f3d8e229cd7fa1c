"""The errors a user can fix: the command line prints them as one line and exits with status 2.

Anything raised as a `UserError` (a bad recipe, a missing or corrupt artefact,
an unreachable tracking server) says what is wrong and where in its message;
`mmgen -v` adds the traceback for those who debug mmgen itself.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem in the user's input, files or environment, not a bug: one line, exit status 2."""


class MissingSplitError(UserError, KeyError):
    """A split asked for (by a recipe option, a command) that the data set, data stage or token cache lacks."""

    def __str__(self) -> str:  # the message itself, not KeyError's quoted repr of it
        return str(self.args[0]) if self.args else ""


class ArtefactError(UserError):
    """An artefact on disk that is missing, unfinished or does not match its recorded content hash."""
