"""Output paths checked before any work: a command that reads some files and writes others refuses,
before it reads a row, an output that is one of its inputs or another of its outputs (compared after
resolving symlinks, and as the same file on disk for hard links), an output that exists without
--force, a file where a folder is expected (or the reverse), and a folder it cannot write to.

    check_outputs(outputs=[("-o", out), ("--report", report)], inputs=[("IN", src)], force=args.force)

Each path comes with the flag or name the user gave it, so the error says which two collide.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

Named = tuple[str, "str | os.PathLike[str]"]  # (what the user called it: "-o", "--report", "IN"; the path)


@dataclass(frozen=True)
class Output:
    """One path a command will write: a file, or a folder when `folder` (a run folder, a split's DIR,
    a saved `datasets` folder)."""
    name: str
    path: Path
    folder: bool = False


def _same(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)  # hard links, and case-insensitive file systems
    except OSError:
        return False  # one of them does not exist yet


def _inside(inner: Path, outer: Path) -> bool:
    """`inner` lies under the folder `outer` (replacing `outer` would remove it)."""
    return inner.resolve().is_relative_to(outer.resolve()) and inner.resolve() != outer.resolve()


def _existing_ancestor(p: Path) -> Path:
    a = p.absolute()
    while not a.exists() and not a.is_symlink() and a != a.parent:
        a = a.parent
    return a


def rows_output(name: str, path: str | os.PathLike[str]) -> Output:
    """The Output of a file `write_rows` will write: a saved `datasets` folder when the path has no
    suffix (or is a folder), else a file whose format must follow from its name (checked now, not
    after the work)."""
    from preftune.data.io import detect_format

    p = Path(path)
    if p.is_dir() or (p.suffix == "" and not p.exists()):
        return Output(name, p, folder=True)
    detect_format(p)
    return Output(name, p)


def check_writable(out: Output) -> None:
    """ValueError when `out` could not be written: it is a folder where a file is expected (or the
    reverse), a parent on its way is a file, or the folder it would go in refuses a new file."""
    p = out.path
    if p.exists():
        if p.is_dir() and not out.folder:
            raise ValueError(f"{p}: {out.name} is a folder; give a file name")
        if not p.is_dir() and out.folder:
            raise ValueError(f"{p}: {out.name} exists and is a file, not a folder")
    parent = p if out.folder and p.is_dir() else p.parent
    base = _existing_ancestor(parent)
    if not base.is_dir():
        raise ValueError(f"{p}: {out.name} cannot be created: {base} is a file, not a folder")
    # A real probe, not os.access: root passes os.access on a read-only folder, and read-only
    # mounts or immutable folders refuse writes os.access would allow. TemporaryFile leaves no
    # name behind (O_TMPFILE, or an unlinked temporary).
    try:
        with tempfile.TemporaryFile(dir=base):
            pass
    except OSError as e:
        raise ValueError(f"{p}: {out.name} cannot be written: the folder {base} refuses new files "
                         f"({e.strerror or e})") from None


def check_outputs(outputs: Sequence[Named | Output], inputs: Sequence[Named] = (), *, force: bool = False) -> None:
    """Before any work: ValueError naming both paths when an output is an input (or an input lies
    inside an output folder, which replacing it would remove), when two outputs are the same path,
    when an output exists and not `force`, or when an output cannot be written (`check_writable`).
    `--force` never allows an output to replace an input."""
    outs = [o if isinstance(o, Output) else Output(o[0], Path(o[1])) for o in outputs]
    ins = [(name, Path(p)) for name, p in inputs if p is not None]
    for o in outs:
        for name, i in ins:
            if _same(o.path, i):
                raise ValueError(f"{o.path}: {o.name} is the same file as the input {name} ({i}); "
                                 "writing it would destroy the input (--force does not allow this)")
            tmp = o.path.with_name(o.path.name + ".tmp")  # what write_rows writes first, then renames
            if _same(tmp, i):
                raise ValueError(f"{o.path}: writing {o.name} goes through {tmp}, which is the input {name}; "
                                 "rename the input or choose another output")
            if o.folder and _inside(i, o.path):
                raise ValueError(f"{o.path}: {o.name} is a folder that holds the input {name} ({i}); "
                                 "choose another output folder")
    for k, a in enumerate(outs):
        for b in outs[k + 1:]:
            if _same(a.path, b.path):
                raise ValueError(f"{a.path}: {a.name} and {b.name} are the same path ({b.path}); "
                                 "one would replace the other")
    for o in outs:
        if not force and o.path.exists():
            raise ValueError(f"{o.path} already exists; pass --force to replace it")
        check_writable(o)
