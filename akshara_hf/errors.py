"""One exception type for bad user input, so the CLI can print it as one line instead of a traceback."""


class AksharaError(ValueError):
    """Bad input (file, row, field, config): the message names what and where."""
