"""Atomic file output: write beside the target, then os.replace, so readers never see a
half-written file and a failed run never clobbers a good one."""

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np


def _usual_mode(directory=False):
    """The mode open() / os.makedirs would give under the process's umask (mkstemp and
    mkdtemp make 0600 / 0700, which would keep results and exports from other users)."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


@contextlib.contextmanager
def atomic_path(path, suffix=None):
    """Yields a temporary path in `path`'s directory, ending in `suffix` (default: `path`'s
    extension); moved onto `path` on success."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    suffix = os.path.splitext(path)[1] if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=suffix, dir=directory)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, _usual_mode(directory=os.path.isdir(tmp)))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def staging_dir(parent, prefix):
    """Yields a new temporary directory inside `parent` (created if missing), for a caller
    that fills it and renames it into place; whatever is left of it is removed on exit."""
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=prefix, dir=parent)
    os.chmod(tmp, _usual_mode(directory=True))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


LOCK_FILE = ".lock"


class RunDirLockedError(RuntimeError):
    """Another live program holds the run directory's lock."""


def _holder(text):
    """The lock file's record -> dict (pid, command, started), {} if unreadable."""
    try:
        return json.loads(text) if text.strip() else {}
    except json.JSONDecodeError:
        return {}


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _describe(holder):
    return (f"PID {holder.get('pid', '?')}, `{holder.get('command', '?')}`, started "
            f"{holder.get('started', '?')}")


def lock_name(shard=None):
    """The lock file of a run directory, or of one shard (i, n) of a sharded grid."""
    return LOCK_FILE if shard is None else f"{LOCK_FILE}-shard-{shard[0]}-of-{shard[1]}"


def held_lock(directory, name=LOCK_FILE):
    """The RunDirLockedError run_dir_lock would raise for `directory` now, or None: a look
    at the lock without taking it or creating anything (a program's first check, before its
    heavy imports)."""
    try:
        fd = os.open(os.path.join(directory, name), os.O_RDONLY)
    except OSError:  # no lock file, or nothing there: the real lock will say what is wrong
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None
    except BlockingIOError:
        return RunDirLockedError(_locked_message(
            directory, _holder(os.pread(fd, 4096, 0).decode("utf-8", "replace"))))
    finally:
        os.close(fd)  # (releases the shared lock, if taken)


def _locked_message(directory, holder):
    return (f"{directory} is in use by another program ({_describe(holder)}): one writer "
            "per run directory. Wait for it, stop it, or use another --output_dir.")


@contextlib.contextmanager
def run_dir_lock(directory, enabled=True, log=None, name=LOCK_FILE, disposable=()):
    """One writer per run directory: holds an OS-level lock (fcntl.flock) on
    `directory`/.lock while the block runs; the kernel releases it when the process ends,
    crash included. Raises RunDirLockedError naming the holder (PID, command, start time)
    when another live program holds it. A record left by a dead process (killed before it
    could clear it) is taken over, with a line through `log(message)`. A directory this
    call created is removed again when the block fails and nothing but the lock (`name`)
    and the `disposable` files were written (a start-up check that refuses leaves nothing
    behind). `enabled` False (a non-chief worker) does nothing."""
    if not enabled:
        yield
        return
    created = not os.path.exists(directory)
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise NotADirectoryError(f"--output_dir={directory} is a file, not a directory")
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
            raise RunDirLockedError(_locked_message(directory, holder)) from None
        previous = _holder(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
        if previous and previous.get("pid") != os.getpid() and log:
            state = ("no longer running" if not _alive(int(previous.get("pid", 0)))
                     else "running but not holding it")
            log(f"{directory}: took over the lock left by {_describe(previous)}, {state}")
        record = json.dumps({"pid": os.getpid(), "command": " ".join(sys.argv),
                             "started": time.strftime("%Y-%m-%d %H:%M:%S")}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, record, 0)
        try:
            yield
        except BaseException:
            if created and set(os.listdir(directory)) <= {name, *disposable}:
                shutil.rmtree(directory, ignore_errors=True)
            raise
        finally:
            if os.path.exists(path):
                os.ftruncate(fd, 0)  # released cleanly: no record for the next to report
    finally:
        os.close(fd)  # (releases the lock)


class BrokenFileError(ValueError):
    """A file a run wrote that does not read back (truncated, corrupt): the message names
    it and what to do; the programs print it as one line (console.run_program)."""


def read_json(path):
    """A JSON file -> its value. Raises BrokenFileError naming the file when it does not
    read back (e.g. truncated)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise BrokenFileError(f"{path} does not read back ({type(e).__name__}: {str(e)[:120]})") \
            from None


def read_result(given, file_name, *required):
    """A finished run's result for --compare_with: `given` is the JSON file or the run's
    directory holding `file_name` -> (its content, the file's path). Raises ValueError
    naming --compare_with when it does not read back or lacks one of `required` keys."""
    path = (given if given.endswith(".json") and not os.path.isdir(given)
            else os.path.join(given, file_name))
    try:
        content = read_json(path)
        for key in required:
            content[key]
    except (BrokenFileError, KeyError, TypeError) as e:
        raise ValueError(f"--compare_with={given}: not a {file_name} that reads back "
                         f"({type(e).__name__}: {e})") from None
    return content, path


def write_text(path, text):
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


def write_bytes(path, data):
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def write_json(path, obj):
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")


def save_npz(path, **arrays):
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)


def file_sha256(path):
    """sha256 hex digest of a file's bytes (e.g. what a stage fingerprint records of a
    weights file)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def markdown_table(rows, columns):
    """[{col: value}] -> a Markdown table string; floats shown with 4 decimals."""
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"
