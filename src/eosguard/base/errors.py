"""User-facing errors and the exit codes of the `eosguard` command.

Every error a user can cause (a bad file, a bad record, a bad config key) is an `EosguardError`: the CLI prints
its message (with file and line where there is one) and exits with its code, never with a traceback.

Exit codes (documented in the README):
    0  success; for `doctor`, no finding of severity "error"
    1  `doctor` found at least one finding of severity "error"; `train` refused to start because of one
    2  bad usage or unreadable input: missing file, malformed record, bad config, unknown path
    3  a check the user asked for failed at run time (e.g. the collator guard in strict mode)
    4  internal error: eosguard itself failed (a bug to report); never 1, which would read as "the stop token is lost"
"""

from __future__ import annotations

EXIT_FINDINGS = 1
EXIT_USAGE = 2
EXIT_GUARD = 3
EXIT_INTERNAL = 4


class EosguardError(Exception):
    """An error caused by the user's input or setup; printed without a traceback."""

    exit_code: int = EXIT_USAGE

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if self.hint is None else f"{self.message}\n  hint: {self.hint}"

    def __reduce__(self) -> tuple:
        """Pickle every field (hint, path, line, ...), so an error raised in a worker process arrives whole."""
        return (_restore, (type(self), self.message, self.__dict__))


def _restore(cls: type[EosguardError], message: str, state: dict) -> EosguardError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


class DataError(EosguardError):
    """A record in a data file is malformed; `path` and `line` say where (line is 1-based, None for whole files)."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None, hint: str | None = None):
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(f"{where}{message}", hint=hint)
        self.path = path
        self.line = line
        self.reason = message


class ConfigError(EosguardError):
    """A config file or option is invalid; the message lists every problem at once."""


class StopTokenLossError(EosguardError):
    """Raised by the collator guard when a batch would not train the end-of-turn token."""

    exit_code = EXIT_GUARD


class RefusedByDoctor(EosguardError):
    """`eosguard train` refused to start because of doctor errors."""

    exit_code = EXIT_FINDINGS


class PeerFailed(EosguardError):
    """Rank 0 stopped on this error before training; another rank exits with the same code without printing it
    again (rank 0 already did)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def internal_error(exc: BaseException) -> str:
    """The message of an unexpected exception (a bug in eosguard, not the user's input): what failed, where its
    traceback was saved, and what to report. The traceback goes to a file, not the terminal (`EOSGUARD_DEBUG=1`
    prints it too)."""
    import os
    import sys
    import tempfile
    import traceback

    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if os.environ.get("EOSGUARD_DEBUG"):
        sys.stderr.write(text)
    try:
        fd, path = tempfile.mkstemp(prefix="eosguard-internal-error-", suffix=".txt")
        with os.fdopen(fd, "w") as f:
            f.write(" ".join(sys.argv) + "\n\n" + text)
        saved = f"its traceback is in {path}"
    except OSError:
        saved = "set EOSGUARD_DEBUG=1 to print its traceback"
    return (
        f"internal error: eosguard failed on its own ({type(exc).__name__}: {exc}); this is a bug in eosguard, not a "
        f"finding about your setup (exit {EXIT_INTERNAL}); {saved}: please report it with the command you ran"
    )
