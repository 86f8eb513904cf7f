"""Slice launch latency: launch request -> the slice's process ran /bin/true and exited.

Prints p50/p99 (ms) over N launches for plain posix_spawn, the Runi Agent's fork server (with and
without a network namespace, with and without a fresh cgroup per launch), the `unshare` CLI,
bwrap, runc and crun (crun refuses hybrid cgroup hosts, so it runs in a private mount namespace
with /sys/fs/cgroup/unified lazily unmounted, as in research/agent.md), with ratios to plain spawn
and to runc measured in the same run. Needs root. Not a test: it never fails on a figure.

    .venv/bin/python bench/launch_bench.py [-n 200] [--quick]

``--quick`` runs only the plain-spawn anchors and our clone-per-launch and zygote rows.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from runink.agent import _cgroups, _launcher, _netpool

WARMUP = 10
PAUSE = 0.01
SLOW = 0.1


def measure(fn: Callable[[], object], n: int, pause: float = 0.0) -> list[float]:
    """Times *fn*; if it returns a callable, that clean-up (e.g. rmdir) runs outside the timing,
    then *pause* seconds of idle (a launch rate below saturation: pools refill while idle)."""
    for _ in range(WARMUP):
        after = fn()
        if callable(after):
            after()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        after = fn()
        out.append((time.perf_counter() - t0) * 1e3)
        if callable(after):
            after()
        if pause:
            time.sleep(pause)
    return out


def spawn_wait(argv: list[str]) -> None:
    pid = os.posix_spawn(argv[0], argv, {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin"})
    _, status = os.waitpid(pid, 0)
    if status != 0:
        raise RuntimeError(f"{argv[:3]} exited with status {status}")


def make_bundle(root: Path) -> Path:
    """A minimal OCI bundle: /bin/true plus its libraries, read-only root, default mounts."""
    bundle = root / "bundle"
    rootfs = bundle / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy2("/bin/true", rootfs / "bin" / "true")
    libs = subprocess.run(["ldd", "/bin/true"], capture_output=True, text=True, check=True).stdout
    for tok in libs.split():
        if tok.startswith("/") and os.path.exists(tok):
            dst = rootfs / tok.lstrip("/")
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(tok, dst)
    for d in ("proc", "dev", "sys", "tmp"):
        (rootfs / d).mkdir(exist_ok=True)
    subprocess.run(["runc", "spec"], cwd=bundle, check=True)
    cfg = json.loads((bundle / "config.json").read_text())
    cfg["process"]["terminal"] = False
    cfg["process"]["args"] = ["/bin/true"]
    cfg["root"]["readonly"] = True
    (bundle / "config.json").write_text(json.dumps(cfg))
    return bundle


def oci(runtime: str, bundle: Path) -> Callable[[], None]:
    def run() -> None:
        spawn_wait(
            [
                shutil.which(runtime) or runtime,
                "run",
                "-b",
                str(bundle),
                f"rk{uuid.uuid4().hex[:12]}",
            ]
        )

    return run


def report(results: dict[str, list[float]]) -> None:
    p50 = {k: statistics.median(v) for k, v in results.items()}
    base = p50.get("posix_spawn")
    runc = p50.get("runc")
    print(f"{'variant':60} {'p50 ms':>8} {'p99 ms':>8} {'x spawn':>8} {'runc / x':>9}")
    for k, v in results.items():
        v = sorted(v)
        p99 = v[min(len(v) - 1, int(len(v) * 0.99))]
        r_sp = f"{p50[k] / base:8.2f}" if base else "       -"
        r_rc = f"{runc / p50[k]:9.2f}" if runc else "        -"
        print(f"{k:60} {p50[k]:8.2f} {p99:8.2f} {r_sp} {r_rc}")


def inner_crun(n: int, bundle: Path) -> None:
    """Runs inside `unshare -m` with the cgroup2 mount hidden: prints crun and runc samples."""
    out = {
        "crun (private mntns, v1 only)": measure(oci("crun", bundle), n),
        "runc (private mntns, v1 only)": measure(oci("runc", bundle), n),
    }
    print(json.dumps(out))


def quick(
    lau: _launcher.Launcher,
    ours: Callable[[_launcher.NetworkMode, bool], Callable[[], object]],
    parents: _cgroups.Plan,
    results: dict[str, list[float]],
    n: int,
) -> None:
    """The rows the 3x-plain-spawn goal is read from, with their anchors, in one short run.

    "cgroup" rows launch as the agent does: into a cgroup of the slice's own, with limits.
    Moving a task between cgroups waits for an RCU grace period once no move happened for a
    few tens of ms, so the rows are also measured at a slow rate (SLOW idle between), as an
    agent launching a slice now and then sees it."""
    spawn = lambda: spawn_wait(["/bin/true"])  # noqa: E731
    fast, slow = f"{PAUSE * 1e3:.0f} ms idle", f"{SLOW * 1e3:.0f} ms idle"
    results[f"posix_spawn, {fast}"] = measure(spawn, n, PAUSE)
    results[f"posix_spawn, {slow}"] = measure(spawn, n, SLOW)
    results["runink clone: network none, back to back"] = measure(ours("none", False), n)
    results[f"runink clone: none + fresh cgroup, {fast}"] = measure(ours("none", True), n, PAUSE)
    results[f"runink clone: none + fresh cgroup, {slow}"] = measure(ours("none", True), n, SLOW)
    lau.enable_zygotes(2, ("none", "host"))
    time.sleep(0.2)
    results[f"runink zygote: network none, no cgroup, {fast}"] = measure(
        ours("none", False), n, PAUSE
    )
    lau.enable_zygotes(2, ("none", "host"), parents)
    time.sleep(0.2)
    results[f"runink zygote: none + cgroup (agent), {fast}"] = measure(ours("none", True), n, PAUSE)
    results[f"runink zygote: none + cgroup (agent), {slow}"] = measure(ours("none", True), n, SLOW)
    results[f"runink zygote: host + cgroup, {fast}"] = measure(ours("host", True), n, PAUSE)
    results["runink zygote: none + cgroup, back to back (pool of 2 drains)"] = measure(
        ours("none", True), n
    )
    lau.enable_zygotes(0)
    results["posix_spawn (again, after)"] = measure(spawn, n)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=200)
    ap.add_argument("--inner-crun", metavar="BUNDLE")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="only the spawn anchors, clone per launch and zygote rows (no other runtimes)",
    )
    args = ap.parse_args()
    if args.inner_crun:
        inner_crun(args.n, Path(args.inner_crun))
        return
    if os.geteuid() != 0:
        sys.exit("launch_bench needs root")
    n = args.n
    results: dict[str, list[float]] = {}
    results["posix_spawn"] = measure(lambda: spawn_wait(["/bin/true"]), n)

    lau = _launcher.Launcher.start()
    layout = _cgroups.detect()
    parent = f"runink-bench-{os.getpid()}"
    uids = iter(range(250_000, 10**9))

    _cgroups.ensure_parent(layout, parent)
    limits = _cgroups.Limits(1000, 256 << 20, 64)
    parents = _cgroups.plan(layout, "", limits, parent)

    def ours(
        network: _launcher.NetworkMode, cgroup: bool, netns_path: str | None = None
    ) -> Callable[[], object]:
        """One launch as the agent makes it; with *cgroup*, into a cgroup of its own with
        limits (the fork server makes it, or uses the one its zygote waits in)."""

        def run() -> object:
            uid = next(uids)
            plan = _cgroups.plan(layout, f"b{uid}", limits, parent) if cgroup else None
            req = _launcher.LaunchRequest(
                argv=("/bin/true",), env={}, hostname="bench", uid=uid, gid=uid,
                cgroup=plan, network=network, netns_path=netns_path,
            )  # fmt: skip
            launched = lau.launch_sync(req)
            status = lau.wait_sync(launched.pid)
            if status != 0:
                raise RuntimeError(f"slice exited with status {status}")
            if launched.cgroup is None:
                return None
            # The agent removes a slice's cgroup after reporting its exit: off the timed path.
            return _cgroups.SliceCgroup(layout, launched.cgroup, parent).remove

        return run

    try:
        quick(lau, ours, parents, results, n)
        if args.quick:
            report(results)
            return
        # network: isolated joins a netns the pool wired ahead of time; joining costs the same
        # whichever ready netns it is, so one is reused here. The build itself is timed apart.
        pool = _netpool.NetnsPool(1, prefix="rkb")
        built: list[_netpool.Netns] = []
        try:
            ns = pool.build()
            results["runink clone: isolated (pooled netns with veth) + fresh cgroup"] = measure(
                ours("isolated", True, ns.path), n
            )
            results["netns+veth build (pyroute2; pool refill, off the launch path)"] = measure(
                lambda: built.append(pool.build()), min(n, 30)
            )
        finally:
            pool.close()
    finally:
        lau.close()
        _cgroups.remove_parent(layout, parent)
    results["unshare CLI (pid,mnt,uts,ipc,net)"] = measure(
        lambda: spawn_wait(
            [
                "/usr/bin/unshare",
                "--pid",
                "--fork",
                "--mount",
                "--uts",
                "--ipc",
                "--net",
                "/bin/true",
            ]
        ),
        n,
    )
    if shutil.which("bwrap"):
        bw = ["/usr/bin/bwrap", "--unshare-all", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "/bin/true"]  # fmt: skip
        results["bwrap --unshare-all"] = measure(lambda: spawn_wait(bw), n)
    with tempfile.TemporaryDirectory(prefix="runink-bench-") as tmp:
        if shutil.which("runc"):
            bundle = make_bundle(Path(tmp))
            results["runc"] = measure(oci("runc", bundle), n)
            if shutil.which("crun"):
                cmd = (
                    "umount -l /sys/fs/cgroup/unified && exec "
                    f"{sys.executable} {os.path.abspath(__file__)} -n {n} --inner-crun {bundle}"
                )
                proc = subprocess.run(
                    ["unshare", "-m", "--propagation", "private", "sh", "-c", cmd],
                    capture_output=True, text=True,
                )  # fmt: skip
                if proc.returncode == 0:
                    results.update(json.loads(proc.stdout))
                else:
                    print(f"crun skipped: {proc.stderr.strip()[-300:]}", file=sys.stderr)
    report(results)


if __name__ == "__main__":
    main()
