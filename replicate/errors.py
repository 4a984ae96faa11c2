"""The one exception type a user sees.

Anything raised as `ReplicateError` is bad input or a bad state the user can fix: the CLI prints
its message as a single line and exits 2, before writing anything where it can help it.  Other
exceptions are bugs and keep their traceback.
"""


class ReplicateError(Exception):
    """A user-facing error: the message is one line that names the file, layer or value at fault."""
