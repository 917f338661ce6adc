"""Issue 18, item 9: a text corpus folder with binary files, undecodable bytes and UTF-16 files. UTF-16 (with its
byte-order mark) is read as text, not called empty; the binary files skipped and the bytes replaced are one
summary line when the corpus is prepared. Tokenizes a few hundred bytes: well under a second."""

from __future__ import annotations

import codecs

import numpy as np
import pytest

from gen_lightning.data import TextDataModule
from gen_lightning.data.text import read_text, resolve_corpus

UTF16_TEXT = "def grüße():\n    return 'héllo from UTF-16'\n" * 8
UTF8_TEXT = "x = 1\n" * 40


def _corpus(folder):
    folder.mkdir()
    (folder / "a.py").write_text(UTF8_TEXT, encoding="utf-8")
    (folder / "b_le.txt").write_bytes(UTF16_TEXT.encode("utf-16"))  # Python writes the BOM, little-endian here
    (folder / "c_be.txt").write_bytes(codecs.BOM_UTF16_BE + UTF16_TEXT.encode("utf-16-be"))
    (folder / "d.txt").write_bytes(b"y = 2\n\x80\x81 two bad bytes, then \xc3 one more\n" * 3)
    (folder / "e.bin").write_bytes(bytes(range(256)) * 4)
    (folder / "f.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR")
    return folder


def _decoded(dm, split: str) -> str:
    tokens = np.fromfile(dm.cache_dir / f"{split}.bin", dtype=dm.meta["dtype"])
    return bytes(int(t) for t in tokens if t < 256).decode("utf-8")


def test_report_line_and_utf16_read_as_text(tmp_path, capsys):
    corpus = _corpus(tmp_path / "corpus")
    dm = TextDataModule(
        corpus=str(corpus), tokenizer="byte", block_size=8, val_fraction=0.1, cache_dir=str(tmp_path / "cache")
    )
    assert [p.name for p in dm.files] == ["a.py", "b_le.txt", "c_be.txt", "d.txt"]
    dm.prepare_data()
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("corpus:")]
    assert lines == [
        "corpus: 4 text files read; 2 binary files skipped (e.bin, f.png); 9 undecodable bytes replaced "
        "with U+FFFD in 1 file (d.txt); save text as UTF-8 (or with a byte-order mark)"
    ]
    dm.setup("fit")
    text = _decoded(dm, "train") + _decoded(dm, "val")
    assert text.count("héllo from UTF-16") == 16  # both UTF-16 files, whole, without their byte-order marks
    assert "\ufeff" not in text and "\0" not in text
    assert text.count("\ufffd") == 9  # three per line of d.txt (\x80, \x81, \xc3), as Python's "replace" gives
    # Prepared once: a second module on the same cache says nothing.
    again = TextDataModule(
        corpus=str(corpus), tokenizer="byte", block_size=8, val_fraction=0.1, cache_dir=str(tmp_path / "cache")
    )
    again.prepare_data()
    assert "corpus:" not in capsys.readouterr().out


def test_clean_corpus_prints_no_report(tmp_path, capsys):
    (tmp_path / "a.py").write_text(UTF8_TEXT)
    dm = TextDataModule(corpus=str(tmp_path / "a.py"), tokenizer="byte", block_size=8, cache_dir=str(tmp_path / "c"))
    dm.prepare_data()
    assert "corpus:" not in capsys.readouterr().out


def test_a_utf16_file_alone_is_not_empty(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes(UTF16_TEXT.encode("utf-16"))
    assert resolve_corpus(str(path)) == [path]  # before: "is empty (no text in it)"


@pytest.mark.parametrize(
    "encoding, bom",
    [
        ("utf-8", codecs.BOM_UTF8),
        ("utf-16-le", codecs.BOM_UTF16_LE),
        ("utf-32-le", codecs.BOM_UTF32_LE),
        ("utf-32-be", codecs.BOM_UTF32_BE),
    ],
)
def test_read_text_follows_the_byte_order_mark(tmp_path, encoding, bom):
    path = tmp_path / "t.txt"
    path.write_bytes(bom + "naïve café\n".encode(encoding))
    assert read_text(path) == ("naïve café\n", 0)


def test_read_text_counts_replaced_bytes(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes(b"ok \xff\xff\xff ok \xe2\x82")  # 3 stray bytes, then a truncated 3-byte sequence
    text, replaced = read_text(path)
    assert text == "ok \ufffd\ufffd\ufffd ok \ufffd" and replaced == 5
    assert text == path.read_bytes().decode("utf-8", errors="replace")  # the same text Python's "replace" gives
