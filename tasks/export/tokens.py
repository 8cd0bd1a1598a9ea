"""Re-tokenizing a run's documents with the run's own tokenizer, one document at a time.

The tokenize stage packs documents into fixed-length rows per source, so a row is not a
document. Token exports re-encode each kept document exactly as the stage did (the run's
``tokenizer.json``, no special tokens added by the tokenizer, then the EOS token) so that one
exported document is one corpus document, and the training split's token count equals the
stage's ``tokens``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa

from tasks.tokenize import EOS


class DocTokenizer:
    def __init__(self, tokenizer_json: Path):
        from tokenizers import Tokenizer

        self.path = Path(tokenizer_json)
        self.tok = Tokenizer.from_file(str(self.path))
        eos = self.tok.token_to_id(EOS)
        if eos is None:
            raise ValueError(f"{self.path}: no {EOS} token")
        self.eos_id = int(eos)
        self.vocab_size = int(self.tok.get_vocab_size())

    def encode(self, texts: pa.Array | list[str]) -> list[np.ndarray]:
        """Each text's token ids followed by EOS (int64; the writers narrow them)."""
        items = texts.to_pylist() if isinstance(texts, pa.Array | pa.ChunkedArray) else texts
        encs = self.tok.encode_batch(items, add_special_tokens=False)
        return [np.asarray([*e.ids, self.eos_id], dtype=np.int64) for e in encs]

    def count(self, texts: pa.Array | list[str]) -> np.ndarray:
        """Tokens per document, EOS included (what training sees)."""
        return np.fromiter((len(a) for a in self.encode(texts)), dtype=np.int64)

    def decode(self, ids: np.ndarray) -> str:
        """A document's text back from its ids (the trailing EOS dropped)."""
        body = ids[:-1] if len(ids) and int(ids[-1]) == self.eos_id else ids
        return self.tok.decode([int(i) for i in body], skip_special_tokens=False)


def save_tokenizer_folder(tokenizer_json: Path, out: Path) -> Path:
    """The tokenizer as a folder ``AutoTokenizer.from_pretrained`` loads (what nanotron's
    metadata names and Megatron-LM's ``HuggingFaceTokenizer`` takes): the run's
    ``tokenizer.json`` as it is, and a ``tokenizer_config.json`` naming
    ``PreTrainedTokenizerFast`` (a class transformers 4 and 5 both know) with EOS also as BOS
    and PAD, as the run's checkpoints have it."""
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(tokenizer_json, out / "tokenizer.json")
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": EOS,
              "eos_token": EOS, "pad_token": EOS, "unk_token": None,
              "add_bos_token": False, "add_eos_token": False}
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out

