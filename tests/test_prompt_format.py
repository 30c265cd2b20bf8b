"""Rendering and tokenization: Gemma turns, one BOS, loss on the response only, stop tokens."""

from __future__ import annotations

import pytest

from lib.model_loading import load_tokenizer
from lib.prompt_format import (
    END_OF_TURN,
    IGNORE_INDEX,
    RESPONSE_TAGS,
    encode_prompt,
    encode_trace,
    encode_traces,
    render_prompt,
    render_response,
    stop_token_ids,
)
from tests.conftest import build_embedded

TRACE = {
    "prompt": "A car travels at 45 km/h for 3 hours. How far does it go?  😀",
    "final_answer": "135",
    "steps": [
        {"i": 1, "type": "given", "content": "Distance = speed × time"},
        {"i": 2, "type": "compute", "content": "45 × 3 = 135"},
    ],
}


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    traces = [
        {**TRACE, "prompt": f"What is {a} + {b}?", "final_answer": str(a + b)} for a in range(12) for b in range(12)
    ] + [TRACE]
    folder = build_embedded(traces, seed=0, out_dir=tmp_path_factory.mktemp("embedded"))
    return load_tokenizer(str(folder))


def test_rendered_turns_follow_gemma_format():
    assert render_prompt("Hi?", "<bos>") == "<bos><start_of_turn>user\nHi?<end_of_turn>\n<start_of_turn>model\n"
    assert render_response(TRACE["steps"], "135") == (
        "<reasoning>Distance = speed × time\n45 × 3 = 135</reasoning>\n<answer>135</answer><end_of_turn>"
    )


def test_exactly_one_bos_at_the_start(tokenizer):
    # The tokenizer adds BOS on its own when asked (as Gemma's does); the rendered text carries it.
    assert tokenizer("x")["input_ids"][0] == tokenizer.bos_token_id
    ids = encode_trace(TRACE, tokenizer)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    assert ids.count(tokenizer.bos_token_id) == 1


def test_loss_is_masked_exactly_on_the_prompt(tokenizer):
    example = encode_trace(TRACE, tokenizer)
    prompt_len = len(encode_prompt(TRACE["prompt"], tokenizer))
    labels = example["labels"]
    assert labels[:prompt_len] == [IGNORE_INDEX] * prompt_len
    assert IGNORE_INDEX not in labels[prompt_len:]
    assert labels[prompt_len:] == example["input_ids"][prompt_len:]
    response = tokenizer.decode(labels[prompt_len:], skip_special_tokens=False)
    assert response.startswith("<reasoning>") and "<answer>135</answer>" in response


def test_both_stop_tokens_are_learned_last(tokenizer):
    labels = encode_trace(TRACE, tokenizer)["labels"]
    eot = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    assert labels[-2:] == [eot, tokenizer.eos_token_id]
    assert stop_token_ids(tokenizer) == [eot, tokenizer.eos_token_id]


def test_tags_are_single_ordinary_tokens_kept_when_decoding(tokenizer):
    for tag in RESPONSE_TAGS:
        assert len(tokenizer(tag, add_special_tokens=False)["input_ids"]) == 1
    ids = encode_trace(TRACE, tokenizer)["input_ids"]
    text = tokenizer.decode(ids, skip_special_tokens=True)
    assert "<reasoning>" in text and "</answer>" in text
    assert "<bos>" not in text and END_OF_TURN not in text


def test_unseen_characters_round_trip(tokenizer):
    prompt = "Compute 7² + 2³ ÷ 4 — naïve café 🎉"
    ids = encode_prompt(prompt, tokenizer)
    assert tokenizer.unk_token_id not in ids
    assert prompt in tokenizer.decode(ids)


def test_over_long_record_is_an_error_naming_the_parameter(tokenizer):
    long_trace = {**TRACE, "prompt": "word " * 400}
    with pytest.raises(ValueError, match="training record 2 .* 'max_seq_length' \\(64\\)"):
        encode_traces([TRACE, long_trace], tokenizer, max_seq_length=64)
