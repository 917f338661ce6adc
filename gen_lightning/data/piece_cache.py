"""The pieces bpe_pieces has encoded and their ids, in numpy arrays: a stream of pieces becomes a stream of ids by one
numpy gather, with no Python object per piece.

Each row holds a piece's bytes and its ids. A row is found by a 64-bit hash of its piece's bytes (`piece_hash`, from
prefix sums of the whole text: no loop over pieces). Two pieces with one hash would share a row, so the caller checks
that each piece's bytes are its row's (`matches`, one comparison of the whole text) before trusting the ids. Written
here because numpy has no hash table and no library keeps such a cache for HF tokenizers.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

_BASE = 0x100000001B3  # odd (FNV's prime), hence invertible mod 2**64
_POWERS = (np.ones(1, dtype=np.uint64), np.ones(1, dtype=np.uint64))
_KEEP_POWERS = 1 << 23  # 2 x 64 MB at most: the byte groups of bpe_pieces (~4 MB), with room to double


def piece_hash(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each piece `data[start:start + length]` (uint8 data): the sum of (byte + 1) * B**k mod 2**64
    over its bytes, from prefix sums of the whole array, made independent of the piece's offset by B's inverse."""
    powers, inverse = _powers(data.size + 1)
    prefix = np.zeros(data.size + 1, dtype=np.uint64)
    np.cumsum((data + np.uint64(1)) * powers[: data.size], out=prefix[1:])  # uint64 arithmetic wraps: mod 2**64
    return (prefix[starts + lengths] - prefix[starts]) * inverse[starts]


def _powers(size: int) -> tuple[np.ndarray, np.ndarray]:
    """B**k and B**-k mod 2**64 for k < size (at least): kept up to `_KEEP_POWERS` (grown by doubling), made for
    the call above it (a line of many MB must not hold its arrays for the life of the process)."""
    global _POWERS
    if _POWERS[0].size >= size:
        return _POWERS
    size = max(size, 2 * _POWERS[0].size)
    out = []
    for base in (_BASE, pow(_BASE, -1, 2**64)):
        power = np.full(size, base, dtype=np.uint64)
        power[0] = 1
        out.append(np.cumprod(power, dtype=np.uint64))
    if size <= _KEEP_POWERS:
        _POWERS = (out[0], out[1])
    return out[0], out[1]


def segments(flat: np.ndarray, starts: np.ndarray, sizes: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """`flat[starts[r]:starts[r] + sizes[r]]` for each r of `rows`, one after the other, as one new array."""
    size = sizes[rows]
    out_starts = np.cumsum(size) - size
    total = int(out_starts[-1] + size[-1]) if size.size else 0
    return flat[np.repeat(starts[rows] - out_starts, size) + np.arange(total)]


class PieceCache:
    """Rows of (piece bytes, ids as `dtype`), found by the hash of their piece (rows added without a key are found
    by their number only)."""

    def __init__(self, dtype: np.dtype) -> None:
        self.dtype = dtype
        self._keys = np.zeros(0, dtype=np.uint64)  # sorted, for searchsorted
        self._key_rows = np.zeros(0, dtype=np.int64)  # the row of each key
        self._bytes, self._byte_starts, self._byte_sizes = _empty(np.uint8)
        self._ids, self._id_starts, self._id_sizes = _empty(dtype)

    def __len__(self) -> int:
        return self._byte_sizes.size

    def find(self, keys: np.ndarray) -> np.ndarray:
        """The row of each key, -1 where there is none."""
        if not self._keys.size:
            return np.full(keys.size, -1, dtype=np.int64)
        at = np.minimum(np.searchsorted(self._keys, keys), self._keys.size - 1)
        return np.where(self._keys[at] == keys, self._key_rows[at], -1)

    def add(self, keys: Optional[np.ndarray], pieces: Sequence[bytes], ids: Sequence[bytes]) -> np.ndarray:
        """New rows for `pieces` and their `ids` (bytes of `dtype`), found by `keys` (None: by number only); their
        numbers."""
        rows = np.arange(len(self), len(self) + len(pieces), dtype=np.int64)
        self._bytes, self._byte_starts, self._byte_sizes = _append(
            self._bytes, self._byte_starts, self._byte_sizes, pieces, np.uint8
        )
        self._ids, self._id_starts, self._id_sizes = _append(
            self._ids, self._id_starts, self._id_sizes, ids, self.dtype
        )
        if keys is not None:  # merged into the sorted keys: one copy of them, no sort of the whole
            order = np.argsort(keys, kind="stable")
            at = np.searchsorted(self._keys, keys[order])
            self._keys, self._key_rows = (
                np.insert(self._keys, at, keys[order]),
                np.insert(self._key_rows, at, rows[order]),
            )
        return rows

    def matches(self, rows: np.ndarray, data: np.ndarray, lengths: np.ndarray) -> bool:
        """Whether the pieces of `data` (consecutive, `lengths` long) are the bytes of their `rows`."""
        return bool(
            np.array_equal(self._byte_sizes[rows], lengths)
            and np.array_equal(segments(self._bytes, self._byte_starts, self._byte_sizes, rows), data)
        )

    def ids(self, rows: np.ndarray) -> np.ndarray:
        """The ids of `rows`, one after the other."""
        return segments(self._ids, self._id_starts, self._id_sizes, rows)


def _empty(dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.zeros(0, dtype=dtype), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)


def _append(flat: np.ndarray, starts: np.ndarray, sizes: np.ndarray, items: Sequence[bytes], dtype):
    """`flat`, `starts` and `sizes` with `items` (bytes of `dtype`) after the rows they hold."""
    new_sizes = np.fromiter(map(len, items), dtype=np.int64, count=len(items)) // np.dtype(dtype).itemsize
    new_starts = flat.size + np.cumsum(new_sizes) - new_sizes
    flat = np.concatenate([flat, np.frombuffer(b"".join(items), dtype=dtype)])
    return flat, np.concatenate([starts, new_starts]), np.concatenate([sizes, new_sizes])
