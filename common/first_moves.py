"""The record of which rows each mover (a device's node, a user) has moved, for the Count
step rule (:class:`fedrec.common.optim.Count`), which counts each mover once per row.

A server that runs for months meets many devices, and on implicit feedback each device's
sampled negatives touch much of the catalogue: on the ML-100K implicit stream the record
ends with 1.0 million (mover, row) pairs, 64 % of all there could be. So a mover's rows are
kept as a sorted array while they are few, and as a bitmap (one bit per row of the table)
once that is smaller: at most a table's rows / 8 bytes a mover, however long it runs.
A checkpoint stores the record the same way (:meth:`FirstMoves.record`): the sparse movers
as sorted 4-byte rows, the dense ones as bitmaps; every part is checked when it is read
back (:meth:`FirstMoves.from_record`), as a file from disk may be damaged.
"""

from __future__ import annotations

import numpy as np

# The checkpoint's arrays (:meth:`FirstMoves.record`), each checked by name on load.
KEYS = ("moved-nodes", "moved-offsets", "moved-rows", "moved-dense-nodes", "moved-dense")
# A mover's sorted rows become a bitmap once its rows, at this many bytes each, would take
# more room than the bitmap (4: the checkpoint's uint32 rows).
ROW_BYTES = 4


def _bytes_for(n_rows: int) -> int:
    return (int(n_rows) + 7) // 8


def _bits_of(bits: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Whether each of ``rows`` is set in the little-endian bitmap ``bits``."""
    inside = rows < 8 * len(bits)
    have = np.zeros(len(rows), dtype=bool)
    r = rows[inside]
    have[inside] = ((bits[r >> 3] >> (r & 7).astype(np.uint8)) & 1).astype(bool)
    return have


def _set_bits(bits: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``bits`` with ``rows`` set (grown when a row lies past its end)."""
    need = _bytes_for(int(rows.max()) + 1) if len(rows) else 0
    if need > len(bits):
        bits = np.concatenate([bits, np.zeros(need - len(bits), np.uint8)])
    np.bitwise_or.at(bits, rows >> 3, np.left_shift(1, rows & 7).astype(np.uint8))
    return bits


def _rows_of_bits(bits: np.ndarray) -> np.ndarray:
    return np.flatnonzero(np.unpackbits(bits, bitorder="little")).astype(np.int64)


class FirstMoves:
    """The rows each mover has moved, so that :class:`~fedrec.common.optim.Count` counts
    each mover once per row: however often one is sampled, it adds at most one to a row's
    count (were every move counted, one device moving every row every round would shrink
    every row's step for everyone: a freezing attack)."""

    def __init__(self) -> None:
        self._rows: dict[int, np.ndarray] = {}  # mover -> sorted rows it moved (few)
        self._bits: dict[int, np.ndarray] = {}  # mover -> bitmap of the rows it moved

    def new(self, mover: int, rows: np.ndarray) -> np.ndarray:
        """Which of ``rows`` (sorted, unique) ``mover`` moves for the first time, as a
        mask; they are recorded."""
        rows = np.asarray(rows, dtype=np.int64)
        bits = self._bits.get(mover)
        if bits is not None:
            first = ~_bits_of(bits, rows)
            if first.any():
                self._bits[mover] = _set_bits(bits, rows[first])
            return first
        have = self._rows.get(mover)
        if have is None:
            have, first = rows.copy(), np.ones(len(rows), dtype=bool)
        else:
            at = np.searchsorted(have, rows)  # (both sorted: no sort here, per event or reply)
            first = have[np.minimum(at, len(have) - 1)] != rows if len(have) else \
                np.ones(len(rows), dtype=bool)
            if first.any():
                have = np.insert(have, at[first], rows[first])
        if len(have) and ROW_BYTES * len(have) > _bytes_for(int(have[-1]) + 1):
            self._bits[mover] = _set_bits(np.zeros(0, np.uint8), have)
            self._rows.pop(mover, None)
        else:
            self._rows[mover] = have
        return first

    def rows(self, mover: int) -> np.ndarray:
        """The rows ``mover`` has moved, sorted (empty for a mover never seen)."""
        if mover in self._bits:
            return _rows_of_bits(self._bits[mover])
        return self._rows.get(mover, np.empty(0, np.int64)).copy()

    def pairs(self) -> np.ndarray:
        """The record as uint64 (mover, row) pairs, by mover then row."""
        movers = sorted([*self._rows, *self._bits])
        if not movers:
            return np.empty((0, 2), dtype=np.uint64)
        return np.concatenate([np.column_stack([np.full(len(r), m, np.uint64),
                                                r.astype(np.uint64)])
                               for m in movers for r in [self.rows(m)]])

    def record(self, n_rows: int) -> dict[str, np.ndarray]:
        """The record as a checkpoint stores it (:data:`KEYS`), for a table of ``n_rows``
        rows: the sparse movers' rows (uint32, by mover, ``moved-offsets`` into them) and the
        dense movers' bitmaps (one row of ``ceil(n_rows / 8)`` bytes each)."""
        if n_rows > 2**32:
            raise ValueError(f"a moved record stores rows as uint32: {n_rows} rows is too many")
        width = _bytes_for(n_rows)
        sparse = sorted(self._rows)
        dense = sorted(self._bits)
        sizes = np.array([len(self._rows[m]) for m in sparse], dtype=np.int64)
        rows = (np.concatenate([self._rows[m] for m in sparse]) if sparse
                else np.empty(0, np.int64))
        bitmaps = np.zeros((len(dense), width), np.uint8)
        for i, m in enumerate(dense):
            bits = self._bits[m][:width]
            bitmaps[i, :len(bits)] = bits
        return {"moved-nodes": np.array(sparse, dtype=np.uint64),
                "moved-offsets": np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
                "moved-rows": rows.astype(np.uint32),
                "moved-dense-nodes": np.array(dense, dtype=np.uint64),
                "moved-dense": bitmaps}

    @classmethod
    def from_record(cls, arrays: dict[str, np.ndarray], n_rows: int) -> FirstMoves:
        """The record :meth:`record` wrote for a table of ``n_rows`` rows, every part
        checked (it may come from a damaged file): ValueError naming the array and what is
        wrong with it."""
        missing = [k for k in KEYS if k not in arrays]
        if missing:
            raise ValueError(f"the moved record lacks {missing}")
        nodes, offsets, rows, dense_nodes, dense = (arrays[k] for k in KEYS)
        for key, array, dtype, ndim in (("moved-nodes", nodes, np.uint64, 1),
                                        ("moved-offsets", offsets, np.int64, 1),
                                        ("moved-rows", rows, np.uint32, 1),
                                        ("moved-dense-nodes", dense_nodes, np.uint64, 1),
                                        ("moved-dense", dense, np.uint8, 2)):
            if not isinstance(array, np.ndarray) or array.dtype != dtype \
                    or array.ndim != ndim:
                raise ValueError(f"{key} must be a {ndim}-d {np.dtype(dtype).name} array. "
                                 f"Found {getattr(array, 'dtype', type(array).__name__)} "
                                 f"{getattr(array, 'shape', '')}.")
        if len(offsets) != len(nodes) + 1 or offsets[0] != 0 or offsets[-1] != len(rows) \
                or (np.diff(offsets) < 0).any():
            raise ValueError(f"moved-offsets must rise from 0 to the {len(rows)} rows, one "
                             f"step per node of moved-nodes ({len(nodes)}).")
        width = _bytes_for(n_rows)
        if dense.shape != (len(dense_nodes), width):
            raise ValueError(f"moved-dense must be ({len(dense_nodes)}, {width}): a bitmap "
                             f"of the {n_rows} rows per node of moved-dense-nodes. Found "
                             f"{dense.shape}.")
        every = np.concatenate([nodes, dense_nodes])
        if len(np.unique(every)) != len(every):
            raise ValueError("moved-nodes and moved-dense-nodes repeat a node")
        if len(rows) and int(rows.max()) >= n_rows:
            raise ValueError(f"moved-rows names a row beyond the table's {n_rows}")
        if n_rows % 8 and len(dense) and (dense[:, -1] >> np.uint8(n_rows % 8)).any():
            raise ValueError(f"moved-dense names a row beyond the table's {n_rows}")
        out = cls()
        for i, m in enumerate(nodes.tolist()):
            mine = rows[offsets[i]:offsets[i + 1]].astype(np.int64)
            if len(mine) > 1 and (np.diff(mine) <= 0).any():
                raise ValueError(f"moved-rows of node {m} are not strictly rising (a row "
                                 "repeated or out of order)")
            out._rows[int(m)] = mine
        for i, m in enumerate(dense_nodes.tolist()):
            out._bits[int(m)] = dense[i].copy()
        return out

    @classmethod
    def from_pairs(cls, pairs: np.ndarray, n_rows: int) -> FirstMoves:
        """The record as (mover, row) pairs (:meth:`pairs`; how a checkpoint stored it before
        :meth:`record`), checked (it may come from a damaged file): ValueError naming what
        is wrong."""
        if not isinstance(pairs, np.ndarray) or pairs.dtype != np.uint64 \
                or pairs.ndim != 2 or pairs.shape[1] != 2:
            raise ValueError(f"moved must be uint64 (node, row) pairs. Found "
                             f"{getattr(pairs, 'dtype', type(pairs).__name__)} "
                             f"{getattr(pairs, 'shape', '')}.")
        out = cls()
        if not len(pairs):
            return out
        if pairs[:, 1].max() >= n_rows:
            raise ValueError(f"moved names a row beyond the table's {n_rows}")
        order = np.lexsort((pairs[:, 1], pairs[:, 0]))
        if len(pairs) > 1 and not (np.diff(pairs[order], axis=0) != 0).any(axis=1).all():
            raise ValueError("moved repeats a (node, row) pair")
        movers, starts = np.unique(pairs[order, 0], return_index=True)
        for m, r in zip(movers, np.split(pairs[order, 1].astype(np.int64), starts[1:]),
                        strict=True):
            out.new(int(m), r)
        return out

    def __len__(self) -> int:
        return len(self._rows) + len(self._bits)
