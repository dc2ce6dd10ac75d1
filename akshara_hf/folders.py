"""Writing output without ever replacing, deleting or writing through what the project did not write.

One rule for everything that writes:

* Commands that write a folder in one go (convert-nanochat, export-native, import-native, export-nanochat,
  build-mixture, train-tokenizer, convert-tokenizer, evaluate --output) go through `staged_output`: the output is
  refused when it is a symbolic link, a file, a non-empty folder without our marker file (`.akshara-hf.json`), an
  earlier output of another command, or an earlier output of the same command without `overwrite`; and when it
  equals, contains or lies inside one of the command's inputs (symlinks resolved). The new folder is written into a
  staging folder beside the destination (`.NAME.akshara-hf-staging-*`, holding a marker with the writing process's
  id) and moved into place only when complete, so an interrupted or failed run leaves the old output as it was.
* Commands that write into their folder for a long time (a training run's `output_dir`, the demo) go through
  `check_run_folder`: the same refusals, except that an earlier output of the same command is written into (a run
  resumes there; the demo removes only the entries its marker lists, see `claim`), and nothing inside the folder may
  be a symbolic or hard link (the run would write through it).
* Single files (model card, loss curve, run facts, markers) are written by `replace_file`: whole or not at all, and
  never through a symbolic link.

A run killed between the staging's two renames leaves the old output in the staging folder's `previous/`: the next
run of any command on that output puts it back (`recover_interrupted`) before looking at it. Other staging folders of
earlier runs of the same command whose process has died are removed; nothing without our name pattern and marker is
ever touched.

Plain Python (no torch) so the checks run before any heavy import.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import stat
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from akshara_hf.errors import AksharaError

MARKER = ".akshara-hf.json"  # in every finished output: which command wrote it
STAGING_MARKER = ".akshara-hf-staging.json"  # in every staging folder: command, output, host, pid
STAGING_INFIX = ".akshara-hf-staging-"
TEMPORARY_SUFFIX = ".akshara-hf-tmp"  # `replace_file`'s file beside the one it replaces, until renamed over it


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


def _target(given: Path) -> Path:
    """The absolute output path (parent symlinks resolved); a symbolic link as output is refused, never followed."""
    if given.is_symlink():
        raise AksharaError(f"{given}: is a symbolic link; name a real folder (a link is never followed into deletion)")
    if given.name in ("", ".", ".."):
        return given.resolve()
    return given.absolute().parent.resolve() / given.absolute().name


def _check_inputs(given: Path, target: Path, inputs: Iterable, may_contain: Iterable = ()) -> None:
    """Refuse an output equal to, inside, or containing an input; `may_contain`: inputs allowed inside the output
    (the caller has made sure the output is its own earlier one)."""
    allowed = {Path(path).resolve() for path in may_contain if path is not None and os.path.exists(path)}
    for source in inputs:
        if source is None or not os.path.exists(source):
            continue  # a Hub id, or an input checked (and reported) by the command itself
        source = Path(source).resolve()
        if target == source:
            raise AksharaError(f"{given}: is the input {source}; write the output somewhere else")
        if source.is_relative_to(target) and source not in allowed:
            raise AksharaError(f"{given}: contains the input {source}; refusing to replace it")
        if target.is_relative_to(source):
            raise AksharaError(f"{given}: lies inside the input {source}; write the output somewhere else")


def _earlier_output(given: Path, target: Path, command: str, verb: str) -> dict | None:
    """The marker of an earlier output of `command` at `target`; None when there is nothing (or an empty folder).
    Anything else is refused."""
    if not target.exists():
        return None
    if not target.is_dir():
        raise AksharaError(f"{given}: exists and is not a folder; refusing to {verb} it")
    if all(_is_temporary(path.name) for path in target.iterdir()):  # empty, or another process's marker on its way
        return None
    marker = output_marker(target)
    if marker is None:
        raise AksharaError(f"{given}: exists, is not empty and was not written by akshara-hf; refusing to {verb} it")
    if marker["command"] != command:
        whose = "a training run's" if command == "train" else f"{command}'s"  # "train": a training output_dir
        raise AksharaError(f"{given}: is an earlier `akshara-hf {marker['command']}` output, not {whose}; "
                           f"refusing to {verb} it")
    return marker


def check_output(output: str | os.PathLike, command: str, *, overwrite: bool = False,
                 inputs: Iterable[str | os.PathLike | None] = ()) -> Path:
    """Refuse an output that would replace something we did not write (see the module docstring); the absolute
    output path (parent symlinks resolved, the folder itself never followed). An output that a killed run left in
    its staging folder is put back first."""
    given = Path(output)
    target = _target(given)
    _check_inputs(given, target, inputs)
    recover_interrupted(target)
    if _earlier_output(given, target, command, "replace") is not None and not overwrite:
        raise AksharaError(f"{given}: holds an earlier {command} output; pass --overwrite to replace it")
    return target


def _entry_name(path: Path) -> str:
    """How a marker lists an entry: folders (not links to them) with a trailing slash."""
    return path.name + ("/" if path.is_dir() and not path.is_symlink() else "")


def _refuse_added_entries(given: str | os.PathLike, target: Path) -> None:
    """Replacing an earlier output deletes it whole: refused when it holds anything its marker does not list (notes
    the user put there). Markers of older versions list nothing and are replaced as before."""
    marker = output_marker(target) if target.is_dir() else None
    wrote = marker.get("wrote") if marker else None
    if not isinstance(wrote, list):
        return
    # typed: a folder is listed as "NAME/"; a user's folder at a name where we wrote a file is the user's
    added = sorted(p.name for p in target.iterdir() if p.name != MARKER and _entry_name(p) not in wrote)
    if added:
        raise AksharaError(f"{given}: holds {', '.join(added[:3])}{', ...' if len(added) > 3 else ''}, which "
                           f"{marker['command']} did not write; --overwrite would delete it (move it out first)")


def first_link(folder: Path) -> tuple[Path, str] | None:
    """The first symbolic link, or file with another name elsewhere (a hard link), inside `folder` (at any depth,
    links never followed) and which it is; None when there is none."""
    for top, dirs, files in os.walk(folder):
        for name in sorted(dirs) + sorted(files):
            status = os.lstat(os.path.join(top, name))
            if stat.S_ISLNK(status.st_mode):
                return Path(top) / name, "a symbolic link"
            if stat.S_ISREG(status.st_mode) and status.st_nlink > 1:  # `cp -al` backups: writes in place reach them
                return Path(top) / name, "a hard link (a file with another name elsewhere)"
    return None


def check_run_folder(output: str | os.PathLike, command: str, *, inputs: Iterable[str | os.PathLike | None] = (),
                     may_contain: Iterable[str | os.PathLike | None] = ()) -> Path:
    """The rule for a command that writes into its folder (a training run, the demo): refused as `check_output`
    refuses, except that an earlier output of the same command is accepted (it goes on writing there), `may_contain`
    inputs may lie inside it (a run resuming from its own checkpoint), and any symbolic or hard link inside it is
    refused (the command would write through it). Returns the absolute path."""
    given = Path(output)
    target = _target(given)
    _check_inputs(given, target, inputs, may_contain)
    if _earlier_output(given, target, command, "write into") is not None:
        link = first_link(target)
        if link is not None:
            raise AksharaError(f"{given}: holds {link[1]}, {link[0]}; {command} would write through it (remove "
                               "the link, or choose another folder)")
    return target


def claim(root: Path, name: str) -> Path:
    """Record in `root`'s marker that its command writes `root/name`, before it does (an interrupted run's partial
    entry is listed too); `root/name`. `remove_claimed` removes exactly these entries."""
    marker = output_marker(root) or {}
    wrote = [entry for entry in marker.get("wrote", []) if isinstance(entry, str)]
    if name not in wrote:
        replace_file(root / MARKER, json.dumps({**marker, "wrote": [*wrote, name]}) + "\n")
    return root / name


def remove_claimed(root: Path) -> list[str]:
    """Remove the entries `root`'s marker lists (a link as a link, never followed; a name that is not a plain entry
    of `root` is ignored); return the names of what else is in `root`, which stays."""
    marker = output_marker(root)
    wrote = marker.get("wrote") if marker else None
    if not isinstance(wrote, list):
        raise AksharaError(f"{root}: an earlier {marker['command'] if marker else ''} output that does not list what "
                           "it wrote (written by an older akshara-hf); remove it yourself, or choose another folder")
    for name in wrote:
        if not isinstance(name, str) or name in ("", ".", "..", MARKER) or "/" in name or os.sep in name:
            continue  # a forged list: never reaches outside the folder or its marker
        path = root / name
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)  # never follows the links inside
    replace_file(root / MARKER, json.dumps({**marker, "wrote": []}) + "\n")
    return sorted(p.name + ("/" if p.is_dir() and not p.is_symlink() else "") for p in root.iterdir()
                  if p.name != MARKER)


def _tree(folder: Path) -> list[str]:
    """Every entry under `folder` as a relative path, folders with a trailing slash (links never followed)."""
    return sorted(str(path.relative_to(folder)) + ("/" if path.is_dir() and not path.is_symlink() else "")
                  for path in folder.rglob("*"))


def record_saved(root: Path, folder: Path, not_ours: Iterable[str] = ()) -> None:
    """List in `root`'s marker everything now in `folder` (a checkpoint-N the Trainer just saved) but `not_ours`
    (what stood there unlisted before the run: a user's), and forget the listed folders that are gone (rotated
    away): what a later run may delete there is only what was listed."""
    marker = output_marker(root) or {}
    saved = marker.get("saved") if isinstance(marker.get("saved"), dict) else {}
    saved = {name: entries for name, entries in saved.items() if (root / name).is_dir()}
    not_ours = set(not_ours)
    saved[folder.name] = [entry for entry in _tree(folder) if entry not in not_ours]
    replace_file(root / MARKER, json.dumps({**marker, "saved": saved}) + "\n")


def unlisted_entries(root: Path, folder: Path) -> list[str] | None:
    """What `folder` (a checkpoint-N inside `root`) holds beyond what `root`'s marker listed when it was saved: all of
    it when the marker lists the run's checkpoints but not this one (a user's `checkpoint-1.bak` copy); None when the
    marker lists no checkpoints (an older akshara-hf's run, or not a run's folder)."""
    saved = (output_marker(root) or {}).get("saved")
    listed = saved.get(folder.name) if isinstance(saved, dict) else None
    if isinstance(saved, dict) and not isinstance(listed, list):
        return _tree(folder) or ["."]  # the marker lists the run's checkpoints, not this one: nothing in it is the run's
    if not isinstance(listed, list):
        return None
    return [entry for entry in _tree(folder) if entry not in listed]


def _is_temporary(name: str) -> bool:
    """A `replace_file` temporary of a marker (another process of the same run writing it now)."""
    return name.startswith(f".{MARKER}.") and name.endswith(TEMPORARY_SUFFIX)


def _write_all(file, data: bytes) -> None:
    file.write(data)


def replace_file(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write `path` whole or not at all: into a new temporary file beside it, flushed, then renamed over it. A
    symbolic link at `path` is replaced by the file, never written through; a full disk or a kill leaves the old file
    as it was (and, when killed, a `.NAME.*.akshara-hf-tmp` file)."""
    path = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    # Not tempfile.mkstemp: its files are mode 0600 whatever the umask; a card or log must read like any other file.
    for _ in range(100):
        temporary = path.parent / f".{path.name}.{os.getpid()}-{os.urandom(4).hex()}{TEMPORARY_SUFFIX}"
        try:  # O_EXCL: never an existing file, nor through a link planted at that name
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            continue
    else:
        raise AksharaError(f"{path}: cannot create a temporary file beside it")
    try:
        with os.fdopen(fd, "wb") as file:
            _write_all(file, data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
    return path


# How the model card and its loss curve say akshara-hf wrote them (model_card writes them; a training run checks them
# before it trains, since it writes both again into an earlier run's folder).
CARD_MARKER = "<!-- written by akshara-hf model-card -->"
PNG_SOFTWARE = "akshara-hf model-card"  # the PNG's "Software" text chunk
CARD_FILE, LOSS_CURVE_FILE = "README.md", "loss_curve.png"
CARD_FILES = {CARD_FILE: "model card", LOSS_CURVE_FILE: "loss curve"}


def drawn_here(path: Path) -> bool:
    """Whether the PNG at `path` is a loss curve model_card drew (its text chunk says so)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.text.get("Software") == PNG_SOFTWARE
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError):  # not a PNG, or a damaged one
        return False


def foreign_card_files(folder: Path) -> list[Path]:
    """The README.md and loss_curve.png in `folder` that model_card did not write (a link or a named pipe there is
    refused: never written through, never read)."""
    readme, png = folder / CARD_FILE, folder / LOSS_CURVE_FILE
    foreign = []
    if regular_file_or_absent(readme, "the card") and CARD_MARKER not in readme.read_text("utf-8", errors="replace"):
        foreign.append(readme)
    if regular_file_or_absent(png, "the loss curve") and not drawn_here(png):
        foreign.append(png)
    return foreign


def regular_file_or_absent(path: Path, what: str = "") -> bool:
    """True for a regular file, False when nothing is there; anything else (a link, a folder) is refused."""
    if not path.is_symlink() and not path.exists():
        return False
    mode = os.lstat(path).st_mode
    if not stat.S_ISREG(mode):
        kind = "a symbolic link" if stat.S_ISLNK(mode) else "a folder" if stat.S_ISDIR(mode) else "not a file"
        raise AksharaError(f"{path}: not a regular file ({kind}); refusing to write {what or 'there'}")
    return True


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


def _staging_folders(output: Path) -> Iterator[tuple[Path, dict]]:
    """The staging folders beside `output` that prove they are ours and for it (name pattern and marker), with their
    markers."""
    if not output.parent.is_dir():
        return
    for candidate in sorted(output.parent.glob(f".{output.name}{STAGING_INFIX}*")):
        if candidate.is_symlink() or not candidate.is_dir():
            continue
        marker_path = candidate / STAGING_MARKER
        if marker_path.is_symlink() or not marker_path.is_file():
            continue
        try:
            marker = json.loads(marker_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(marker, dict) and isinstance(marker.get("command"), str) and marker.get("output") == output.name:
            yield candidate, marker


def recover_interrupted(output: Path) -> Path | None:
    """Put back the earlier output that a run killed between `staged_output`'s two renames left in its staging
    folder's `previous/` (whichever command that run was); `output` when it did."""
    if output.exists() or output.is_symlink():
        return None
    for candidate, marker in _staging_folders(output):
        previous = candidate / "previous"
        if previous.is_symlink() or not previous.is_dir() or not _process_is_gone(marker):
            continue
        try:
            os.replace(previous, output)
        except OSError:  # another process got there first
            continue
        print(f"{output}: restored the earlier output that an interrupted `akshara-hf {marker['command']}` run had "
              f"moved aside into {candidate}", file=sys.stderr)
        return output
    return None


def clean_stale_staging(output: Path, command: str) -> list[Path]:
    """Remove the staging folders that interrupted earlier `command` runs left beside `output`; return them. One that
    still holds an earlier output (`previous/`: the run died between the renames and `recover_interrupted` could not
    put it back, something else being at `output` now) is kept, and said so."""
    removed = []
    for candidate, marker in _staging_folders(output):
        if marker["command"] != command or not _process_is_gone(marker):
            continue
        previous = candidate / "previous"
        if (previous.exists() or previous.is_symlink()) and (candidate / "output").exists():
            print(f"{output}: an interrupted run's earlier output is kept in {previous} (something else is at "
                  f"{output} now); move it back by hand", file=sys.stderr)
            continue
        # Without previous/, or with previous/ and the new output moved into place: the run's replacement was done.
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
    _refuse_added_entries(output, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_staging(target, command)
    root = Path(tempfile.mkdtemp(prefix=f".{target.name}{STAGING_INFIX}", dir=target.parent))
    previous = root / "previous"
    replaced = False
    try:
        (root / STAGING_MARKER).write_text(json.dumps(
            {"command": command, "output": target.name, "host": socket.gethostname(), "pid": os.getpid()}))
        staging = Staging(root / "output", root / "scratch")
        staging.folder.mkdir()
        staging.scratch.mkdir()
        try:
            yield staging
            wrote = sorted(map(_entry_name, staging.folder.iterdir()))  # what --overwrite may delete later
            (staging.folder / MARKER).write_text(json.dumps({"command": command, "written_by": "akshara-hf",
                                                             "wrote": wrote}) + "\n")
        except Exception as error:
            full = disk_full_error(error, staging.folder, shown_as=target)
            if full is None:
                raise
            raise AksharaError(f"{full}; {target} is as it was" if target.exists() else f"{full}; nothing was written"
                               ) from None
        # Checked again: the destination may have changed during a long write.
        check_output(output, command, overwrite=overwrite, inputs=inputs)
        _refuse_added_entries(output, target)
        if target.exists():
            os.replace(target, previous)  # an empty folder, or our own earlier output (checked above)
        os.replace(staging.folder, target)
        replaced = True
    finally:
        if previous.exists() and not replaced and not (target.exists() or target.is_symlink()):
            os.replace(previous, target)  # interrupted between the two renames: put it back
        if previous.exists() and not replaced:  # could not be put back (something else is there): never deleted
            print(f"{target}: the earlier output is kept in {previous}", file=sys.stderr)
        else:
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
    # A copy's OSError names its source first (`filename`) and the destination second (`filename2`).
    named = [Path(name) for name in (getattr(error, "filename2", None), getattr(error, "filename", None))
             if isinstance(name, (str, os.PathLike))]
    written = next((path for path in named if path.absolute().is_relative_to(folder.absolute())), None)
    if written is None and folder.is_dir():
        files = [path for path in folder.rglob("*") if path.is_file() and not path.is_symlink()]
        written = max(files, key=lambda path: path.stat().st_mtime_ns, default=None)
    if written is None:
        return f"{shown_as or folder}: no space left on device while writing it"
    return f"{Path(shown_as or folder) / written.absolute().relative_to(folder.absolute())}: no space left on device " \
           "while writing it"


def add_overwrite_flag(parser) -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help="replace OUTPUT when it is an earlier output of this same command (anything else is "
                             "always refused)")
