"""easel-mini's tokenizer: CLIP's vocabulary layout, any prompt tokenizes, end-of-text only at the end."""

from __future__ import annotations

import random

import pytest
import torch

from pipelines.clip_tokenizer import BOS, EOS
from pipelines.lab.scenes import caption, sample_scene
from pipelines.lab.training import components
from pipelines.lab.training.tokenizer import build_tokenizer

ODD_PROMPTS = [
    "a red circle in the center",
    "Ünïcödé café, naïve façade — 日本語のテキスト 🎨🖌️",
    "R2-D2 at 3:45pm, 100% sure?! (yes) #1 @home ~/path\\to\\file",
    "zxqvbnmplk qwertyuiop supercalifragilistic",
    "   MANY    spaces\tand\ttabs\nand newlines   ",
    "<|endoftext|> pretending to be special",
    "",
]


@pytest.fixture(scope="module")
def tokenizer():
    rng = random.Random(0)
    return build_tokenizer([caption(sample_scene(rng), rng) for _ in range(500)])


def test_special_tokens_come_last_with_end_of_text_largest(tokenizer):
    assert tokenizer.convert_tokens_to_ids(BOS) == len(tokenizer) - 2
    assert tokenizer.convert_tokens_to_ids(EOS) == len(tokenizer) - 1
    assert tokenizer.eos_token_id == tokenizer.pad_token_id == len(tokenizer) - 1
    assert tokenizer.model_max_length == 77


@pytest.mark.parametrize("prompt", ODD_PROMPTS)
def test_any_prompt_tokenizes_with_end_of_text_only_at_the_end(tokenizer, prompt):
    ids = tokenizer(prompt).input_ids
    assert ids[0] == tokenizer.bos_token_id
    assert ids[-1] == tokenizer.eos_token_id
    body = ids[1:-1]
    assert tokenizer.eos_token_id not in body and tokenizer.bos_token_id not in body


def test_scene_words_and_common_words_are_single_tokens(tokenizer):
    tokens = tokenizer.tokenize("a purple triangle in the top left corner, photo of a horse")
    assert tokens == [
        "a</w>",
        "purple</w>",
        "triangle</w>",
        "in</w>",
        "the</w>",
        "top</w>",
        "left</w>",
        "corner</w>",
        ",</w>",
        "photo</w>",
        "of</w>",
        "a</w>",
        "horse</w>",
    ]


def test_unknown_words_fall_back_to_pieces_that_decode_back(tokenizer):
    prompt = "zxqvbnmplk 日本 café 42"
    ids = tokenizer(prompt).input_ids
    assert len(ids) > 6
    assert tokenizer.decode(ids, skip_special_tokens=True) == "zxqvbnmplk 日本 café 4 2"


def test_long_prompts_truncate_to_77_ending_in_end_of_text(tokenizer):
    batch = tokenizer(["a red circle " * 60], padding="max_length", max_length=77, truncation=True)
    assert len(batch.input_ids[0]) == 77
    assert batch.input_ids[0][-1] == tokenizer.eos_token_id
    assert batch.input_ids[0].count(tokenizer.eos_token_id) == 1


def test_text_encoder_pools_at_end_of_text(tokenizer):
    text = components.text_encoder(tokenizer).eval()
    assert text.config.eos_token_id == tokenizer.eos_token_id
    short = tokenizer(["a red circle"], return_tensors="pt").input_ids
    padded = tokenizer(["a red circle"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        a, b = text(short), text(padded)
    torch.testing.assert_close(a.text_embeds, b.text_embeds)
    torch.testing.assert_close(a.last_hidden_state, b.last_hidden_state[:, : short.shape[1]])
