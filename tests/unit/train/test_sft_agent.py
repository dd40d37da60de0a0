"""SFT on agent `messages` rows: the row's tools reach the tokeniser, and train_on picks the trained turns."""

from agent_rows import CALC, CHOSEN, PROMPT
from helpers import write_jsonl

from preftune.config import load_config
from preftune.models import load_tokenizer
from preftune.train.sft import SFTConfig, load_sft_data, read_sft_rows


def test_agent_messages_rows_train_the_assistant_turns(tmp_path):
    path = str(write_jsonl(tmp_path / "sft.jsonl", [{"messages": PROMPT + CHOSEN, "tools": [CALC]}]))
    (row,), _ = read_sft_rows(path, with_tools=True)
    assert row[2] == [CALC] and row[1] == CHOSEN[-1:] and row[0] == PROMPT + CHOSEN[:-1]
    tok = load_tokenizer("tiny-llama")
    trained = {}
    for on in ("chosen_only", "all_assistant"):
        cfg = load_config(SFTConfig, overrides=["model=tiny-llama", f"data={path}", f"out={tmp_path / on}",
                                                f"train_on={on}"])
        (it,), _, _ = load_sft_data(path, tok, cfg)
        trained[on] = (tok.decode([i for i, m in zip(it.prompt_ids, it.prompt_mask) if m]),
                       tok.decode([i for i, m in zip(it.completion_ids, it.completion_mask) if m]))
    assert trained["chosen_only"] == ("", "It is 20.<|im_end|>\n")
    # every earlier assistant turn (two calls), never the user turn or the tool results
    assert trained["all_assistant"][0] == (
        '<tool_call>{"name": "calculator", "arguments": {"expression": "2+3"}}</tool_call><|im_end|>\n'
        '<tool_call>{"name": "calculator", "arguments": {"expression": "5*4"}}</tool_call><|im_end|>\n')
