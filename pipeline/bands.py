"""Computing a chunked array on a Dask cluster in bands of chunk rows, memory bounded.

Submitting every task of a large scene at once makes the scheduler and the client hold the
state of all of them (a dozen or more tasks per chunk) for the whole run, so their memory grows
with the scene. :func:`compute_in_bands` submits the chunks instead in bands of whole chunk
rows, at most ``in_flight`` bands at a time, and hands each computed chunk to a function on
the worker (e.g. a Zarr write). Neighbouring bands share tasks — the scene reads and
pass-1 blocks along their border. A band keeps futures of the tasks it shares with the next
band, and the next band's graph stops at those keys, so the scheduler reuses the results
instead of computing them twice.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

import dask.array as da
import numpy as np
from dask._task_spec import convert_legacy_graph, resolve_aliases
from dask.base import optimize, tokenize
from dask.core import reverse_dict
from distributed import Client, Future, as_completed

__all__ = ["band_rows", "compute_in_bands", "plan_bands", "task_closure"]

Key = Any


def band_rows(cols: int, *, band_chunks: int) -> int:
    """Chunk rows per band: as many whole rows as fit ``band_chunks`` chunks, at least one."""
    return max(1, band_chunks // max(cols, 1))


def plan_bands(todo: np.ndarray, *, rows: int) -> list[np.ndarray]:
    """Group the chunks to compute into bands of ``rows`` chunk rows.

    Args:
        todo: ``(n, 2)`` int ``(row, col)`` chunk indices.
        rows: chunk rows per band.

    Returns:
        The non-empty bands in row order, each ``(m, 2)`` int in row-major order.
    """
    todo = np.asarray(todo, dtype=np.int64).reshape(-1, 2)
    todo = todo[np.lexsort((todo[:, 1], todo[:, 0]))]
    band = todo[:, 0] // rows
    return [todo[band == b] for b in np.unique(band)]


def task_closure(
    graph: Mapping[Key, Any], keys: Iterable[Key], *, stop: Collection[Key] = ()
) -> set[Key]:
    """The keys of ``keys`` and every task they depend on, not looking past ``stop``.

    Args:
        graph: materialized task graph of :class:`dask.task_spec.GraphNode`.
        keys: the wanted keys.
        stop: keys included but whose dependencies are not followed.
    """
    seen: set[Key] = set()
    work = list(keys)
    while work:
        key = work.pop()
        if key in seen:
            continue
        seen.add(key)
        if key not in stop:
            work.extend(graph[key].dependencies)
    return seen


def compute_in_bands(
    client: Client,
    array: da.Array,
    todo: np.ndarray,
    *,
    consume: Callable[..., None],
    band_chunks: int = 32,
    in_flight: int = 2,
    progress: bool = False,
) -> None:
    """Compute chunks of a ``(k, y, x)`` array with one chunk along ``k``, band by band.

    Args:
        client: the Dask client.
        array: lazy array, chunked ``((k,), ys, xs)``.
        todo: ``(n, 2)`` int ``(row, col)`` indices of the chunks to compute.
        consume: called on a worker as ``consume(block, row=row, col=col)`` for every
            computed chunk; its result is dropped.
        band_chunks: chunks per band (whole rows, at least one row).
        in_flight: bands submitted at a time.
        progress: show a progress bar.

    Raises:
        Exception: the first error of any task, as raised on the worker.
    """
    # Explicit task specs: a band's graph leaves out the keys an earlier band holds, and
    # legacy tuple tasks could not tell a reference to such a key from a literal tuple.
    # Each chunk's write is a task of the graph, fused with the task that computes the chunk
    # (when nothing else needs it), and the graph is optimized (linear chains fused): fewer
    # tasks for the scheduler, and no computed chunk travels back and forth.
    written = da.map_blocks(
        _consume_block,
        array,
        consume=consume,
        chunks=((1,), *((1,) * n for n in array.numblocks[1:])),
        dtype=bool,
        meta=np.empty((0, 0, 0), dtype=bool),
        name="roadnet-write-" + tokenize(array.name, consume),
    )
    (written,) = optimize(written)
    graph = convert_legacy_graph(dict(written.__dask_graph__()))
    bands = plan_bands(todo, rows=band_rows(array.numblocks[2], band_chunks=band_chunks))
    wanted = [[(written.name, 0, int(r), int(c)) for r, c in band] for band in bands]
    # Fusion leaves alias tasks (a key standing for a renamed fused task) that the scheduler
    # would run as tasks of their own: fold each into its target.
    dependents = reverse_dict({key: task.dependencies for key, task in graph.items()})
    graph = resolve_aliases(graph, {key for band in wanted for key in band}, dependents)
    held: dict[Key, Future] = {}
    pending: deque[set[Future]] = deque()
    done = as_completed()
    bar = _Bar(total=len(todo), enabled=progress)

    def submit(i: int) -> None:
        nonlocal held
        closure = task_closure(graph, wanted[i], stop=held.keys())
        shared = closure & task_closure(graph, wanted[i + 1]) if i + 1 < len(bands) else set()
        new_shared = [k for k in shared if k not in held]
        dsk = {k: graph[k] for k in closure if k not in held}
        futures = client.get(dsk, [*wanted[i], *new_shared], sync=False)
        writes, got = futures[: len(wanted[i])], futures[len(wanted[i]) :]
        held = {
            **{k: held[k] for k in shared if k in held},
            **dict(zip(new_shared, got, strict=True)),
        }
        pending.append(set(writes))
        done.update(writes)

    with bar:
        submitted = 0
        while submitted < min(in_flight, len(bands)):
            submit(submitted)
            submitted += 1
        for future in done:
            future.result()
            bar.advance()
            for writes in pending:
                writes.discard(future)
            while pending and not pending[0]:
                pending.popleft()
                if submitted < len(bands):
                    submit(submitted)
                    submitted += 1


def _consume_block(
    block: np.ndarray, *, consume: Callable[..., None], block_info: dict[Any, Any]
) -> np.ndarray:
    """Hand one computed chunk to ``consume``; a one-element flag stands for it."""
    _, row, col = block_info[0]["chunk-location"]
    consume(block, row=int(row), col=int(col))
    return np.ones((1, 1, 1), dtype=bool)


class _Bar:
    """A rich progress bar, or nothing."""

    def __init__(self, *, total: int, enabled: bool) -> None:
        self._progress: Any = None
        if enabled:
            from rich.progress import Progress

            self._progress = Progress(transient=False)
            self._task = self._progress.add_task("chunks", total=total)

    def __enter__(self) -> _Bar:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def advance(self) -> None:
        if self._progress is not None:
            self._progress.advance(self._task)
