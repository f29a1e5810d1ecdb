"""The one way cfnsr writes files, so that nothing the user had is lost and every refusal names the user's path.

* ``Outputs``: every output of a command, declared and checked together *before* any work: not an input, not
  another output, an existing path only if it is a regular file (``-`` means stdout, for text outputs), a name the
  file system accepts, a folder that exists (or can be made), is writable and has space.
* ``atomic_path`` / ``write_text`` / ``write_json`` / ``save_npy``: a temporary file beside the target, then an
  atomic rename; a symlink is written through (the link stays), a non-regular file is never replaced; any OS error
  names the user's path and the reason, and the temporary file is removed on every exit path.
* ``temp_dir``: a private temporary folder (export work, extracted packages), removed on every exit path,
  including SIGTERM (the CLI turns it into an exception); leftovers of killed cfnsr processes are swept.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import stat
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .errors import CfnsrError

STDOUT = "-"
_TMP_TAG = ".cfnsr-"  # temporary files beside an output: .cfnsr-<pid>-XXXX.tmp (short: any name length fits)
_MIN_FREE = 1 << 20  # an output folder with less free space than this is reported full before any work

_REASONS = {
    errno.ENOSPC: "no space left on the device (the disk is full)",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENAMETOOLONG: "the name is too long for the file system",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder",
    errno.ELOOP: "too many levels of symbolic links",
}


def os_reason(e: OSError) -> str:
    return _REASONS.get(e.errno, e.strerror or str(e))


def os_error(path, e: OSError, action: str = "write") -> CfnsrError:
    """A CfnsrError naming ``path`` (the user's) and why the OS refused, whatever temporary name it was about."""
    return CfnsrError(f"cannot {action} {shown(path)}: {os_reason(e)}")


def shown(path) -> str:
    """A path as text that any terminal or file accepts: bytes of a name that is not UTF-8 become ``\\xNN``."""
    return str(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


# --------------------------------------------------------------------------------------------- checks
def _same(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    try:
        return a.resolve() == b.resolve()
    except (OSError, RuntimeError):
        return False


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a named pipe"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _target(path: Path) -> Path:
    """Where a write to ``path`` lands: ``path`` itself, or the end of its symlink chain (a link stays a link).
    Refused: an existing path that is not a regular file, and a link into /proc or /dev (a process's descriptor,
    a device)."""
    special = next((h for h in _link_chain(path) if _special(h)), None)
    if special is not None:
        if not os.path.lexists(path):
            raise CfnsrError(f"cannot write {shown(path)}: {shown(path.parent)} holds devices and processes, not "
                             "files")
        what = f"is a link to {shown(special)}" if special != Path(os.path.abspath(path)) else "is a special file"
        raise CfnsrError(f"{shown(path)} {what}, not a regular file: cfnsr replaces regular files only (write to "
                         "stdout with -)")
    if not os.path.lexists(path):
        return path
    real = Path(os.path.realpath(path))
    try:
        st = os.stat(real)
    except FileNotFoundError:
        return real  # a dangling link: the file is created where it points
    except OSError as e:
        raise os_error(path, e) from e
    if not stat.S_ISREG(st.st_mode):
        raise CfnsrError(f"{shown(path)} is {_kind(st.st_mode)}, not a regular file: cfnsr replaces regular files "
                         "only (write to stdout with -)")
    return real


def _special(path: Path) -> bool:
    """A path in /proc, or in /dev outside the /dev/shm tmpfs: a process's descriptor or a device, never a file."""
    p = str(path)
    return p.startswith("/proc/") or (p.startswith("/dev/") and not p.startswith("/dev/shm/"))


def _link_chain(path: Path) -> list[Path]:
    """``path`` and every hop of its symlink chain, as absolute paths (realpath alone hides /proc's magic links)."""
    p = Path(os.path.abspath(path))
    hops = [p]
    for _ in range(40):
        try:
            if not p.is_symlink():
                break
            t = Path(os.readlink(p))
        except OSError:
            break
        p = Path(os.path.abspath(t if t.is_absolute() else p.parent / t))
        hops.append(p)
    return hops


def name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def _existing_ancestor(path: Path) -> Path:
    p = path.parent
    while not os.path.lexists(p) and p != p.parent:
        p = p.parent
    return p


def _check_parent(path: Path, label: str) -> None:
    """The folder of ``path`` exists or can be made, can be written, has space; ``path``'s name fits in it."""
    anc = _existing_ancestor(path)
    if os.path.lexists(anc) and not anc.is_dir():
        raise CfnsrError(f"cannot write {label}{shown(path)}: {shown(anc)} is a file, not a folder")
    limit = name_max(anc)
    for part in path.parts[len(anc.parts):]:
        if len(os.fsencode(part)) > limit:
            raise CfnsrError(f"cannot write {label}{shown(path)}: the name {shown(part)[:40]}... is "
                             f"{len(os.fsencode(part))} bytes long and the file system allows {limit}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(prefix=f"{_TMP_TAG}{os.getpid()}-", suffix=".tmp", dir=path.parent)
        probe.close()
        free = shutil.disk_usage(path.parent).free
    except OSError as e:
        raise CfnsrError(f"cannot write {label}{shown(path)}: {os_reason(e)}") from e
    if free < _MIN_FREE:
        raise CfnsrError(f"cannot write {label}{shown(path)}: no space left on the device (the disk is full: "
                         f"{free} bytes free in {shown(path.parent)})")


def check_not_inputs(outputs, inputs) -> None:
    """Refuse, whatever --force says, an output path that is one of the command's inputs (the same path, or the same
    file through a link or a second name): a report must never replace the model, checkpoint or data it was made
    from."""
    ins = [Path(i) for i in inputs if i is not None]
    for out in (Path(o) for o in outputs if o is not None and str(o) != STDOUT):
        for i in ins:
            if _same(out, i):
                raise CfnsrError(f"output {shown(out)} would overwrite the input {shown(i)}: choose another output "
                                 "path")


@dataclass
class Output:
    path: Path | None  # None: stdout
    option: str  # how the user named it (--json, -o, "the Markdown beside --json", ...)
    text: bool = False
    folder: bool = False
    force: bool = True  # an existing regular file may be replaced


class Outputs:
    """Every output of one command, declared before any work and checked together by ``check()``.

    ``file(path, option)`` and ``folder(path, option)`` declare one output each (``-``: stdout; None: not asked
    for) and return the Outputs, so that one line declares and checks: ``Outputs(inputs).file(p, "-o").check()``.
    """

    def __init__(self, inputs=(), force: bool = True):
        self.inputs = [Path(i) for i in inputs if i is not None]
        self.force = force
        self.items: list[Output] = []

    def file(self, path, option: str, *, text: bool = False, force: bool | None = None) -> "Outputs":
        if path is None:
            return self
        if str(path) == STDOUT:
            if not text:
                raise CfnsrError(f"{option} -: only text outputs can go to stdout")
            self.items.append(Output(None, option, text=True))
            return self
        self.items.append(Output(Path(path), option, text=text, force=self.force if force is None else force))
        return self

    def folder(self, path, option: str) -> "Outputs":
        if path is not None:
            self.items.append(Output(Path(path), option, folder=True))
        return self

    @property
    def paths(self) -> list[Path]:
        return [o.path for o in self.items if o.path is not None]

    def check(self) -> "Outputs":
        """Every declared output against the inputs, the others and the file system; raises CfnsrError naming
        the first problem."""
        stdout = [o for o in self.items if o.path is None]
        if len(stdout) > 1:
            raise CfnsrError(f"{stdout[0].option} and {stdout[1].option} both write to stdout (-): give one of them "
                             "a file")
        check_not_inputs(self.paths, self.inputs)
        seen: dict[str, Output] = {}
        for o in self.items:
            if o.path is None:
                continue
            try:
                key = os.path.realpath(o.path)
            except (OSError, RuntimeError):
                key = str(o.path.absolute())
            if key in seen and not (o.folder and seen[key].folder):
                raise CfnsrError(f"{seen[key].option} and {o.option} both write {shown(o.path)}: give them different "
                                 "paths")
            seen[key] = o
        for o in self.items:
            if o.path is not None:
                (check_folder if o.folder else check_file)(o.path, o.force, o.option)
        return self


def check_file(path, force: bool = True, option: str = "") -> Path:
    """One output file: writable where it is, and an existing one a regular file (replaced only with ``force``)."""
    path = Path(path)
    label = f"{option} " if option else ""
    target = _target(path)
    if os.path.lexists(target) and not force:
        raise CfnsrError(f"{shown(path)} already exists; pass --force to overwrite it")
    _check_parent(target, label)
    return path


def check_folder(path, force: bool = True, option: str = "") -> Path:
    """One output folder: a folder if it exists, else one that can be made."""
    path = Path(path)
    if os.path.lexists(path) and not path.is_dir():
        raise CfnsrError(f"cannot write into {shown(path)}: it exists and is not a folder")
    if not path.exists():
        _check_parent(path, f"{option} " if option else "")
    else:
        try:
            with tempfile.TemporaryFile(dir=path):
                pass
            free = shutil.disk_usage(path).free
        except OSError as e:
            raise CfnsrError(f"cannot write into {shown(path)}: {os_reason(e)}") from e
        if free < _MIN_FREE:
            raise CfnsrError(f"cannot write into {shown(path)}: no space left on the device (the disk is full: "
                             f"{free} bytes free)")
    return path


# --------------------------------------------------------------------------------------------- writing
def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (one of another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sweep(folder: Path, prefix: str) -> None:
    """Remove what killed cfnsr processes left in ``folder``: entries ``<prefix><pid>-...`` whose pid is gone."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for e in entries:
        if not e.name.startswith(prefix):
            continue
        pid = e.name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            try:
                if e.is_dir(follow_symlinks=False):
                    shutil.rmtree(e.path, ignore_errors=True)
                else:
                    os.unlink(e.path)
            except OSError:
                pass


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, force: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed over ``path``, on failure removed.

    A reader never sees a half-written file, and an existing file survives a failed write. A symlink is written
    through (the link stays); a path that is not a regular file is refused. OS errors name ``path``.
    """
    user = Path(path)
    target = _target(user)
    if os.path.lexists(target) and not force:
        raise CfnsrError(f"{shown(user)} already exists; pass --force to overwrite it")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _sweep(target.parent, _TMP_TAG)
        fd, tmp = tempfile.mkstemp(prefix=f"{_TMP_TAG}{os.getpid()}-", suffix=".tmp", dir=target.parent)
    except OSError as e:
        raise os_error(user, e) from e
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; the result gets the mode open() would give it
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except OSError as e:
        if e.filename in (None, tmp, str(target)) or e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            raise os_error(user, e) from e
        raise
    finally:
        if os.path.lexists(tmp_path):
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str, force: bool = True) -> Path | None:
    """``text`` to ``path`` atomically, or to stdout when ``path`` is ``-`` (or None via ``Outputs``).

    Names that are not UTF-8 (``surrogateescape``, as Python decodes them) are written as their original bytes."""
    if path is None or str(path) == STDOUT:
        out = sys.stdout
        if hasattr(out, "buffer"):
            out.flush()
            out.buffer.write(text.encode("utf-8", "surrogateescape"))
            out.buffer.flush()
        else:
            out.write(text)
        return None
    with atomic_path(path, force) as tmp:
        tmp.write_text(text, encoding="utf-8", errors="surrogateescape")
    return Path(path)


def write_json(path: str | os.PathLike, obj, force: bool = True) -> Path | None:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n", force)


def save_npy(path: str | os.PathLike, array, force: bool = True) -> str:
    """``np.save`` through ``atomic_path``, flushed to disk; returns the sha256 of the array's bytes."""
    import numpy as np

    with atomic_path(path, force) as tmp, open(tmp, "wb") as f:
        np.save(f, array)
        f.flush()
        os.fsync(f.fileno())
    return sha256_bytes(np.ascontiguousarray(array).tobytes())


@contextlib.contextmanager
def temp_dir(kind: str) -> Iterator[Path]:
    """A private folder in TMPDIR for intermediate files, removed on every exit path (errors, Ctrl-C, SIGTERM via
    the CLI); folders that killed cfnsr processes left behind are removed first. A full or unwritable TMPDIR is
    reported as such."""
    base = Path(tempfile.gettempdir())
    prefix = "cfnsr-"
    _sweep(base, prefix)
    try:
        d = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-{kind}-", dir=base))
    except OSError as e:
        raise CfnsrError(f"cannot make a temporary folder in {shown(base)} (TMPDIR): {os_reason(e)}; set TMPDIR "
                         "to a folder with space") from e
    try:
        yield d
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT) and _full(base):
            raise CfnsrError(f"the temporary folder {shown(base)} (TMPDIR) is full: set TMPDIR to a folder with "
                             "space") from e
        raise
    except RuntimeError as e:  # torch's writers report a full disk as a RuntimeError
        if _full(base):
            raise CfnsrError(f"the temporary folder {shown(base)} (TMPDIR) is full ({str(e).splitlines()[0][:80]}): "
                             "set TMPDIR to a folder with space") from e
        raise
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < _MIN_FREE
    except OSError:
        return False


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
