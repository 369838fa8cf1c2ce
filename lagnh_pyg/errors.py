"""Exceptions the CLI turns into one clear line on stderr.

``InputError`` is bad input or usage (exit code 2); ``LagnhError`` is a failure while running
(exit code 1). Library code raises these with a message that names the file or value at fault
and, where there is one, the fix.
"""


class LagnhError(RuntimeError):
    """A failure while running (CLI exit code 1)."""

    exit_code = 1


class InputError(LagnhError, ValueError):
    """Bad input or usage: a missing file, a wrong shape, a NaN feature (CLI exit code 2)."""

    exit_code = 2
