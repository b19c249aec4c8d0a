"""Text for character language models: the tokenizer, text files, Tiny Shakespeare's lookup,
checksum and download (from a local file:// source), and the held-out tail."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from nnkernel.errors import ConfigError, DatasetError, ShapeError
from nnkernel.io import dataset, datasets, download, text
from nnkernel.io.tokenizer import CharTokenizer

CORPUS = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n"
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


def test_tokenizer_round_trip_sorted_vocabulary_and_json(tmp_path):
    tok = CharTokenizer.from_text(CORPUS)
    assert tok.vocab == "".join(sorted(set(CORPUS)))  # char-rnn / nanoGPT order
    ids = tok.encode(CORPUS)
    assert ids.dtype == np.int64 and ids.shape == (len(CORPUS),)
    assert [tok.vocab[i] for i in ids[:5]] == list("First")
    assert tok.decode(ids) == CORPUS
    assert CharTokenizer.from_json(json.loads(json.dumps(tok.to_json()))) == tok
    tok.save(tmp_path / "vocab.json")
    assert CharTokenizer.load(tmp_path / "vocab.json") == tok
    wide = CharTokenizer.from_text("naïve — ☃ café 🎉")  # code points beyond one byte
    assert wide.decode(wide.encode("☃ 🎉 café")) == "☃ 🎉 café"


def test_unknown_character_is_refused_by_name_and_position():
    tok = CharTokenizer.from_text("abc ")
    with pytest.raises(ConfigError, match=r"--prompt has 'é' \(U\+00E9 LATIN SMALL LETTER E "
                                          r"WITH ACUTE\) at position 2.*not in the vocabulary "
                                          r"of 4 characters \(nor are 'z'"):
        tok.encode("abéz", what="--prompt")
    with pytest.raises(ConfigError, match="'🎉'"):
        tok.encode("a🎉")  # beyond the lookup table's range


@pytest.mark.parametrize("vocab, message", [("", "non-empty string"), ("abca", "'a'.*twice"),
                                            (None, "non-empty string")])
def test_bad_vocabularies_are_refused(vocab, message):
    with pytest.raises(ConfigError, match=message):
        CharTokenizer(vocab)


def test_decode_refuses_ids_outside_the_vocabulary():
    tok = CharTokenizer("ab")
    with pytest.raises(ConfigError, match=r"0\.\.1, got 0\.\.2"):
        tok.decode([0, 2])
    with pytest.raises(ShapeError):
        tok.decode(np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(ConfigError, match="not a character tokenizer"):
        CharTokenizer.from_json({"type": "bpe", "vocab": "ab"})


def test_a_text_file_splits_into_a_head_and_its_held_out_tail(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(CORPUS * 10, encoding="utf-8")
    data = text.load_text(path)
    n = len(CORPUS) * 10
    assert data.n_train == int(n * 0.9) and len(data.val_ids) == n - int(n * 0.9)
    assert data.tokenizer.decode(data.val_ids) == (CORPUS * 10)[int(n * 0.9):]  # the tail
    assert data.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert data.fingerprint() == {"scheme": "text-sha256-v1", "characters": n,
                                  "sha256": data.sha256}
    assert data.name == str(path)
    # a saved vocabulary that lacks a character of the text is refused by name
    with pytest.raises(ConfigError, match="'F'.*at position 0"):
        text.load_text(path, tokenizer=CharTokenizer("abc \n"))


def test_a_file_that_is_not_utf8_or_too_short_is_refused(tmp_path):
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1") * 10)
    with pytest.raises(DatasetError, match="not UTF-8 text"):
        text.load_text(tmp_path / "latin1.txt")
    (tmp_path / "short.txt").write_text("ab")
    with pytest.raises(DatasetError, match="2 character"):
        text.load_text(tmp_path / "short.txt")
    with pytest.raises(DatasetError, match="not found"):
        text.load_text(tmp_path / "missing.txt")


def test_the_canonical_checksum_is_the_one_recorded():
    assert download.TEXT_SOURCES["tinyshakespeare"].checksums == {"input.txt":
                                                                  SHAKESPEARE_SHA256}


@pytest.fixture
def no_system_dirs(monkeypatch, tmp_path):
    """No copy of Tiny Shakespeare anywhere but where a test puts it."""
    monkeypatch.setattr(dataset, "SYSTEM_DATA_DIRS", [])
    monkeypatch.delenv("NNKERNEL_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture
def small_shakespeare(monkeypatch):
    """A stand-in text whose checksum TEXT_SOURCES holds for the test."""
    body = (CORPUS * 4).encode()
    digest = hashlib.sha256(body).hexdigest()
    monkeypatch.setitem(download.TEXT_SOURCES, "tinyshakespeare", download.Source(
        "file:///nowhere/", "sha256", {"input.txt": digest}))
    return body


def test_tinyshakespeare_is_found_in_data_dir_and_checked(no_system_dirs, small_shakespeare,
                                                          tmp_path):
    where = tmp_path / "data" / "tinyshakespeare"
    where.mkdir(parents=True)
    (where / "input.txt").write_bytes(small_shakespeare)
    data = text.load_text("tinyshakespeare", tmp_path / "data", download=False)
    assert data.name == "tinyshakespeare" and data.text == small_shakespeare.decode()
    (where / "input.txt").write_bytes(small_shakespeare + b"tampered")
    with pytest.raises(DatasetError, match="is not tinyshakespeare: its sha256 is"):
        text.load_text("Tiny_Shakespeare", tmp_path / "data", download=False)


def test_missing_tinyshakespeare_says_where_it_looked_and_how_to_get_it(no_system_dirs,
                                                                        tmp_path):
    with pytest.raises(DatasetError) as info:
        text.load_text("tinyshakespeare", tmp_path / "d", download=False)
    message = str(info.value)
    assert "download disabled" in message and str(tmp_path / "d") in message
    assert SHAKESPEARE_SHA256 in message and "input.txt" in message


def test_download_checks_the_checksum(no_system_dirs, small_shakespeare, monkeypatch,
                                      tmp_path):
    source = tmp_path / "mirror"
    source.mkdir()
    (source / "input.txt").write_bytes(small_shakespeare)
    good = download.TEXT_SOURCES["tinyshakespeare"]
    monkeypatch.setitem(download.TEXT_SOURCES, "tinyshakespeare", download.Source(
        source.as_uri() + "/", "sha256", good.checksums))
    data = text.load_text("tinyshakespeare", tmp_path / "into")
    assert (tmp_path / "into" / "input.txt").read_bytes() == small_shakespeare
    assert data.text == small_shakespeare.decode()
    (source / "input.txt").write_bytes(b"something else entirely")
    (tmp_path / "into" / "input.txt").unlink()
    with pytest.raises(DatasetError, match="checksum .* expected .*corrupt"):
        text.load_text("tinyshakespeare", tmp_path / "into")
    assert not (tmp_path / "into" / "input.txt").exists()  # nothing half-written kept


def test_the_tabular_loader_points_a_text_to_the_language_models():
    with pytest.raises(ConfigError, match="is a text: train a language model"):
        datasets.load("tinyshakespeare")
    assert text.is_text_dataset("corpus.TXT") and text.is_text_dataset("tiny-shakespeare")
    assert not text.is_text_dataset("digits")
