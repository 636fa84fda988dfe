"""easel-mini's CLIP tokenizer: a byte-level BPE learnt from the scene captions and common English.

The merges are learnt with the ``tokenizers`` library under exactly the
normalisation and pre-tokenisation ``CLIPTokenizer`` applies, so every merge is
reachable at inference. The vocabulary is then laid out the way CLIP's is:
every byte-level symbol, each again with the ``</w>`` end-of-word suffix, one
entry per merge, then ``<|startoftext|>`` and ``<|endoftext|>`` last. Because
every byte is in it, any prompt (unicode, digits, unknown words) tokenizes into
byte pieces at worst, and no unknown token (which CLIP spells as end-of-text)
ever lands mid-prompt (nor does a prompt that types out a special token). End-of-text
has the largest id, as in real CLIP.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import CLIPTokenizer

from ...clip_tokenizer import SUFFIX, clip_vocab

MODEL_MAX_LENGTH = 77

# CLIPTokenizer's own pre-tokenisation (transformers' tokenization_clip.py), repeated so
# the merges are learnt on the very pieces the tokenizer will later see.
_CLIP_SPLIT = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""

# Everyday English, so prompts outside the scene grammar still split into sensible pieces.
COMMON_WORDS = """
a an the of in on at with and or but by to from for as into onto over under above below near
is are was were be been being it its this that these those there here what which who how why
i you he she we they me him her us them my your his our their one two three four five six seven
eight nine ten many some any all each every no not very more most less few other another same
new old big small large little tiny huge tall short long wide thin thick round flat bright dark
light heavy soft hard hot cold warm cool wet dry clean dirty happy sad beautiful pretty ugly good
bad best great simple plain empty full left right top bottom middle center centre corner side
upper lower front back inside outside between behind beside next up down
red orange yellow green blue purple violet pink brown white black gray grey cyan magenta gold
silver colour color colorful shades pastel neon
circle square triangle star heart ring diamond cross rectangle oval hexagon line dot shape shapes
pattern stripe stripes grid background foreground border edge picture image photo photograph
painting drawing sketch illustration art artwork style render poster logo icon symbol
cat dog bird fish horse cow sheep pig lion tiger bear fox wolf owl rabbit mouse duck frog snake
man woman boy girl child person people face hand eye hair head body
house home building tower castle bridge church city town village street road car bus truck bike
boat ship train plane rocket robot computer phone book table chair bed door window wall room
tree trees forest flower flowers grass garden leaf leaves plant field mountain mountains hill
river lake sea ocean beach island desert sky cloud clouds sun moon stars rain snow storm fire
water ice stone rock sand wood metal glass paper
morning evening night day sunset sunrise winter summer spring autumn
apple banana orange cake bread coffee tea cup bowl plate bottle
watercolor oil digital cartoon realistic abstract minimal vintage modern detailed high quality
""".split()


def _clip_normalizer() -> normalizers.Normalizer:
    return normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])


def _clip_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_CLIP_SPLIT), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


def learn_merges(texts: Iterable[str], num_merges: int) -> list[tuple[str, str]]:
    """BPE merges (with the ``</w>`` suffix) learnt from ``texts``, at most ``num_merges`` of them."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    bpe = Tokenizer(models.BPE(end_of_word_suffix=SUFFIX))
    bpe.normalizer = _clip_normalizer()
    bpe.pre_tokenizer = _clip_pre_tokenizer()
    trainer = trainers.BpeTrainer(
        # The trainer's vocabulary is its alphabet (plus suffixed symbols it sees) and one token per merge.
        vocab_size=2 * len(alphabet) + num_merges,
        initial_alphabet=alphabet,
        end_of_word_suffix=SUFFIX,
        min_frequency=2,
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    merges = json.loads(bpe.to_str())["model"]["merges"]
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in merges][:num_merges]


def build_tokenizer(captions: Iterable[str], num_merges: int = 1500, word_weight: int = 20) -> CLIPTokenizer:
    """A ``CLIPTokenizer`` (max length 77) with merges learnt from ``captions`` and the common words.

    Each common word counts ``word_weight`` times, so it gets merged whole even
    though the captions outnumber it.
    """
    common = " ".join(COMMON_WORDS)
    texts = [*captions, *([common] * word_weight)]
    merges = learn_merges(texts, num_merges)
    # split_special_tokens: a prompt that spells out "<|endoftext|>" gets ordinary pieces, not a
    # real end-of-text mid-prompt (the text encoder pools at the first one).
    return CLIPTokenizer(
        vocab=clip_vocab(merges), merges=merges, model_max_length=MODEL_MAX_LENGTH, split_special_tokens=True
    )


def write_vocab_files(tokenizer: CLIPTokenizer, folder: Path) -> None:
    """Add ``vocab.json`` and ``merges.txt`` beside ``tokenizer.json``.

    transformers 5 saves only ``tokenizer.json``; the slow ``CLIPTokenizer`` of
    transformers 4 (which this project also supports) needs the two classic files.
    """
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    (folder / "vocab.json").write_text(json.dumps(model["vocab"], ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
