"""GPT-2's pre-token split of ASCII text, computed by numpy on the bytes of many texts at once.

Why: `re.findall` of GPT-2's regex was ~45% of a BPE worker's time, most of it spent creating one Python string per
pre-token (2.2 M of them in the default corpus). On the characters bpe_pieces calls safe (tab, LF, VT, FF, CR and
printable ASCII) the regex

    's|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+

cuts a text into runs of one class (letters, digits, whitespace, other), with three exceptions, all decided by the
characters next to a run boundary, so they are array operations:
  1. whitespace followed by more text: its last character is a pre-token of its own (`\\s+(?!\\S)` stops before it,
     `\\s+` takes it alone), except a space, which starts the next run's pre-token (the ` ?` alternatives);
  2. an apostrophe standing alone between two runs (not after such a space) and followed by s, t, m, d, re, ve or ll
     is a contraction pre-token with those letters; the rest of the letter run is the next one;
  3. a text's end ends its pre-token (a whitespace run there stays whole).
No library splits like this without a Python object per pre-token (tiktoken's and HF's splitters return them), hence
this module. tests/test_pretoken_split.py compares it with `re.findall` on edge cases and random texts.
"""

from __future__ import annotations

import numpy as np

_SPACE, _LETTER, _DIGIT, _OTHER = 0, 1, 2, 3
_CLASS = np.full(256, _OTHER, dtype=np.int8)
_CLASS[[9, 10, 11, 12, 13, 32]] = _SPACE  # `\s` on ASCII
_CLASS[ord("A") : ord("Z") + 1] = _LETTER
_CLASS[ord("a") : ord("z") + 1] = _LETTER
_CLASS[ord("0") : ord("9") + 1] = _DIGIT
# Contraction letters after the apostrophe: one of these ...
_ONE_LETTER = np.zeros(256, dtype=bool)
_ONE_LETTER[list(b"stmd")] = True
# ... or one of these pairs (first letter * 256 + second).
_TWO_LETTERS = np.array([a * 256 + b for a, b in (b"re", b"ve", b"ll")])


def pre_token_starts(data: np.ndarray, text_starts: np.ndarray) -> np.ndarray:
    """The offset in `data` (uint8, the ASCII bytes of texts one after the other, no empty text) at which each
    pre-token starts, in order; `text_starts` (sorted, 0 first) is where each text starts. A pre-token ends where
    the next one starts, the last at `data.size`."""
    n = data.size
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    cls = _CLASS[data]
    run = np.empty(n, dtype=bool)  # where a run of one class starts (a text's start starts one)
    run[0] = True
    np.not_equal(cls[1:], cls[:-1], out=run[1:])
    run[text_starts] = True
    run_start = np.flatnonzero(run)
    run_end = np.append(run_start[1:], n)
    ends_text = np.zeros(n + 1, dtype=bool)
    ends_text[text_starts] = True
    ends_text[n] = True
    last_of_text = ends_text[run_end]  # the run ends its text (exception 3)
    run_cls = cls[run_start]
    cut = run.copy()

    # 1. A whitespace run followed by more text: its last character starts a pre-token ...
    tail = run_end[(run_cls == _SPACE) & ~last_of_text] - 1
    cut[tail] = True
    # ... that, if it is a space, goes on into the next run (letters, digits or other, in the same text).
    cut[tail[data[tail] == 32] + 1] = False

    # 2. An apostrophe run of one character that starts a pre-token and has a letter run after it in its text.
    quote = run_start[(run_cls == _OTHER) & (run_end - run_start == 1) & ~last_of_text]
    quote = quote[(data[quote] == 39) & cut[quote]]
    quote = quote[cls[quote + 1] == _LETTER]
    if quote.size:
        first = data[quote + 1]
        # The second letter counts only inside the same letter run (not past its end or into the next text).
        inside = quote + 2 < n
        second_at = np.minimum(quote + 2, n - 1)
        inside &= ~run[second_at] & (cls[second_at] == _LETTER)
        two = inside & np.isin(first.astype(np.int64) * 256 + data[second_at], _TWO_LETTERS)
        one = _ONE_LETTER[first]
        quote, size = quote[one | two], np.where(two, 2, 1)[one | two]
        cut[quote + 1] = False  # the letters join the apostrophe ...
        rest = quote + 1 + size
        rest = rest[rest < n]
        cut[rest] = True  # ... and the letter run goes on as a pre-token of its own (a no-op at its end)
    return np.flatnonzero(cut)
