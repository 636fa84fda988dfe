"""An offline CLIP tokenizer made from a word list, seeded the way CLIP's vocabulary is.

The vocabulary holds every byte-level symbol, each again with the ``</w>``
end-of-word suffix, then one entry per merge, then the two special tokens.
Because every byte is in it, any prompt tokenizes (unknown words fall back to
byte pieces) and no end-of-text token ever appears mid-prompt. End-of-text gets
the largest id, as in real CLIP, so a text encoder pooling at the largest id
also pools at the right place.
"""

from __future__ import annotations

from tokenizers import pre_tokenizers
from transformers import CLIPTokenizer

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
SUFFIX = "</w>"

# Words common in image prompts; most become a single token (BPE merge order can split a few).
DEFAULT_WORDS = (
    "a an the of in on at with and or by to from for is it this that "
    "cat dog bird fish horse cow lion tiger bear fox owl rabbit "
    "red orange yellow green blue purple pink white black gray brown gold silver "
    "house tree forest sky sea ocean river lake mountain hill city street road field garden flower "
    "sun moon star cloud rain snow night day sunset sunrise light dark "
    "photo painting drawing sketch portrait landscape picture image art style oil watercolor "
    "man woman child person face hand eye robot astronaut car boat ship train plane "
    "apple banana cake coffee cup table chair window door wall room "
    "small big large tiny old new bright soft sharp beautiful happy "
    "circle square triangle shape pattern line dot stripe background"
).split()


def _merges_for(words: list[str]) -> list[tuple[str, str]]:
    """Left-to-right merges that assemble each word into one token ending in ``</w>``."""
    to_byte_symbols = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    merges: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    # Longest words first, so short words' merges do not outrank the start of longer ones.
    for word in sorted(words, key=len, reverse=True):
        ((symbols, _),) = to_byte_symbols.pre_tokenize_str(word.lower())
        if len(symbols) < 2:
            continue
        pieces = list(symbols[:-1]) + [symbols[-1] + SUFFIX]
        left = pieces[0]
        for right in pieces[1:]:
            pair = (left, right)
            if pair not in seen:
                seen.add(pair)
                merges.append(pair)
            left = left + right
    return merges


def clip_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    """CLIP's layout: byte symbols, byte symbols + ``</w>``, merge results, then BOS and EOS."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    ordered = alphabet + [symbol + SUFFIX for symbol in alphabet] + [left + right for left, right in merges]
    vocab: dict[str, int] = {}
    for token in ordered:
        vocab.setdefault(token, len(vocab))
    vocab[BOS] = len(vocab)
    vocab[EOS] = len(vocab)
    return vocab


def make_clip_tokenizer(
    words: list[str] | tuple[str, ...] = DEFAULT_WORDS, model_max_length: int = 77
) -> CLIPTokenizer:
    """A ``CLIPTokenizer`` whose vocabulary is the byte alphabet plus one token per word."""
    merges = _merges_for(list(words))
    return CLIPTokenizer(
        vocab=clip_vocab(merges),
        merges=merges,
        model_max_length=model_max_length,
    )
