"""Leases: one holder at a time for a scene or an output, taken over when the holder is gone.

A lease is a small JSON file (or object) created atomically, holding who holds it and until
when::

    {"holder": "<uuid>", "host": "node-3", "pid": 4711, "pid_start": 1767000000.12,
     "since": "2026-01-01T02:00:00+00:00", "expires": 1767000060.0, "what": "..."}

- **Create** is exclusive: on a local filesystem ``os.open(O_CREAT | O_EXCL)``; on an fsspec
  filesystem ``open(mode="xb")`` (s3fs sends ``If-None-Match: *``, which AWS S3 and moto
  honour). Filesystems whose ``"xb"`` is not exclusive (the fsspec default makes it a plain
  write on some) are refused with a one-line error rather than trusted.
- **Renew**: while held, a heartbeat thread moves ``expires`` forward every ``ttl / 3``
  seconds (local: write a temporary file and rename it over the lease; object stores: one
  PUT), and notices when another holder has taken the lease over (:attr:`Lease.lost`).
- **Take over**: a lease whose ``expires`` lies in the past, or whose holder process is dead
  on this very host (pid not running, or a different process under that pid), is stale.
  Taking over goes through an exclusive guard file ``LEASE.takeover`` so that only one
  contender replaces a stale lease; the guard is ignored after ``ttl`` seconds.
- **Release** removes the lease if it is still ours.

Clocks of the hosts sharing leases are assumed to agree to well within ``ttl``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from roadnet.errors import InputError, RoadnetError
from roadnet.paths import is_url

__all__ = [
    "DEFAULT_TTL",
    "Lease",
    "LeaseHeldError",
    "LeaseInfo",
    "acquire",
    "hold_output",
    "output_lease_path",
    "read_lease",
]

log = logging.getLogger(__name__)

#: Seconds a lease lives without renewal (the heartbeat renews it every third of that).
DEFAULT_TTL = 60.0

_HOLDER = uuid.uuid4().hex  # this process's holder id prefix


class LeaseHeldError(RoadnetError):
    """Another live holder has the lease."""


@dataclass(frozen=True)
class LeaseInfo:
    """What a lease file says.

    Attributes:
        holder: the holder's id (unique per lease taken).
        host: host name of the holder.
        pid: process id of the holder on ``host``.
        pid_start: the holder process's start time (epoch seconds), to tell a reused pid.
        since: when the lease was taken (ISO 8601, UTC).
        expires: epoch seconds after which it is stale unless renewed.
        what: what is held, for messages.
    """

    holder: str
    host: str
    pid: int
    pid_start: float
    since: str
    expires: float
    what: str = ""

    @classmethod
    def from_bytes(cls, raw: bytes) -> LeaseInfo | None:
        """Parse a lease file; None when it is not a lease (e.g. half-written by a crash)."""
        try:
            data = json.loads(raw)
            return cls(
                holder=str(data["holder"]),
                host=str(data["host"]),
                pid=int(data["pid"]),
                pid_start=float(data.get("pid_start", 0.0)),
                since=str(data["since"]),
                expires=float(data["expires"]),
                what=str(data.get("what", "")),
            )
        except (ValueError, KeyError, TypeError):
            return None

    def to_bytes(self) -> bytes:
        """The lease file's content."""
        return json.dumps(self.__dict__, sort_keys=True).encode()

    def describe(self) -> str:
        """``host HOST, pid PID, since SINCE``."""
        return f"host {self.host}, pid {self.pid}, since {self.since}"

    def stale(self, *, now: float | None = None) -> bool:
        """Expired, or its holder process is gone from this host."""
        if (time.time() if now is None else now) > self.expires:
            return True
        if self.host != socket.gethostname():
            return False
        return not _process_alive(self.pid, self.pid_start)


def _process_alive(pid: int, start: float) -> bool:
    import psutil

    try:
        proc = psutil.Process(pid)
        if start and abs(proc.create_time() - start) > 1.0:
            return False  # the pid was reused by another process
        return bool(proc.status() != psutil.STATUS_ZOMBIE)
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied:
        return True


def _own_start() -> float:
    import psutil

    return float(psutil.Process(os.getpid()).create_time())


class _Store:
    """Exclusive create, read, replace and delete of one small file, local or fsspec."""

    def __init__(self, location: str | Path) -> None:
        self.location = str(location)
        self.local = not is_url(self.location)
        if self.local:
            self.fs: Any = None
            self.path = str(Path(self.location))
        else:
            import fsspec

            self.fs, self.path = fsspec.core.url_to_fs(self.location)
            if not self._exclusive_supported():
                raise InputError(
                    f"{self.location}: leases need an exclusive create, which "
                    f"{type(self.fs).__name__} does not offer; use a local folder or S3"
                )

    def _exclusive_supported(self) -> bool:
        names = {cls.__name__ for cls in type(self.fs).__mro__}
        return bool(names & {"S3FileSystem", "LocalFileSystem", "MemoryFileSystem"})

    def create(self, data: bytes) -> bool:
        """Create the file with ``data`` if it does not exist; whether this call did."""
        if self.local:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            return True
        try:
            with self.fs.open(self.path, "xb") as fh:
                fh.write(data)
        except FileExistsError:
            return False
        return True

    def read(self) -> bytes | None:
        """The file's bytes, or None when there is none."""
        try:
            if self.local:
                return Path(self.path).read_bytes()
            data: bytes = self.fs.cat_file(self.path)
            return data
        except FileNotFoundError:
            return None

    def replace(self, data: bytes) -> None:
        """Overwrite the file in one step (local: temporary file and rename)."""
        if self.local:
            tmp = f"{self.path}.{os.getpid()}-{threading.get_ident()}.tmp"
            with open(tmp, "wb") as fh:
                fh.write(data)
            os.replace(tmp, self.path)
            return
        self.fs.pipe_file(self.path, data)

    def delete(self) -> None:
        """Remove the file; no error when it is gone already."""
        with contextlib.suppress(FileNotFoundError):
            if self.local:
                os.unlink(self.path)
            else:
                self.fs.rm_file(self.path)

    def age(self) -> float | None:
        """Seconds since the file was last written, or None when there is none."""
        try:
            if self.local:
                return time.time() - os.stat(self.path).st_mtime
            modified: dt.datetime = self.fs.modified(self.path)
        except FileNotFoundError:
            return None
        if modified.tzinfo is None:
            modified = modified.replace(tzinfo=dt.UTC)
        return (dt.datetime.now(dt.UTC) - modified).total_seconds()


def read_lease(location: str | Path) -> LeaseInfo | None:
    """The lease at ``location``, or None when there is none (or it is not a lease)."""
    raw = _Store(location).read()
    return None if raw is None else LeaseInfo.from_bytes(raw)


class Lease:
    """A lease held by this process, renewed by a heartbeat thread until released.

    Use :func:`acquire` to take one; as a context manager it is released on exit.
    """

    def __init__(self, store: _Store, info: LeaseInfo, *, ttl: float) -> None:
        self._store = store
        self.info = info
        self.ttl = ttl
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._beat, name=f"lease {store.location}", daemon=True
        )
        self._thread.start()

    @property
    def location(self) -> str:
        """Where the lease file is."""
        return self._store.location

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                self.renew()
            except Exception as exc:  # a failed renewal is retried at the next beat
                log.warning("could not renew lease %s: %s", self.location, exc)
            if self.lost:
                return

    def renew(self) -> None:
        """Move the expiry ``ttl`` seconds on; set :attr:`lost` if another took it over."""
        current = LeaseInfo.from_bytes(self._store.read() or b"")
        if current is None or current.holder != self.info.holder:
            self.lost = True
            log.warning("lease %s was taken over by another holder", self.location)
            return
        info = LeaseInfo(**{**self.info.__dict__, "expires": time.time() + self.ttl})
        self._store.replace(info.to_bytes())
        self.info = info

    def release(self) -> None:
        """Stop renewing and remove the lease if it is still ours."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.ttl)
        if self.lost:
            return
        current = LeaseInfo.from_bytes(self._store.read() or b"")
        if current is not None and current.holder == self.info.holder:
            self._store.delete()

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _new_info(*, ttl: float, what: str) -> LeaseInfo:
    return LeaseInfo(
        holder=f"{_HOLDER}-{uuid.uuid4().hex[:8]}",
        host=socket.gethostname(),
        pid=os.getpid(),
        pid_start=_own_start(),
        since=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        expires=time.time() + ttl,
        what=what,
    )


def acquire(location: str | Path, *, ttl: float = DEFAULT_TTL, what: str = "") -> Lease | LeaseInfo:
    """Take the lease at ``location``: a held :class:`Lease`, or the live holder's info.

    A stale lease (see the module docs) is taken over. The returned lease is renewed every
    ``ttl / 3`` s until released.

    Args:
        location: the lease file: a local path or an fsspec URL.
        ttl: seconds the lease lives without renewal.
        what: what is held, recorded for messages.

    Raises:
        InputError: the filesystem offers no exclusive create.
    """
    store = _Store(location)
    for _ in range(3):
        info = _new_info(ttl=ttl, what=what)
        if store.create(info.to_bytes()):
            return Lease(store, info, ttl=ttl)
        raw = store.read()
        if raw is None:
            continue  # released between our create and read: try again
        current = LeaseInfo.from_bytes(raw)
        if current is not None and not current.stale():
            return current
        if current is None and (store.age() or 0.0) < ttl:
            # unreadable: a holder is still writing it, or it was cut off by a crash
            return LeaseInfo("?", "?", 0, 0.0, "(unreadable lease)", time.time() + ttl)
        if not _take_over(store, raw, info=info, ttl=ttl):
            current = LeaseInfo.from_bytes(store.read() or b"")
            if current is not None:
                return current
            continue
        log.info(
            "took over the stale lease %s (%s)",
            location,
            current.describe() if current else "unreadable",
        )
        return Lease(store, info, ttl=ttl)
    current = LeaseInfo.from_bytes(store.read() or b"")
    return current or LeaseInfo("?", "?", 0, 0.0, "(contended lease)", time.time() + ttl)


def _take_over(store: _Store, stale: bytes, *, info: LeaseInfo, ttl: float) -> bool:
    """Replace the ``stale`` lease by ``info`` unless another contender is doing so."""
    guard = _Store(f"{store.location}.takeover")
    if not guard.create(info.to_bytes()):
        age = guard.age()
        if age is None or age < ttl:
            return False
        guard.delete()  # left by a contender that died while taking over
        if not guard.create(info.to_bytes()):
            return False
    try:
        if store.read() != stale:
            return False  # renewed, released or taken over meanwhile
        store.delete()
        return store.create(info.to_bytes())
    finally:
        guard.delete()


def output_lease_path(out: str | Path) -> str:
    """The lease of an output: ``OUT.lease`` beside it."""
    text = str(out).rstrip("/")
    return f"{text}.lease"


@contextlib.contextmanager
def hold_output(out: str | Path, *, ttl: float | None = None) -> Iterator[Lease]:
    """Hold the lease of an output for the body: one writer per output at a time.

    Args:
        out: the output (a local path or an fsspec URL); the lease is ``OUT.lease``.
        ttl: lease lifetime (default :data:`DEFAULT_TTL`, or ``$ROADNET_LEASE_TTL``).

    Raises:
        LeaseHeldError: another live run holds the output (the message names its host, pid
            and since when).
    """
    seconds = ttl if ttl is not None else float(os.environ.get("ROADNET_LEASE_TTL", DEFAULT_TTL))
    path = output_lease_path(out)
    if not is_url(path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    got = acquire(path, ttl=seconds, what=str(out))
    if isinstance(got, LeaseInfo):
        raise LeaseHeldError(f"another run holds {out} ({got.describe()}; lease {path})")
    with got:
        yield got
