"""Writing a command's output folder without ever replacing or deleting a folder the project did not write.

Every command that writes a folder (convert-nanochat, export-native, import-native, export-nanochat, build-mixture,
train-tokenizer, convert-tokenizer, evaluate --output) goes through `staged_output` (`demo` through `check_output`):

* the output is refused when it is a symbolic link, a file, a non-empty folder without our marker file
  (`.akshara-hf.json`), an earlier output of another command, or an earlier output of the same command without
  `overwrite`; and when it equals, contains or lies inside one of the command's inputs (symlinks resolved);
* the new folder is written into a staging folder beside the destination (`.NAME.akshara-hf-staging-*`, holding a
  marker with the writing process's id) and moved into place only when complete, so an interrupted or failed run
  leaves the old output as it was;
* staging folders of earlier runs of the same command on the same output whose process has died are removed; nothing
  without our name pattern and marker is ever touched.

Plain Python (no torch) so the checks run before any heavy import.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from akshara_hf.errors import AksharaError

MARKER = ".akshara-hf.json"  # in every finished output: which command wrote it
STAGING_MARKER = ".akshara-hf-staging.json"  # in every staging folder: command, output, host, pid
STAGING_INFIX = ".akshara-hf-staging-"


@dataclass(frozen=True)
class Staging:
    folder: Path  # write the output here; it becomes the output folder
    scratch: Path  # private working space (caches), removed with the staging folder


def output_marker(folder: str | os.PathLike) -> dict | None:
    """The marker of a folder this project wrote, or None (no marker, a symlinked or unreadable one)."""
    path = Path(folder) / MARKER
    if path.is_symlink() or not path.is_file():
        return None
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and isinstance(marker.get("command"), str) else None


def check_output(output: str | os.PathLike, command: str, *, overwrite: bool = False,
                 inputs: Iterable[str | os.PathLike | None] = ()) -> Path:
    """Refuse an output that would replace something we did not write (see the module docstring); the absolute
    output path (parent symlinks resolved, the folder itself never followed)."""
    given = Path(output)
    if given.is_symlink():
        raise AksharaError(f"{given}: is a symbolic link; name a real folder (a link is never followed into deletion)")
    target = given.absolute().parent.resolve() / given.absolute().name
    if given.name in ("", ".", ".."):
        target = given.resolve()
    for source in inputs:
        if source is None or not os.path.exists(source):
            continue  # a Hub id, or an input checked (and reported) by the command itself
        source = Path(source).resolve()
        if target == source:
            raise AksharaError(f"{given}: is the input {source}; write the output somewhere else")
        if source.is_relative_to(target):
            raise AksharaError(f"{given}: contains the input {source}; refusing to replace it")
        if target.is_relative_to(source):
            raise AksharaError(f"{given}: lies inside the input {source}; write the output somewhere else")
    if not target.exists():
        return target
    if not target.is_dir():
        raise AksharaError(f"{given}: exists and is not a folder; refusing to replace it")
    if not any(target.iterdir()):
        return target
    marker = output_marker(target)
    if marker is None:
        raise AksharaError(f"{given}: exists, is not empty and was not written by akshara-hf; refusing to replace it")
    if marker["command"] != command:
        raise AksharaError(f"{given}: is an earlier `akshara-hf {marker['command']}` output, not {command}'s; "
                           "refusing to replace it")
    if not overwrite:
        raise AksharaError(f"{given}: holds an earlier {command} output; pass --overwrite to replace it")
    return target


def _process_is_gone(marker: dict) -> bool:
    if marker.get("host") != socket.gethostname() or not isinstance(marker.get("pid"), int):
        return False  # another machine's (shared disk) or unreadable: cannot tell, leave it
    try:
        os.kill(marker["pid"], 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by someone else
        return False
    return False  # still running: maybe a concurrent run of the same command


def clean_stale_staging(output: Path, command: str) -> list[Path]:
    """Remove staging folders that an interrupted earlier `command` run left beside `output`; return them."""
    removed = []
    if not output.parent.is_dir():
        return removed
    for candidate in output.parent.glob(f".{output.name}{STAGING_INFIX}*"):
        if candidate.is_symlink() or not candidate.is_dir():
            continue
        marker_path = candidate / STAGING_MARKER
        if marker_path.is_symlink() or not marker_path.is_file():
            continue
        try:
            marker = json.loads(marker_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(marker, dict) or marker.get("command") != command or marker.get("output") != output.name:
            continue
        if _process_is_gone(marker):
            shutil.rmtree(candidate, ignore_errors=True)
            removed.append(candidate)
    return removed


@contextmanager
def staged_output(output: str | os.PathLike, command: str, *, overwrite: bool = False,
                  inputs: Iterable[str | os.PathLike | None] = ()) -> Iterator[Staging]:
    """Check `output`, yield a staging folder to write into, then move it into place (see the module docstring).

    An exception in the body leaves the old output untouched and removes the staging folder.
    """
    inputs = list(inputs)
    target = check_output(output, command, overwrite=overwrite, inputs=inputs)
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_staging(target, command)
    root = Path(tempfile.mkdtemp(prefix=f".{target.name}{STAGING_INFIX}", dir=target.parent))
    previous = root / "previous"
    try:
        (root / STAGING_MARKER).write_text(json.dumps(
            {"command": command, "output": target.name, "host": socket.gethostname(), "pid": os.getpid()}))
        staging = Staging(root / "output", root / "scratch")
        staging.folder.mkdir()
        staging.scratch.mkdir()
        try:
            yield staging
            (staging.folder / MARKER).write_text(json.dumps({"command": command, "written_by": "akshara-hf"}) + "\n")
        except Exception as error:
            full = disk_full_error(error, staging.folder, shown_as=target)
            if full is None:
                raise
            raise AksharaError(f"{full}; {target} is as it was" if target.exists() else f"{full}; nothing was written"
                               ) from None
        # Checked again: the destination may have changed during a long write.
        check_output(output, command, overwrite=overwrite, inputs=inputs)
        if target.exists():
            os.replace(target, previous)  # an empty folder, or our own earlier output (checked above)
        os.replace(staging.folder, target)
    finally:
        if previous.exists() and not target.exists():  # interrupted between the two renames: put it back
            os.replace(previous, target)
        shutil.rmtree(root, ignore_errors=True)  # rmtree never follows symlinks inside the tree


DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def is_disk_full(error: BaseException, folder: str | os.PathLike) -> bool:
    """Whether `error`, raised while writing into `folder`, is a full disk (or quota). Libraries report it in their own
    ways: `OSError` errno 28 (Python, Arrow), a `SafetensorError` quoting "os error 28", and torch.save only a
    RuntimeError about a stream position; for those the filesystem's free space decides."""
    if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS:
        return True
    text = str(error)
    if "No space left on device" in text or "Disk quota exceeded" in text:
        return True
    if not isinstance(error, (RuntimeError, OSError)):
        return False
    try:
        status = os.statvfs(folder)
    except OSError:
        return False
    return status.f_bavail * status.f_frsize < 1024 * 1024


def disk_full_error(error: BaseException, folder: str | os.PathLike, shown_as: str | os.PathLike | None = None
                    ) -> str | None:
    """For a full disk while writing into `folder`: one line naming the file being written (the newest file there:
    the libraries' errors do not name it), as it lies in `shown_as` (the output a staging folder becomes); else None."""
    folder = Path(folder)
    if not is_disk_full(error, folder):
        return None
    name = getattr(error, "filename", None)
    if name is None:
        files = [path for path in folder.rglob("*") if path.is_file() and not path.is_symlink()] if folder.is_dir() \
            else []
        newest = max(files, key=lambda path: path.stat().st_mtime_ns, default=None)
        name = newest if newest is None else Path(shown_as or folder) / newest.relative_to(folder)
    elif shown_as is not None and Path(name).is_relative_to(folder):
        name = Path(shown_as) / Path(name).relative_to(folder)
    return f"{name or shown_as or folder}: no space left on device while writing it"


def add_overwrite_flag(parser) -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help="replace OUTPUT when it is an earlier output of this same command (anything else is "
                             "always refused)")
