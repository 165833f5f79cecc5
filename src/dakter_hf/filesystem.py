"""Output directories that survive kills and concurrent runs; shared by training, generation and distillation.

* Atomic commits: a directory is built under a sibling staging name ([`staging_path`]) and renamed to its final name
  only when complete ([`commit_directory`]); a kill leaves the staging directory, never a half-written final one.
  Small files are replaced the same way ([`write_text_atomic`]).
* Ownership: every directory a tool creates to throw away later carries a marker file ([`mark_owned`]); tools
  delete only directories with their own marker ([`remove_owned`]), never a directory a user put there.
* Locks: one run per output directory ([`OutputDirLock`]); a second run stops at once with a message naming the lock
  file and its holder. The lock is an advisory `flock` held by the running process, so a killed run never leaves a
  stale lock behind: its lock file is taken over by the next run.
"""

import contextlib
import datetime
import json
import os
import shutil
import socket
import sys
import threading

from .errors import DAKTerError, OutputLockedError


try:
    import fcntl
except ImportError:  # Windows: exclusive creation only (see OutputDirLock)
    fcntl = None

#: Name of the marker file inside directories created (and deletable) by a dakter_hf tool.
OWNER_MARKER = ".dakter_hf_owner.json"
#: Suffix of a directory being written; renamed to its final name when complete.
STAGING_SUFFIX = ".incomplete"
#: Name of the lock file inside an output directory ([`OutputDirLock.inside`]).
LOCK_NAME = ".dakter_hf.lock"
#: Glob patterns (relative paths) of this module's bookkeeping files, which uploads of an output directory skip.
BOOKKEEPING_PATTERNS = (f"*{LOCK_NAME}", f"*{OWNER_MARKER}", f"*{STAGING_SUFFIX}/*", "*.replaced/*")


def _process_info() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv) or sys.executable,
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` through a temporary sibling and a rename: readers see the old or the new file, never a
    truncated one. The temporary file is named after the writing process and thread, so writers of the same file
    in other processes or threads never rename each other's half-written file (the last rename wins)."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------------------------------
# Ownership
# ----------------------------------------------------------------------------------------------------------------------


def mark_owned(path: str | os.PathLike, owner: str) -> None:
    """Create directory `path` (if needed) and mark it as created by tool `owner` (e.g. `"dakter-generate"`)."""
    os.makedirs(path, exist_ok=True)
    write_text_atomic(os.path.join(path, OWNER_MARKER), json.dumps({"owner": owner, **_process_info()}) + "\n")


def owner_of(path: str | os.PathLike) -> str | None:
    """The tool that created directory `path` ([`mark_owned`]), or `None` when it carries no (readable) marker."""
    try:
        with open(os.path.join(path, OWNER_MARKER), encoding="utf-8") as f:
            owner = json.load(f).get("owner")
    except (OSError, ValueError, AttributeError):
        return None
    return owner if isinstance(owner, str) else None


def remove_owned(path: str | os.PathLike, owner: str) -> bool:
    """Delete directory `path` if tool `owner` created it; `False` when there is nothing at `path`.

    Raises:
        [`DAKTerError`]: `path` exists but does not carry `owner`'s marker (it may hold the user's files).
    """
    path = os.fspath(path)
    if not os.path.lexists(path):
        return False
    if not os.path.isdir(path) or os.path.islink(path) or owner_of(path) != owner:
        raise DAKTerError(f"{path} exists but was not created by {owner} (no {OWNER_MARKER} marker inside); it may "
                          "hold your files, so it is left alone: move or delete it yourself, then run again.")
    shutil.rmtree(path)
    return True


# ----------------------------------------------------------------------------------------------------------------------
# Atomic directory commits
# ----------------------------------------------------------------------------------------------------------------------


def staging_path(target: str | os.PathLike) -> str:
    """The sibling where `target` is written before [`commit_directory`] renames it (`<target>.incomplete`)."""
    return os.fspath(target).rstrip(os.sep) + STAGING_SUFFIX


def start_staging(target: str | os.PathLike, owner: str) -> str:
    """An empty, owned staging directory for `target` (a leftover of a killed run of `owner` is discarded)."""
    staging = staging_path(target)
    remove_owned(staging, owner)
    mark_owned(staging, owner)
    return staging


def commit_directory(staging: str | os.PathLike, target: str | os.PathLike, owner: str) -> None:
    """Rename the complete directory `staging` to `target`.

    An existing `target` is replaced only if `owner` created it (else [`DAKTerError`]): it is first renamed aside
    (`<target>.replaced`), so a kill at any moment leaves either the old or the new complete directory in place (or,
    between the two renames, the old one under its aside name).
    """
    staging, target = os.fspath(staging), os.fspath(target).rstrip(os.sep)
    if os.path.lexists(target):
        aside = target + ".replaced"
        remove_owned(aside, owner)
        if owner_of(target) != owner:
            raise DAKTerError(f"{target} exists but was not created by {owner} (no {OWNER_MARKER} marker inside); "
                              "move or delete it yourself, then run again.")
        os.replace(target, aside)
        os.replace(staging, target)
        shutil.rmtree(aside)
    else:
        os.replace(staging, target)


# ----------------------------------------------------------------------------------------------------------------------
# Output directory locks
# ----------------------------------------------------------------------------------------------------------------------


def is_launcher_main_process() -> bool:
    """Whether this is process 0 of a `torchrun` / `accelerate launch` job (or a plain single process): the one that
    takes the output directory's lock, before `Accelerator` is created."""
    return int(os.environ.get("RANK", "0")) == 0


class OutputDirLock:
    """
    An exclusive lock on an output directory, held for the lifetime of a run (a context manager).

    The lock file holds the holder's pid, host, command and start time, which the second run's error names. On POSIX
    the lock is an `flock` on that file: the kernel releases it when the holder dies, so a killed run leaves no stale
    lock (the next run takes the file over). Without `fcntl` (Windows) the file is created exclusively and removed on
    release; after a hard kill, delete it by hand as the message says.

    Args:
        lock_path (`str`): the lock file (e.g. `<output_dir>/.dakter_hf.lock`); its directory is created.
        what (`str`): what is locked, for the message (e.g. `"--output_dir outputs/joint"`).
    """

    def __init__(self, lock_path: str | os.PathLike, what: str | None = None):
        self.lock_path = os.fspath(lock_path)
        self.what = what or os.path.dirname(self.lock_path)
        self._fd: int | None = None
        self._created_dir: str | None = None

    @classmethod
    def inside(cls, output_dir: str | os.PathLike, flag: str = "--output_dir") -> "OutputDirLock":
        """The lock of a run writing into `output_dir`: `<output_dir>/.dakter_hf.lock`."""
        return cls(os.path.join(output_dir, LOCK_NAME), what=f"{flag} {os.fspath(output_dir)}")

    @classmethod
    def beside(cls, output_dir: str | os.PathLike, flag: str = "--output_dir") -> "OutputDirLock":
        """The lock of a run creating `output_dir` at its end (generation): the sibling `<output_dir>.lock`."""
        return cls(os.fspath(output_dir).rstrip(os.sep) + ".lock", what=f"{flag} {os.fspath(output_dir)}")

    def _holder(self) -> str:
        try:
            with open(self.lock_path, encoding="utf-8") as f:
                info = json.load(f)
            return f"pid {info['pid']} on {info['host']} since {info['started']} ({info['command']})"
        except (OSError, ValueError, KeyError, TypeError):
            return "a run that has not written its details yet"

    def _busy(self) -> OutputLockedError:
        hint = "" if fcntl is not None else f"; if no run is active, delete {self.lock_path}"
        return OutputLockedError(f"{self.what} is in use by another run: lock {self.lock_path} is held by "
                                 f"{self._holder()}; wait for it to finish or choose another output directory{hint}.")

    def acquire(self) -> "OutputDirLock":
        """Take the lock, or raise [`OutputLockedError`] at once when another live run holds it."""
        if self._fd is not None:
            return self
        directory = os.path.dirname(os.path.abspath(self.lock_path))
        if os.path.lexists(directory) and not os.path.isdir(directory):
            raise DAKTerError(f"{self.what}: {directory} exists and is not a directory; expected a directory (or a "
                              "path that does not exist yet).")
        if not os.path.isdir(directory):
            with contextlib.suppress(FileExistsError):  # another run may create it at the same moment
                os.makedirs(directory)
                self._created_dir = directory  # removed again on release if the run left it empty
        if fcntl is None:
            try:
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                raise self._busy() from None
        else:
            while True:
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    os.close(fd)
                    raise self._busy() from None
                try:  # the file we locked must still be the one at lock_path (a releasing holder unlinks it)
                    if os.stat(self.lock_path).st_ino == os.fstat(fd).st_ino:
                        break
                except FileNotFoundError:
                    pass
                os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(_process_info()) + "\n").encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Release the lock (the lock file is removed)."""
        if self._fd is None:
            return
        try:
            os.unlink(self.lock_path)
        except FileNotFoundError:
            pass
        os.close(self._fd)  # closing also drops the flock
        self._fd = None
        if self._created_dir is not None:
            with contextlib.suppress(OSError):
                os.rmdir(self._created_dir)  # only if empty: a run that failed before writing anything
            self._created_dir = None

    def __enter__(self) -> "OutputDirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
