"""Leases on a local filesystem, between real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _s3 import s3_fs

from roadnet.leases import (
    Lease,
    LeaseHeldError,
    LeaseInfo,
    acquire,
    hold_output,
    output_lease_path,
    read_lease,
)


def test_acquire_holds_then_release_frees(tmp_path: Path) -> None:
    where = tmp_path / "a.lease"
    lease = acquire(where, ttl=30, what="scene a")
    assert isinstance(lease, Lease)
    info = read_lease(where)
    assert info is not None and info.pid == os.getpid() and info.what == "scene a"
    again = acquire(where, ttl=30)
    assert isinstance(again, LeaseInfo) and again.holder == info.holder  # held: not ours
    lease.release()
    assert not where.exists()
    second = acquire(where, ttl=30)
    assert isinstance(second, Lease)
    second.release()


def test_heartbeat_renews_and_an_expired_lease_is_taken_over(tmp_path: Path) -> None:
    where = tmp_path / "b.lease"
    lease = acquire(where, ttl=0.6)
    assert isinstance(lease, Lease)
    first = read_lease(where)
    time.sleep(1.0)  # past the first expiry: renewed meanwhile
    renewed = read_lease(where)
    assert first and renewed and renewed.expires > first.expires
    assert isinstance(acquire(where, ttl=0.6), LeaseInfo)
    # a holder on another host that stopped renewing: stale once expired
    lease.release()
    stale = LeaseInfo("other", "elsewhere", 1, 0.0, "2026-01-01T00:00:00+00:00", time.time() - 1)
    where.write_bytes(stale.to_bytes())
    taken = acquire(where, ttl=30)
    assert isinstance(taken, Lease)
    taken.release()
    live = LeaseInfo("other", "elsewhere", 1, 0.0, "2026-01-01T00:00:00+00:00", time.time() + 60)
    where.write_bytes(live.to_bytes())
    held = acquire(where, ttl=30)
    assert isinstance(held, LeaseInfo) and held.host == "elsewhere"  # alive elsewhere: respected


def test_a_lease_taken_over_is_lost_by_its_old_holder(tmp_path: Path) -> None:
    where = tmp_path / "c.lease"
    lease = acquire(where, ttl=30)
    assert isinstance(lease, Lease)
    data = json.loads(where.read_bytes())
    where.write_text(json.dumps({**data, "holder": "someone-else"}))
    lease.renew()
    assert lease.lost
    lease.release()
    assert where.exists()  # not ours any more: left alone


_HOLD = """
import sys, time
from roadnet.leases import acquire
lease = acquire(sys.argv[1], ttl=600)
print("held" if not hasattr(lease, "holder") else "refused", flush=True)
time.sleep(600)
"""


def test_a_killed_holder_on_this_host_is_taken_over_at_once(tmp_path: Path) -> None:
    where = tmp_path / "d.lease"
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(where)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        held = acquire(where, ttl=600)
        assert isinstance(held, LeaseInfo) and held.pid == proc.pid
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    taken = acquire(where, ttl=600)  # long ttl, but its holder is dead
    assert isinstance(taken, Lease)
    taken.release()


_CONTEND = """
import sys, time
from roadnet.leases import Lease, acquire
start = float(sys.argv[2])
while time.time() < start:
    time.sleep(0.001)
got = acquire(sys.argv[1], ttl=30)
print(int(isinstance(got, Lease)), flush=True)
time.sleep(600)  # keep holding while the others try (a late starter must find it held)
"""


@pytest.mark.parametrize("stale", [False, True])
def test_exactly_one_of_many_processes_gets_it(tmp_path: Path, stale: bool) -> None:
    where = tmp_path / "e.lease"
    if stale:  # all contenders race to take over one expired lease
        old = LeaseInfo("old", "elsewhere", 1, 0.0, "2026-01-01T00:00:00+00:00", time.time() - 5)
        where.write_bytes(old.to_bytes())
    start = time.time() + 4.0
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CONTEND, str(where), str(start)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    try:
        results = [int(p.stdout.readline().strip()) for p in procs]  # type: ignore[union-attr]
    finally:
        for p in procs:
            p.kill()
            p.communicate(timeout=30)
    assert sum(results) == 1


def test_hold_output_refuses_in_one_line_naming_the_holder(tmp_path: Path) -> None:
    out = tmp_path / "r.zarr"
    with hold_output(out, ttl=30):
        assert Path(output_lease_path(out)).exists()
        with pytest.raises(LeaseHeldError) as err, hold_output(out, ttl=30):
            pass
    message = str(err.value)
    assert "\n" not in message
    assert f"another run holds {out}" in message and f"pid {os.getpid()}" in message
    assert "since 20" in message
    assert not Path(output_lease_path(out)).exists()


def test_leases_on_s3_use_an_exclusive_put(s3_bucket: str) -> None:
    where = f"{s3_bucket}/leases/a.lease"
    lease = acquire(where, ttl=30, what="scene a")
    assert isinstance(lease, Lease)
    held = acquire(where, ttl=30)
    assert isinstance(held, LeaseInfo) and held.pid == os.getpid()
    lease.renew()
    assert not lease.lost
    lease.release()
    assert read_lease(where) is None
    stale = LeaseInfo("old", "elsewhere", 1, 0.0, "2026-01-01T00:00:00+00:00", time.time() - 1)
    s3_fs().pipe_file(where.removeprefix("s3://"), stale.to_bytes())
    taken = acquire(where, ttl=30)
    assert isinstance(taken, Lease)
    assert isinstance(acquire(where, ttl=30), LeaseInfo)
    taken.release()
