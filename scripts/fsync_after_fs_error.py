#!/usr/bin/env python3
"""Does an fsync that returned success survive an ext4 error? A probe of the kernel, no proctor.

Each round: a fresh 64 MiB ext4 in a file, loop-mounted with errors=remount-ro; one
thread appends 4 KiB records, each followed by fsync, and counts a record acknowledged
once its fsync returned success; after 50-400 ms the file system is made to fail as on a
disk error (/sys/fs/ext4/DEV/trigger_fs_error: the journal is aborted, the file system
turns read-only). Then it is unmounted, repaired (e2fsck -f -y; --mount-first: mounted
once so that the kernel replays its journal, then e2fsck) and mounted again, and every
acknowledged record is read back. A round that lost one counts.

    sudo scripts/fsync_after_fs_error.py --rounds 200 [--check again|dir] [--mount-first]

--check again: a second fsync of the file after each acknowledged one (an error then
takes the record back); --check dir: the same with an fsync of the directory.

Needs root (mount, losetup), e2fsprogs and a kernel with ext4's trigger_fs_error.
Found by tests/conformance/test_faults_readonly.py; docs/conformance.md, "Read-only
data directory", has what it means for proctor and the figures measured.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

RECORD = 4096


def run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60).stdout


def record(i: int) -> bytes:
    return f"{i:08d}".encode() * (RECORD // 8)


def one_round(work: Path, rng: random.Random, check: str, mount_first: bool) -> tuple[int, list[int]]:
    """(records acknowledged, acknowledged records lost)."""
    image, mount = work / "disk.img", work / "mnt"
    mount.mkdir(exist_ok=True)
    run("truncate", "-s", "64M", str(image))
    run("mkfs.ext4", "-q", "-F", str(image))
    run("mount", "-o", "loop,errors=remount-ro", str(image), str(mount))
    device = Path(run("findmnt", "-n", "-o", "SOURCE", str(mount)).strip()).name
    path = mount / "records"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    acknowledged: list[int] = []

    def appender() -> None:
        for i in range(1_000_000):
            try:
                os.pwrite(fd, record(i), i * RECORD)
                os.fsync(fd)
                if check == "again":
                    os.fsync(fd)
                elif check == "dir":
                    dfd = os.open(mount, os.O_RDONLY | os.O_DIRECTORY)
                    try:
                        os.fsync(dfd)
                    finally:
                        os.close(dfd)
            except OSError:
                return
            acknowledged.append(i)

    thread = threading.Thread(target=appender)
    thread.start()
    time.sleep(rng.uniform(0.05, 0.4))
    Path(f"/sys/fs/ext4/{device}/trigger_fs_error").write_text("fsync probe\n")
    thread.join()
    os.close(fd)
    run("umount", str(mount))
    if mount_first:
        run("mount", "-o", "loop", str(image), str(mount))
        run("umount", str(mount))
    subprocess.run(["e2fsck", "-f", "-y", str(image)], capture_output=True, timeout=60, check=False)
    run("mount", "-o", "loop", str(image), str(mount))
    try:
        data = path.read_bytes()
    finally:
        run("umount", str(mount))
        image.unlink()
    lost = [i for i in acknowledged if data[i * RECORD : (i + 1) * RECORD] != record(i)]
    return len(acknowledged), lost


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--check", choices=("none", "again", "dir"), default="none")
    parser.add_argument("--mount-first", action="store_true")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("fsync_after_fs_error.py: needs root (mount, loop devices)", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    rng = random.Random(seed)
    rounds_lost = 0
    with tempfile.TemporaryDirectory(prefix="fsync-probe-") as work:
        for n in range(args.rounds):
            count, lost = one_round(Path(work), rng, args.check, args.mount_first)
            if lost:
                rounds_lost += 1
                print(f"round {n}: {count} acknowledged, lost after the repair: {lost}")
    kernel = os.uname().release
    print("| kernel | check | repair | rounds | rounds that lost an acknowledged record |")
    print("|---|---|---|---:|---:|")
    repair = "mount, then e2fsck" if args.mount_first else "e2fsck"
    share = f"{rounds_lost} ({100 * rounds_lost / args.rounds:.1f} %)"
    print(f"| {kernel} | {args.check} | {repair} | {args.rounds} | {share} |")
    print(f"seed {seed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
