"""Running the two-pass blend on a Dask cluster in batches of chunk rows, memory bounded.

The blend is a stencil of two passes over a grid of chunks: pass 1 turns each chunk and its
eight neighbours' inputs into a block, pass 2 turns each chunk's and its neighbours' pass-1
blocks into the chunk's result and hands it to a function on the worker (e.g. a Zarr write).
Submitting a whole scene at once makes the scheduler and the client hold every task's state
for the whole run, so their memory would grow with the scene. :func:`run_stencil` submits
the chunks instead in batches of whole chunk rows, at most ``in_flight`` batches at a time,
each task through ``Client.submit`` with its inputs as futures. Neighbouring batches share
the inputs and pass-1 blocks along their border: the runner keeps the futures of those that
the next batch needs and passes them in, so each is computed once, and lets go of the rest.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from distributed import Client, Future, as_completed

__all__ = ["Stencil", "Unit", "batch_rows", "plan_batches", "run_stencil"]

Cell = tuple[int, int]
Blocks = list[list[Any]]


@dataclass(frozen=True)
class Stencil:
    """What the two passes compute and how far each reaches.

    Attributes:
        read: ``read(row, col)`` gives a dask collection (e.g. a ``Delayed``) computing the
            input chunk ``(row, col)``.
        first: pass 1, ``first(blocks)`` where ``blocks`` is the 3 x 3 nested list of the
            chunk's and its neighbours' inputs (None beyond the grid, or everywhere but the
            centre without ``first_reach``); returns the chunk's pass-1 block.
        second: pass 2 of a unit (a rectangle of chunks, see :func:`run_stencil`),
            ``second(blocks, rows=(r0, r1), cols=(c0, c1))`` over the pass-1 blocks of rows
            ``r0 - 1 .. r1`` and columns ``c0 - 1 .. c1`` as a nested list (None beyond the
            grid, and everywhere outside the unit itself without ``second_reach``); its
            result is dropped, so it writes what it makes.
        first_reach: pass 1 uses the neighbours' inputs.
        second_reach: pass 2 uses the neighbours' blocks.
    """

    read: Callable[[int, int], Any]
    first: Callable[[Blocks], Any]
    second: Callable[..., None]
    first_reach: bool = True
    second_reach: bool = True


Unit = tuple[tuple[int, int], tuple[int, int]]


def batch_rows(cols: int, *, batch_chunks: int) -> int:
    """Chunk rows per batch: as many whole rows as fit ``batch_chunks`` chunks, at least one."""
    return max(1, batch_chunks // max(cols, 1))


def plan_batches(units: list[Unit], *, rows: int) -> list[list[Unit]]:
    """Group units into batches by their first chunk row, ``rows`` chunk rows per batch.

    Args:
        units: ``((r0, r1), (c0, c1))`` rectangles of chunks (end exclusive).
        rows: chunk rows per batch.

    Returns:
        The non-empty batches in row order, each in row-major order.
    """
    ordered = sorted(units, key=lambda u: (u[0][0], u[1][0]))
    batches: dict[int, list[Unit]] = {}
    for unit in ordered:
        batches.setdefault(unit[0][0] // rows, []).append(unit)
    return [batches[b] for b in sorted(batches)]


def _window(
    rows: tuple[int, int], cols: tuple[int, int], grid: Cell, *, reach: bool
) -> list[list[Cell | None]]:
    """The cells of ``rows`` x ``cols``, one more on each side with ``reach`` (None off-grid)."""
    pad = 1 if reach else 0
    return [
        [
            (i, j) if 0 <= i < grid[0] and 0 <= j < grid[1] else None
            for j in range(cols[0] - pad, cols[1] + pad)
        ]
        for i in range(rows[0] - pad, rows[1] + pad)
    ]


def _cells(window: list[list[Cell | None]]) -> set[Cell]:
    return {c for line in window for c in line if c is not None}


class _Runner:
    """The futures of one :func:`run_stencil` call, submitted batch by batch."""

    def __init__(self, client: Client, stencil: Stencil, grid: Cell) -> None:
        self.client = client
        self.stencil = stencil
        self.grid = grid
        self.inputs: dict[Cell, Future] = {}
        self.blocks: dict[Cell, Future] = {}

    def _first_window(self, cell: Cell) -> list[list[Cell | None]]:
        (i, j), reach = cell, self.stencil.first_reach
        return _window((i, i + 1), (j, j + 1), self.grid, reach=reach)

    def _read(self, cells: set[Cell]) -> None:
        """Compute the inputs of ``cells`` not yet held, in one call (one graph to cull)."""
        missing = sorted(cells - self.inputs.keys())
        if missing:
            futures = self.client.compute([self.stencil.read(*c) for c in missing])
            self.inputs.update(zip(missing, futures, strict=True))

    def _block(self, cell: Cell) -> Future:
        if cell not in self.blocks:
            window = self._first_window(cell)
            inputs = [[None if c is None else self.inputs[c] for c in line] for line in window]
            self.blocks[cell] = self.client.submit(self.stencil.first, inputs, pure=False)
        return self.blocks[cell]

    def submit(self, batch: list[Unit], following: list[Unit] | None) -> list[Future]:
        """Submit pass 2 of ``batch``; keep only what ``following`` (the next batch) shares."""
        reach = self.stencil.second_reach
        windows = [_window(rows, cols, self.grid, reach=reach) for rows, cols in batch]
        new_blocks = set().union(*map(_cells, windows)) - self.blocks.keys()
        self._read(set().union(*(_cells(self._first_window(c)) for c in new_blocks)))
        results = []
        for (rows, cols), window in zip(batch, windows, strict=True):
            blocks = [[None if c is None else self._block(c) for c in line] for line in window]
            results.append(
                self.client.submit(self.stencil.second, blocks, rows=rows, cols=cols, pure=False)
            )
        # Pass 2 of the next batch reaches one row up into this batch's blocks, whose pass 1
        # reached one row further up into the inputs.
        first = min(u[0][0] for u in following) if following else self.grid[0]
        self.blocks = {c: f for c, f in self.blocks.items() if c[0] >= first - 1}
        self.inputs = {c: f for c, f in self.inputs.items() if c[0] >= first - 2}
        return results


def run_stencil(
    client: Client,
    stencil: Stencil,
    *,
    grid: Cell,
    units: list[Unit],
    batch_chunks: int = 32,
    in_flight: int = 2,
    progress: bool = False,
) -> None:
    """Run pass 2 of ``stencil`` for ``units``, batch by batch.

    Args:
        client: the Dask client.
        stencil: the two passes.
        grid: ``(rows, cols)`` of the chunk grid.
        units: ``((r0, r1), (c0, c1))`` rectangles of chunks (end exclusive), disjoint: one
            pass-2 task each (e.g. the chunks that together make whole output chunks).
        batch_chunks: chunks per batch (whole rows, at least one row).
        in_flight: batches submitted at a time.
        progress: show a progress bar of the units.

    Raises:
        Exception: the first error of any task, as raised on the worker.
    """
    batches = plan_batches(units, rows=batch_rows(grid[1], batch_chunks=batch_chunks))
    runner = _Runner(client, stencil, grid)
    pending: deque[set[Future]] = deque()
    done = as_completed()
    submitted = 0

    def submit_next() -> None:
        nonlocal submitted
        following = batches[submitted + 1] if submitted + 1 < len(batches) else None
        results = runner.submit(batches[submitted], following)
        pending.append(set(results))
        done.update(results)
        submitted += 1

    with _Bar(total=len(units), enabled=progress) as bar:
        while submitted < min(in_flight, len(batches)):
            submit_next()
        for future in done:
            future.result()
            bar.advance()
            for results in pending:
                results.discard(future)
            while pending and not pending[0]:
                pending.popleft()
                if submitted < len(batches):
                    submit_next()


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
