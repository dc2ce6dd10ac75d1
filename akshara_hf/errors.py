"""One exception type for bad user input, so the CLI can print it as one line instead of a traceback."""


class AksharaError(ValueError):
    """Bad input (file, row, field, config): the message names what and where."""


def one_line(error: BaseException | str, limit: int = 400) -> str:
    """An error's message on one line (library messages span several), cut to `limit` characters."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"
