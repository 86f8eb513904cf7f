"""The ``git`` command, run as an asyncio subprocess: what the GitOps controller knows about Git.

Reads a repository *at a commit* (``git rev-parse`` / ``git ls-remote`` for the ref, ``git ls-tree``
+ one ``git cat-file --batch`` for the blobs), never the working tree, except for
:func:`read_worktree` (``watch: worktree``). A local path or ``file://`` URL is read in place;
any other URL is fetched into a bare cache repository first. Failures raise
``runink.schemas.errors``: ``NotFound`` for a missing ref or path, ``Unavailable`` for everything
else (a fetch that failed, git missing), which the controller retries with backoff.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from runink.schemas import errors

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")

# Never prompt for credentials, never read the user's global config or hooks: the controller
# runs unattended and must see the same repository every engineer sees.
_ENV = {
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "LC_ALL": "C",
}


@dataclass(frozen=True, slots=True)
class File:
    """One manifest file of the tree: its path relative to the repository root, and its bytes."""

    path: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Ref:
    """What to follow (at most one is set; none means the branch ``main``)."""

    branch: str | None = None
    tag: str | None = None
    commit: str | None = None

    def spec(self) -> str:
        if self.commit:
            return self.commit
        if self.tag:
            return f"refs/tags/{self.tag}"
        return f"refs/heads/{self.branch or 'main'}"

    def __str__(self) -> str:
        if self.commit:
            return f"commit {self.commit}"
        return f"tag {self.tag}" if self.tag else f"branch {self.branch or 'main'}"


def local_path(url: str) -> Path | None:
    """The directory of a local repository (a path or ``file://`` URL), else ``None``."""
    if url.startswith("file://"):
        return Path(urllib.parse.unquote(urllib.parse.urlparse(url).path))
    if "://" in url or (":" in url.split("/", 1)[0] and not url.startswith("/")):
        return None  # https://, ssh://, or scp-like user@host:path
    return Path(url)


async def run(*args: str, cwd: Path | None = None, stdin: bytes | None = None) -> bytes:
    """``git args...``; its stdout, or ``Unavailable``/``NotFound`` carrying git's stderr."""
    try:
        proc = await asyncio.create_subprocess_exec(
            "git",
            *args,
            cwd=cwd,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **_ENV},
        )
    except FileNotFoundError:
        raise errors.Unavailable("the git command is not installed") from None
    try:
        out, err = await proc.communicate(stdin)
    except BaseException:
        # Cancelled mid-command: do not leave a git process behind.
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    if proc.returncode != 0:
        msg = err.decode(errors="replace").strip() or f"exit status {proc.returncode}"
        cls = errors.NotFound if _looks_missing(msg) else errors.Unavailable
        raise cls(f"git {args[0]}: {msg}")
    return out


def _looks_missing(stderr: str) -> bool:
    low = stderr.lower()
    return any(
        s in low
        for s in (
            "unknown revision",
            "not a valid object",
            "needed a single revision",
            "does not exist",
            "not a git repository",
            "couldn't find remote ref",
            "bad revision",
        )
    )


async def git_dir(repo: Path) -> Path:
    """The ``.git`` directory of a local repository (or the repository itself when bare)."""
    out = await run("rev-parse", "--absolute-git-dir", cwd=repo)
    return Path(out.decode().strip())


async def resolve(repo: Path, ref: Ref) -> str:
    """The full commit SHA ``ref`` points at in the local repository ``repo``."""
    if not await asyncio.to_thread(repo.is_dir):
        raise errors.NotFound(f"repository {repo}: no such directory")
    try:
        out = await run("rev-parse", "--verify", "--quiet", f"{ref.spec()}^{{commit}}", cwd=repo)
    except errors.Unavailable as e:
        # rev-parse --quiet exits 1 without a message for a missing ref.
        if "exit status" in e.message:
            raise errors.NotFound(f"repository {repo} has no {ref}") from None
        raise
    return out.decode().strip()


async def fetch(url: str, ref: Ref, cache: Path) -> tuple[Path, str]:
    """Fetch ``ref`` of a remote ``url`` into a bare repository under ``cache``; (repo, commit)."""
    repo = cache / hashlib.sha256(url.encode()).hexdigest()[:16]
    if not (repo / "HEAD").exists():
        repo.mkdir(parents=True, exist_ok=True)
        await run("init", "--bare", "--quiet", str(repo))
    await run("fetch", "--quiet", "--depth", "1", "--no-tags", url, ref.spec(), cwd=repo)
    out = await run("rev-parse", "FETCH_HEAD^{commit}", cwd=repo)
    return repo, out.decode().strip()


def _under(path: str, prefix: str) -> bool:
    return prefix in ("", ".") or path == prefix or path.startswith(prefix.rstrip("/") + "/")


async def read_tree(repo: Path, commit: str, path: str = ".") -> list[File]:
    """Every manifest file (``.yaml``, ``.yml``, ``.json``) under ``path`` at ``commit``, sorted.

    Two git processes whatever the number of files: ``ls-tree -r`` lists the blobs and one
    ``cat-file --batch`` streams them all.
    """
    prefix = path.strip("/") if path not in ("", ".", "./") else ""
    listing = await run("ls-tree", "-r", "-z", "--full-tree", commit, cwd=repo)
    blobs: list[tuple[str, str]] = []
    for entry in listing.split(b"\0"):
        if not entry:
            continue
        meta, _, name_b = entry.partition(b"\t")
        mode, kind, sha = meta.decode().split()
        name = name_b.decode("utf-8", errors="surrogateescape")
        if kind != "blob" or mode == "120000":  # symlinks could point outside the tree
            continue
        if _under(name, prefix) and name.endswith(MANIFEST_SUFFIXES):
            blobs.append((name, sha))
    if (
        prefix
        and not any(_under(n, prefix) for n, _ in blobs)
        and not await _tree_has(repo, commit, prefix)
    ):
        raise errors.NotFound(f"path {prefix!r} does not exist at commit {commit[:12]}")
    if not blobs:
        return []
    blobs.sort()
    out = await run(
        "cat-file", "--batch", cwd=repo, stdin="".join(f"{sha}\n" for _, sha in blobs).encode()
    )
    files: list[File] = []
    pos = 0
    for name, _sha in blobs:
        header_end = out.index(b"\n", pos)
        size = int(out[pos:header_end].split()[2])
        start = header_end + 1
        files.append(File(name, out[start : start + size]))
        pos = start + size + 1  # the blob is followed by a newline
    return files


async def _tree_has(repo: Path, commit: str, prefix: str) -> bool:
    try:
        await run("rev-parse", "--verify", "--quiet", f"{commit}:{prefix}", cwd=repo)
    except errors.RuninkError:
        return False
    return True


def read_worktree(repo: Path, path: str = ".") -> tuple[list[File], str]:
    """Manifest files under ``path`` in the working tree (``watch: worktree``) and their digest.

    Synchronous and small by design (a development checkout); the digest names the revision.
    """
    root = (repo / path).resolve()
    if not root.is_relative_to(repo.resolve()):
        raise errors.Invalid(f"path {path!r} leaves the repository")
    if not root.exists():
        raise errors.NotFound(f"path {path!r} does not exist in {repo}")
    found = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    files: list[File] = []
    digest = hashlib.sha256()
    for p in found:
        rel = p.relative_to(repo.resolve())
        if ".git" in rel.parts or p.suffix not in MANIFEST_SUFFIXES or p.is_symlink():
            continue
        data = p.read_bytes()
        files.append(File(rel.as_posix(), data))
        digest.update(rel.as_posix().encode() + b"\0" + hashlib.sha256(data).digest())
    return files, digest.hexdigest()


__all__ = [
    "MANIFEST_SUFFIXES",
    "File",
    "Ref",
    "fetch",
    "git_dir",
    "local_path",
    "read_tree",
    "read_worktree",
    "resolve",
    "run",
]
