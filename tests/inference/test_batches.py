"""The batch runner on a real in-process cluster, with a toy stencil whose answer is known."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import dask
import numpy as np
import pytest
from distributed import Client

from roadnet.pipeline.inference.batches import Stencil, batch_rows, plan_batches, run_stencil

# In-process workers (processes=False) share this module: the kernels record into it.
calls: Counter[str] = Counter()
written: dict[tuple[int, int], int] = {}
peak_tasks: list[int] = []
LOCK = threading.Lock()
probe: list[Any] = []


def _read(i: int, j: int) -> int:
    with LOCK:
        calls[f"read {i} {j}"] += 1
    return 10 * i + j


def _first(blocks: list[list[int | None]]) -> int:
    with LOCK:
        calls[f"first {blocks[1][1] if len(blocks) == 3 else blocks[0][0]}"] += 1
    return sum(v for line in blocks for v in line if v is not None)


def _second(
    blocks: list[list[int | None]], *, rows: tuple[int, int], cols: tuple[int, int]
) -> None:
    if rows == (2, 3) and cols == (1, 2) and probe and probe[0] == "fail":
        raise ValueError("chunk 2 1 broke")
    with LOCK:
        if probe and probe[0] != "fail":
            peak_tasks.append(len(probe[0].tasks))
        for a in range(rows[1] - rows[0]):
            for b in range(cols[1] - cols[0]):
                around = [blocks[a + k][b : b + 3] for k in range(3)]
                written[(rows[0] + a, cols[0] + b)] = sum(
                    v for line in around for v in line if v is not None
                )


def _expected(grid: tuple[int, int]) -> dict[tuple[int, int], int]:
    """Pass 2 of the toy stencil computed directly: 3 x 3 sums of 3 x 3 sums."""
    values = np.fromfunction(lambda i, j: 10 * i + j, grid, dtype=int)
    padded = np.pad(values, 2)
    first = sum(
        padded[1 + di : 1 + di + grid[0] + 2, 1 + dj : 1 + dj + grid[1] + 2]
        for di in (-1, 0, 1)
        for dj in (-1, 0, 1)
    )
    first[0, :] = first[-1, :] = first[:, 0] = first[:, -1] = 0  # beyond the grid: None
    second = sum(
        first[1 + di : 1 + di + grid[0], 1 + dj : 1 + dj + grid[1]]
        for di in (-1, 0, 1)
        for dj in (-1, 0, 1)
    )
    return {(i, j): int(second[i, j]) for i in range(grid[0]) for j in range(grid[1])}


def _stencil() -> Stencil:
    return Stencil(read=lambda i, j: dask.delayed(_read)(i, j), first=_first, second=_second)


@pytest.fixture(autouse=True)
def _clear() -> None:
    calls.clear()
    written.clear()
    peak_tasks.clear()
    probe.clear()


def test_batch_rows_and_plan() -> None:
    assert batch_rows(5, batch_chunks=32) == 6
    assert batch_rows(50, batch_chunks=32) == 1
    units = [((r, r + 1), (c, c + 1)) for r in (3, 0, 1) for c in (1, 0)]
    batches = plan_batches(units, rows=2)
    assert batches == [
        [((0, 1), (0, 1)), ((0, 1), (1, 2)), ((1, 2), (0, 1)), ((1, 2), (1, 2))],
        [((3, 4), (0, 1)), ((3, 4), (1, 2))],
    ]


@pytest.mark.parametrize("batch_chunks", [1, 4, 100])
def test_results_equal_direct_and_every_read_and_block_runs_once(
    client: Client, batch_chunks: int
) -> None:
    grid = (7, 4)
    units = [((i, i + 1), (j, j + 1)) for i in range(grid[0]) for j in range(grid[1])]
    run_stencil(client, _stencil(), grid=grid, units=units, batch_chunks=batch_chunks)
    assert written == _expected(grid)
    # Batch borders share reads and pass-1 blocks: each is computed exactly once.
    assert set(calls.values()) == {1}
    assert sum(k.startswith("read") for k in calls) == 28
    assert sum(k.startswith("first") for k in calls) == 28


def test_units_of_several_chunks_and_a_subset(client: Client) -> None:
    grid = (5, 5)
    # Resume-like: only some units, one of them two chunks wide and two high.
    units = [((0, 1), (0, 1)), ((3, 5), (3, 5))]
    run_stencil(client, _stencil(), grid=grid, units=units, batch_chunks=1)
    expected = _expected(grid)
    assert written == {k: expected[k] for k in [(0, 0), (3, 3), (3, 4), (4, 3), (4, 4)]}
    # Only the blocks those units reach are predicted, and only the reads those blocks reach.
    blocks = {(i, j) for i in (0, 1) for j in (0, 1)} | {
        (i, j) for i in (2, 3, 4) for j in (2, 3, 4)
    }
    assert {k for k in calls if k.startswith("first")} == {f"first {10 * i + j}" for i, j in blocks}
    reads = {(i, j) for i in (0, 1, 2) for j in (0, 1, 2)} | {
        (i, j) for i in (1, 2, 3, 4) for j in (1, 2, 3, 4)
    }
    assert {k for k in calls if k.startswith("read")} == {f"read {i} {j}" for i, j in reads}


def test_scheduler_holds_a_bounded_number_of_tasks(client: Client) -> None:
    grid = (16, 4)
    probe.append(client.cluster.scheduler)  # type: ignore[union-attr]
    units = [((i, i + 1), (j, j + 1)) for i in range(grid[0]) for j in range(grid[1])]
    run_stencil(client, _stencil(), grid=grid, units=units, batch_chunks=4, in_flight=2)
    assert written == _expected(grid)
    # The whole run has 3 x 64 tasks; two batches in flight of one row each, plus the border
    # rows held for the next batch, stay far below that.
    assert max(peak_tasks) <= 3 * 4 * 6
    assert max(peak_tasks) < 3 * 64 / 2


def test_first_error_is_raised(client: Client) -> None:
    probe.append("fail")
    grid = (4, 3)
    units = [((i, i + 1), (j, j + 1)) for i in range(grid[0]) for j in range(grid[1])]
    with pytest.raises(ValueError, match="chunk 2 1 broke"):
        run_stencil(client, _stencil(), grid=grid, units=units, batch_chunks=3)
    # the run's other tasks may still be computing (the error's traceback holds their
    # futures): let them finish, so they cannot write into the next test's record
    scheduler = client.cluster.scheduler  # type: ignore[union-attr]
    busy = {"waiting", "queued", "processing", "no-worker"}

    def running() -> bool:
        return any(ts.state in busy for ts in list(scheduler.tasks.values()))

    deadline = time.monotonic() + 60
    while running() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not running()


def _double(blocks: list[list[int]]) -> int:
    return 2 * blocks[0][0]


def _keep(blocks: list[list[int]], *, rows: tuple[int, int], cols: tuple[int, int]) -> None:
    with LOCK:
        written[(rows[0], cols[0])] = blocks[0][0]


def test_without_reach_each_chunk_stands_alone(client: Client) -> None:
    grid = (3, 2)
    stencil = Stencil(
        read=lambda i, j: dask.delayed(_read)(i, j),
        first=_double,
        second=_keep,
        first_reach=False,
        second_reach=False,
    )
    units = [((i, i + 1), (j, j + 1)) for i in range(grid[0]) for j in range(grid[1])]
    run_stencil(client, stencil, grid=grid, units=units, batch_chunks=2)
    assert written == {(i, j): 2 * (10 * i + j) for i in range(3) for j in range(2)}
