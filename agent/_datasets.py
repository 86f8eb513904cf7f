"""Datasets between slices: where a step's dataset references point on this node.

`spec_from_slice` (agent/_daemon.py) keeps each reference as the step declared it (a URI or a bare
Dataset name); `SliceRuntime.start` (agent/_runtime.py) resolves them here just before launch:
``file:///abs/path`` is that path, a bare name is ``<datasets root>/<herd>/<name>``. Every slice
runs as its own ephemeral host UID, so the slices of one herd share data through a per-herd host
GID: ``<root>/<herd>`` is owned by it with mode 2770 (setgid: new entries inherit the group), each
slice's gid_map maps its gid 0 to it, and steps run with umask 0002. The directory's group *is* the
record of the herd's GID, so nothing else has to be persisted.
"""

from __future__ import annotations

import os
import re
import stat
import urllib.parse
from pathlib import Path

HERD_DIR_MODE = 0o2770
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")


class DatasetError(ValueError):
    """A dataset reference or the datasets root cannot be used; the message says what to change."""


def is_named(ref: str) -> bool:
    """True for a bare Dataset name (resolved under the datasets root), False for a path or URI."""
    return "://" not in ref and not ref.startswith("/")


def unreachable_ancestor(path: Path) -> Path | None:
    """The first directory on the way to *path* (itself included) that other users cannot
    traverse (no o+x), or None when an unprivileged UID can reach *path*."""
    p = Path(os.path.realpath(path))
    for d in [*reversed(p.parents), p]:
        try:
            mode = d.stat().st_mode
        except FileNotFoundError:
            return None  # created later by us, with a traversable mode
        if stat.S_ISDIR(mode) and not mode & stat.S_IXOTH:
            return d
    return None


def check_root(root: Path) -> Path:
    """Validate the datasets root and return its real path; `DatasetError` says what is wrong."""
    real = Path(os.path.realpath(root))
    if real == Path("/tmp") or Path("/tmp") in real.parents:
        raise DatasetError(
            f"datasets root {root} is under /tmp, but every slice has its own private /tmp, so "
            "slices could not exchange data there; choose another datasets root "
            "(e.g. /var/lib/runink/datasets)"
        )
    bad = unreachable_ancestor(real)
    if bad is not None:
        mode = stat.S_IMODE(bad.stat().st_mode)
        raise DatasetError(
            f"datasets root {root} is not reachable by slices: {bad} (mode {mode:04o}) is not "
            f"traversable by other users; run `chmod o+x {bad}` or choose a datasets root "
            "outside it (e.g. /var/lib/runink/datasets)"
        )
    return real


def resolve(ref: str, herd: str, root: Path) -> str:
    """The path (or untouched non-file URI) a step sees for one dataset reference."""
    if not is_named(ref):
        if ref.startswith("/"):
            return ref
        u = urllib.parse.urlsplit(ref)
        if u.scheme != "file":
            return ref  # s3://, https://...: the step's own client handles it
        if u.netloc not in ("", "localhost") or not u.path.startswith("/"):
            raise DatasetError(f"dataset uri {ref!r}: only file:///absolute/path is supported")
        return urllib.parse.unquote(u.path)
    if not _NAME.match(ref) or ".." in ref:
        raise DatasetError(f"dataset name {ref!r} is not a valid name (letters, digits, . _ -)")
    return str(root / herd / ref)


def herd_dir(root: Path, herd: str, gid_range: tuple[int, int]) -> tuple[Path, int]:
    """``<root>/<herd>`` and the herd's host GID, creating both (mode 2770) on first use.

    Call `check_root` first. Not safe against a second agent on the same root (one per node).
    """
    if not _NAME.match(herd):
        raise DatasetError(f"herd name {herd!r} cannot name a directory")
    root.mkdir(parents=True, exist_ok=True)
    # Slices only traverse the root; listing it would show other herds' names.
    os.chmod(root, 0o711)
    d = root / herd
    lo, hi = gid_range
    try:
        st = d.stat()
    except FileNotFoundError:
        st = None
    if st is not None and lo <= st.st_gid < hi:
        gid = st.st_gid
    else:
        used = set()
        for other in root.iterdir():
            try:
                used.add(other.stat().st_gid)
            except FileNotFoundError:
                continue
        gid = next((g for g in range(lo, hi) if g not in used), -1)
        if gid < 0:
            raise DatasetError(f"no free herd GID left in {lo}-{hi} under {root}")
        d.mkdir(exist_ok=True)
        os.chown(d, 0, gid)
    if stat.S_IMODE(d.stat().st_mode) != HERD_DIR_MODE:
        os.chmod(d, HERD_DIR_MODE)
    return d, gid
