"""`CharTokenizer`: text <-> integer ids, one id per character, saved as JSON with a run.

    tok = CharTokenizer.from_text(corpus)     # the sorted distinct characters: id i = vocab[i]
    ids = tok.encode("To be")                 # int64 array (5,)
    tok.decode(ids)                           # "To be"
    tok.to_json()                             # {"type": "characters", "vocab": "\\n !$&',-.3:..."}

The vocabulary is the text's own characters, sorted by code point (as char-rnn and
nanoGPT build it: Tiny Shakespeare has 65). A character outside it cannot be
encoded: `encode` refuses it by name and position (a prompt at generation time
with a letter the corpus never had), instead of mapping it to some other id.
"""

from __future__ import annotations

import json
import os
import unicodedata

import numpy as np

from ..errors import ConfigError, ShapeError

__all__ = ["CharTokenizer"]

MAX_VOCAB = 1 << 20  # more distinct characters than Unicode has: not a vocabulary


class CharTokenizer:
    """Characters to ids and back; ``vocab``: a string of distinct characters, id i = vocab[i]."""

    kind = "characters"  # its "type" in JSON

    def __init__(self, vocab: str):
        if not isinstance(vocab, str) or not vocab:
            raise ConfigError(f"a character vocabulary is a non-empty string, got {vocab!r:.40}")
        if len(set(vocab)) != len(vocab):
            twice = next(c for i, c in enumerate(vocab) if c in vocab[:i])
            raise ConfigError(f"the character vocabulary lists {_name(twice)} twice")
        if len(vocab) > MAX_VOCAB:
            raise ConfigError(f"a character vocabulary of {len(vocab)} entries is too large")
        self.vocab = vocab
        codes = _codes(vocab)
        # encoding is a table lookup: table[code point] = id, -1 for characters not in vocab
        self._table = np.full(int(codes.max()) + 1, -1, dtype=np.int64)
        self._table[codes] = np.arange(len(vocab), dtype=np.int64)

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """The tokenizer of ``text``'s distinct characters, sorted by code point."""
        if not isinstance(text, str) or not text:
            raise ConfigError("a character vocabulary needs a non-empty text")
        return cls("".join(sorted(set(text))))

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str, what: str = "the text") -> np.ndarray:
        """int64 ids (len(text),); a character outside the vocabulary is a ConfigError that
        names it, where it is, and ``what`` held it."""
        if not isinstance(text, str):
            raise ConfigError(f"encode takes a string, got {type(text).__name__}")
        codes = _codes(text)
        table = self._table
        ids = table[np.minimum(codes, table.shape[0] - 1)]
        bad = (codes >= table.shape[0]) | (ids < 0)
        if bad.any():
            where = np.flatnonzero(bad)
            i = int(where[0])
            others = [c for c in dict.fromkeys(text[j] for j in where[:1000]) if c != text[i]]
            raise ConfigError(
                f"{what} has {_name(text[i])} at position {i}, which is not in the vocabulary "
                f"of {self.vocab_size} characters" + (
                    f" (nor are {', '.join(_name(c) for c in others[:5])})" if others else "")
                + "; use only characters of the training text")
        return ids

    def decode(self, ids) -> str:
        """The text of ids (a sequence or array of integers in 0..vocab_size-1)."""
        arr = np.asarray(ids)
        if arr.size == 0:
            return ""
        if arr.dtype.kind not in "iu":
            raise ConfigError(f"decode takes integer ids, got dtype {arr.dtype}")
        if arr.ndim != 1:
            raise ShapeError(f"decode takes one sequence of ids (1-D), got shape {arr.shape}")
        if arr.min() < 0 or arr.max() >= self.vocab_size:
            raise ConfigError(f"ids must lie in 0..{self.vocab_size - 1}, got "
                              f"{arr.min()}..{arr.max()}")
        vocab = self.vocab
        return "".join(vocab[i] for i in arr.tolist())

    # -- JSON ----------------------------------------------------------------------------------
    def to_json(self) -> dict:
        return {"type": self.kind, "vocab": self.vocab}

    @classmethod
    def from_json(cls, obj) -> CharTokenizer:
        """The tokenizer `to_json` wrote; anything else is a ConfigError naming what is wrong."""
        if not isinstance(obj, dict) or obj.get("type") != cls.kind:
            raise ConfigError(f"not a character tokenizer: expected {{\"type\": \"{cls.kind}\", "
                              f"\"vocab\": ...}}, got {str(obj)[:60]}")
        return cls(obj.get("vocab"))

    def save(self, path: str | os.PathLike) -> None:
        """Write the JSON atomically (a crash leaves the old file or the new one)."""
        from .checkpoint import atomic_write_json

        atomic_write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike) -> CharTokenizer:
        from .checkpoint import read_json

        return cls.from_json(read_json(path))

    def __eq__(self, other):
        return isinstance(other, CharTokenizer) and other.vocab == self.vocab

    def __hash__(self):
        return hash(self.vocab)

    def __repr__(self):
        return f"CharTokenizer({self.vocab_size} characters: {json.dumps(self.vocab)[:40]})"


def _codes(text: str) -> np.ndarray:
    """The code points of ``text`` (UTF-32 is one 4-byte unit per character)."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4").astype(np.int64)


def _name(char: str) -> str:
    """A character as a message shows it: 'é' (U+00E9 LATIN SMALL LETTER E WITH ACUTE)."""
    code = f"U+{ord(char):04X}"
    name = unicodedata.name(char, "")
    return f"{char!r} ({code}{' ' + name if name else ''})"
