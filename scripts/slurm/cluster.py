#!/usr/bin/env python
"""A throw-away single-node SLURM cluster in one folder: munge, slurmctld and slurmd.

    python scripts/slurm/cluster.py start /tmp/slurm     # prints: export SLURM_CONF=/tmp/slurm/slurm.conf
    export SLURM_CONF=/tmp/slurm/slurm.conf
    amtrain -m hydra/launcher=submitit_slurm hydra.launcher.partition=debug optim=am_adam,sgd epochs=1
    python scripts/slurm/cluster.py stop /tmp/slurm      # stops exactly the daemons it started

It needs Debian's (or Ubuntu's) ``slurm-wlm`` and ``munge`` packages (``apt-get install -y
slurm-wlm munge``); nothing of the system's own configuration is used or changed: the munge
key and socket, the state, spool, logs and PID files all live in the folder, the daemons
listen on free ports, and ``SLURM_CONF`` points the client commands (sbatch, squeue,
scancel, scontrol) at this cluster only. The node offers this machine's cores and memory,
in one partition ``debug``, with no accounting (``sacct`` is unavailable, as on many small
clusters). The tests use it through :func:`start` and :func:`stop`.
"""
from __future__ import annotations

import argparse
import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

TEMPLATE = Path(__file__).resolve().parent / "slurm.conf.in"
DAEMONS = ("slurmd", "slurmctld", "munged")  # stopped in this order
BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "scontrol", "sinfo")


class ClusterError(RuntimeError):
    pass


def missing_binaries() -> List[str]:
    return [b for b in BINARIES if shutil.which(b) is None and not Path(f"/usr/sbin/{b}").exists()]


def _binary(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def _free_ports(n: int) -> List[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024 - 512  # leave a little for the system
    return 1024


def env(folder) -> Dict[str, str]:
    """The environment for client commands (and amtrain) to reach this cluster."""
    return {**os.environ, "SLURM_CONF": str(Path(folder) / "slurm.conf")}


def start(folder, cpus: int = 0, timeout: float = 60.0) -> Dict[str, str]:
    """Bring the cluster up in ``folder`` (created); return the client environment."""
    missing = missing_binaries()
    if missing:
        raise ClusterError(f"SLURM or munge is not installed (missing {', '.join(missing)}): "
                           "apt-get install -y slurm-wlm munge")
    d = Path(folder).resolve()
    try:
        for sub in ("state", "spool", "munge", "jobs"):
            (d / sub).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ClusterError(f"cannot create the cluster folder {d} ({e.strerror}): choose another folder") from None
    os.chmod(d / "munge", 0o700)
    key = d / "munge" / "munge.key"
    if not key.exists():
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
    host = socket.gethostname().split(".")[0]
    ctld, slurmd = _free_ports(2)
    text = TEMPLATE.read_text()
    for name, value in {"DIR": d, "HOST": host, "USER": getpass.getuser(), "CTLD_PORT": ctld, "D_PORT": slurmd,
                        "CPUS": cpus or os.cpu_count() or 1, "MEM_MB": _memory_mb()}.items():
        text = text.replace(f"@{name}@", str(value))
    (d / "slurm.conf").write_text(text)
    log = open(d / "daemons.log", "ab")
    subprocess.run([_binary("munged"), f"--socket={d}/munge/munge.socket", f"--key-file={key}",
                    f"--pid-file={d}/munged.pid", f"--log-file={d}/munge/munged.log",
                    f"--seed-file={d}/munge/munged.seed", "--force"], check=True, stdout=log, stderr=log)
    e = env(d)
    subprocess.run([_binary("slurmctld"), "-f", str(d / "slurm.conf"), "-c"], check=True, env=e, stdout=log, stderr=log)
    subprocess.run([_binary("slurmd"), "-f", str(d / "slurm.conf")], check=True, env=e, stdout=log, stderr=log)
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = subprocess.run([_binary("sinfo"), "-h", "-o", "%T"], env=e, capture_output=True, text=True)
        if r.returncode == 0 and r.stdout.strip() in ("idle", "mixed", "allocated"):
            return e
        time.sleep(0.5)
    stop(d)
    raise ClusterError(f"the SLURM node did not come up within {timeout:.0f} s: see {d}/slurmctld.log and "
                       f"{d}/slurmd.log")


def _pid(path: Path):
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def stop(folder, timeout: float = 20.0) -> None:
    """Stop the daemons whose PID files are in ``folder`` (and only those)."""
    d = Path(folder)
    for name in DAEMONS:
        pid = _pid(d / f"{name}.pid")
        if pid is None:
            continue
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["start", "stop"])
    p.add_argument("folder")
    p.add_argument("--cpus", type=int, default=0, help="CPUs the node offers (default: all)")
    a = p.parse_args(argv)
    if a.cpus < 0:
        p.error(f"argument --cpus: {a.cpus} is below 0 (0: all)")
    try:
        if a.action == "start":
            start(a.folder, a.cpus)
            print(f"export SLURM_CONF={Path(a.folder).resolve() / 'slurm.conf'}")
        else:
            stop(a.folder)
    except ClusterError as e:
        print(f"cluster.py: error: {e}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as e:  # a daemon refused to start
        print(f"cluster.py: error: {Path(e.cmd[0]).name} exited {e.returncode}: see "
              f"{Path(a.folder).resolve() / 'daemons.log'}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
