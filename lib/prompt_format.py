"""Gemma chat turns around the taught <reasoning>/<answer> response, and their tokenization."""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

from lib.data import EXAMPLES, CheckResult, DataFile

# Ordinary (non-special) tokens: decoding with skip_special_tokens keeps them in the output.
RESPONSE_TAGS = ("<reasoning>", "</reasoning>", "<answer>", "</answer>")
START_OF_TURN = "<start_of_turn>"
END_OF_TURN = "<end_of_turn>"
IGNORE_INDEX = -100  # label value the loss skips (PyTorch's CrossEntropyLoss default)


def render_prompt(prompt: str, bos_token: str) -> str:
    """The user turn and the opened model turn, exactly as generation will see it.

    Written out rather than taken from `apply_chat_template` because the base Gemma
    checkpoints ship no chat template; the text is Gemma's own turn format.
    """
    return f"{bos_token}{START_OF_TURN}user\n{prompt}{END_OF_TURN}\n{START_OF_TURN}model\n"


def render_response(steps: list[dict], final_answer: str) -> str:
    """The model turn's content, closed by the end-of-turn marker the model must learn."""
    reasoning = "\n".join(step["content"] for step in steps)
    return f"<reasoning>{reasoning}</reasoning>\n<answer>{final_answer}</answer>{END_OF_TURN}"


def encode_prompt(prompt: str, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    # The rendered text already starts with BOS: adding special tokens again would double it.
    return tokenizer(render_prompt(prompt, tokenizer.bos_token), add_special_tokens=False)["input_ids"]


def encode_trace(trace: dict, tokenizer: PreTrainedTokenizerBase) -> dict:
    """input_ids and labels for one training record; the loss sees only the response.

    Prompt and response are tokenized separately and concatenated, so the prompt tokens
    are exactly those generation starts from and the mask boundary is exact. EOS follows
    the end-of-turn marker so that both stop tokens are learned.
    """
    prompt_ids = encode_prompt(trace["prompt"], tokenizer)
    response_text = render_response(trace["steps"], trace["final_answer"])
    response_ids = tokenizer(response_text, add_special_tokens=False)["input_ids"]
    response_ids = response_ids + [tokenizer.eos_token_id]
    return {
        "input_ids": prompt_ids + response_ids,
        "labels": [IGNORE_INDEX] * len(prompt_ids) + response_ids,
    }


def encode_traces(traces: list[dict], tokenizer: PreTrainedTokenizerBase, max_seq_length: int,
                  where: tuple[str, list[int]] | None = None) -> list[dict]:
    """Encode every record; one longer than max_seq_length is an error, never truncated.

    `where`: the file name and each record's line, so the error names them (else the record's number).
    """
    examples = []
    for n, trace in enumerate(traces):
        example = encode_trace(trace, tokenizer)
        if len(example["input_ids"]) > max_seq_length:
            record = f"{where[0]} line {where[1][n]}" if where else f"training record {n + 1}"
            raise ValueError(
                f"{record} is {len(example['input_ids'])} tokens, over parameter "
                f"'max_seq_length' ({max_seq_length}); raise it rather than cut the answer off"
            )
        examples.append(example)
    return examples


def stop_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Generation ends at end-of-turn or end-of-sequence, whichever comes first."""
    return [tokenizer.convert_tokens_to_ids(END_OF_TURN), tokenizer.eos_token_id]


def check_record_lengths(train: DataFile, tokenizer: PreTrainedTokenizerBase,
                         max_seq_length: int) -> tuple[CheckResult, list[int]]:
    """Every training record, encoded as training encodes it, within max_seq_length (records are never truncated).

    The one length check: pre-flight's and the data check's. Also returns each record's length in tokens; the
    counts hold the longest record and the longest response (the positions the loss reads), which the memory
    estimate needs.
    """
    examples = [encode_trace(trace, tokenizer) for trace in train.records]
    lengths = [len(example["input_ids"]) for example in examples]
    response = max(sum(label != IGNORE_INDEX for label in example["labels"]) for example in examples)
    longest = max(range(len(lengths)), key=lengths.__getitem__)
    over = [(line, length) for line, length in zip(train.lines, lengths) if length > max_seq_length]
    detail = (f"longest record {lengths[longest]} tokens ({train.path.name} line {train.lines[longest]}), longest "
              f"response {response}; max_seq_length {max_seq_length} (records are never truncated)")
    if over:
        detail = f"{len(over)} of {len(lengths)} training records over max_seq_length {max_seq_length}; {detail}"
    problems = [f"{train.path.name} line {line}: {length} tokens, over max_seq_length {max_seq_length}; raise "
                "max_seq_length rather than cut the answer off" for line, length in over]
    counts = {"records": len(lengths), "over_max_seq_length": len(over), "longest_tokens": lengths[longest],
              "longest_response_tokens": response}
    examples_over = [{"kind": "over_max_seq_length", "line": line, "tokens": length} for line, length in over[:EXAMPLES]]
    return CheckResult("record lengths", "fail" if over else "pass", detail, counts, examples_over, problems), lengths
