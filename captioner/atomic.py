"""Atomic file writes: a temporary sibling that replaces the target only once it is whole.

A reader (the bot, a resumed run) then sees either the old file or the new one, never half of
one, whatever kills the writer. Temporary files and folders get the modes the umask gives any
new file, so what they become is readable by whoever could read a plainly written file.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Tries at a fresh random name before giving up; a clash of 64 random bits is not expected.
_NAME_TRIES = 100


def _unique_sibling(parent: Path, prefix: str, suffix: str, create) -> Path:
    for _ in range(_NAME_TRIES):
        candidate = parent / f"{prefix}{secrets.token_hex(8)}{suffix}"
        try:
            create(candidate)
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"no free temporary name in {parent} with prefix {prefix!r}")


def make_temp_file(parent: str | Path, prefix: str, suffix: str = "") -> Path:
    """Create an empty, uniquely named file in ``parent`` with the umask's usual mode.

    Unlike ``tempfile.mkstemp`` (always 0600), the mode is 0666 less the umask, applied by
    the kernel, so a file renamed into place is as readable as one written directly.
    """

    def create(candidate: Path) -> None:
        os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))

    return _unique_sibling(Path(parent), prefix, suffix, create)


def make_temp_dir(parent: str | Path, prefix: str) -> Path:
    """Create a uniquely named folder in ``parent`` with mode 0777 less the umask."""
    return _unique_sibling(Path(parent), prefix, "", lambda candidate: candidate.mkdir(0o777))


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``.

    The caller writes the temporary file; if the block raises, it is removed and ``path`` is
    left as it was. The suffix is kept so that writers that pick a format by it still work.
    """
    path = Path(path)
    tmp = make_temp_file(path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    try:
        yield tmp
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
