"""The cache of pieces and ids behind bpe_pieces (data/piece_cache.py): hashes, lookups, the gather, the checks."""

from __future__ import annotations

import numpy as np

from gen_lightning.data import piece_cache
from gen_lightning.data.piece_cache import PieceCache, piece_hash, segments


def _pieces(*words: bytes):
    data = np.frombuffer(b"".join(words), dtype=np.uint8)
    lengths = np.array([len(w) for w in words], dtype=np.int64)
    return data, np.cumsum(lengths) - lengths, lengths


def test_a_piece_hashes_alike_wherever_it_stands_and_unlike_other_pieces():
    data, starts, lengths = _pieces(b"def", b" x", b"def", b"fed", b"de", b"f", b" x", b"\n")
    h = piece_hash(data, starts, lengths).tolist()
    assert h[0] == h[2] and h[1] == h[6]
    assert len({h[0], h[1], h[3], h[4], h[5], h[7]}) == 6


def test_powers_beyond_the_limit_are_made_for_the_call_and_not_kept(monkeypatch):
    # Start from the module's first arrays, whatever earlier calls grew them to (restored after the test).
    monkeypatch.setattr(piece_cache, "_POWERS", (np.ones(1, dtype=np.uint64), np.ones(1, dtype=np.uint64)))
    monkeypatch.setattr(piece_cache, "_KEEP_POWERS", 64)
    small = _pieces(b"ab", b"cd")
    big = _pieces(b"x" * 500, b"ab", b"cd")
    expected = piece_hash(*small).tolist()
    kept = piece_cache._POWERS[0].size
    assert piece_hash(*big).tolist()[1:] == expected  # the same hashes from arrays made for this call
    assert piece_cache._POWERS[0].size == kept <= 64


def test_rows_are_found_by_key_in_any_order_of_adding_and_their_ids_gathered():
    cache = PieceCache(np.dtype(np.uint16))
    assert cache.find(np.array([5], dtype=np.uint64)).tolist() == [-1]
    assert cache.add(np.array([30, 10], dtype=np.uint64), [b"c", b"a"], [_ids(3, 3), _ids(1)]).tolist() == [0, 1]
    assert cache.add(None, [b""], [_ids(9)]).tolist() == [2]  # found by its number only
    assert cache.add(np.array([20, 40, 5], dtype=np.uint64), [b"b", b"d", b"e"], [b"", _ids(4), _ids(5)]).tolist() == [
        3,
        4,
        5,
    ]
    keys = np.array([40, 10, 7, 20, 30, 5], dtype=np.uint64)
    assert cache.find(keys).tolist() == [4, 1, -1, 3, 0, 5]
    assert len(cache) == 6
    assert cache.ids(np.array([0, 2, 3, 1, 0])).tolist() == [3, 3, 9, 1, 3, 3]
    assert cache.ids(np.array([], dtype=np.int64)).size == 0


def test_matches_holds_pieces_to_their_rows_bytes():
    cache = PieceCache(np.dtype(np.uint16))
    rows = cache.add(np.array([1, 2], dtype=np.uint64), [b"ab", b" c"], [_ids(1, 2), _ids(3)])
    data, _, lengths = _pieces(b"ab", b" c", b"ab")
    assert cache.matches(rows[[0, 1, 0]], data, lengths)
    other, _, other_lengths = _pieces(b"ab", b" d", b"ab")
    assert not cache.matches(rows[[0, 1, 0]], other, other_lengths)  # same lengths, other bytes
    longer, _, longer_lengths = _pieces(b"abc", b" c")
    assert not cache.matches(rows[[0, 1]], longer, longer_lengths)


def test_segments_gathers_in_the_given_order():
    flat = np.arange(10)
    assert segments(flat, np.array([0, 4, 7]), np.array([4, 3, 0]), np.array([1, 2, 0, 1])).tolist() == [
        4,
        5,
        6,
        0,
        1,
        2,
        3,
        4,
        5,
        6,
    ]


def _ids(*ids: int) -> bytes:
    return np.asarray(ids, dtype=np.uint16).tobytes()
