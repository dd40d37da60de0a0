"""Tokenisation of agent rows: tools rendered natively by a template that supports them, and by the documented
plain rendering for one that does not (SmolLM2's); the masks of a three-turn trajectory under train_on."""

import copy

import pytest
from agent_rows import CALC, CHOSEN, PROMPT, ROW, TOOLS_TEMPLATE, call

from preftune.data.agent import plain_messages
from preftune.models import load_tokenizer
from preftune.tokenize import tokenize_completions, tokenize_pairs, tokenize_prompts


@pytest.fixture(scope="module")
def smol():
    return load_tokenizer("tiny-llama")  # SmolLM2's tokenizer and chat template (no tool support)


@pytest.fixture(scope="module")
def native():
    tok = copy.deepcopy(load_tokenizer("tiny-llama"))
    tok.chat_template = TOOLS_TEMPLATE
    return tok


def _trained(tok, ids, mask):
    return tok.decode([i for i, m in zip(ids, mask) if m])


def test_plain_rendering_is_the_documented_one(smol):
    text = smol.apply_chat_template(plain_messages(PROMPT + CHOSEN, [CALC]), tokenize=False)
    assert text.startswith("<|im_start|>system\nYou can call functions. Their JSON schemas are inside "
                           "<tools></tools>:\n<tools>\n"
                           "{\"type\": \"function\", \"function\": {\"name\": \"calculator\"")
    assert ('<|im_start|>assistant\n<tool_call>{"name": "calculator", "arguments": {"expression": "2+3"}}'
            '</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>5</tool_response><|im_end|>\n') in text
    assert "You are a helpful AI assistant named SmolLM" not in text  # the tools' system turn replaces the default
    # consecutive results become one user turn
    two = [PROMPT[0], {"role": "assistant", "content": "", "tool_calls": [call("a", "1"), call("b", "2")]},
           {"role": "tool", "tool_call_id": "a", "content": "1"}, {"role": "tool", "tool_call_id": "b", "content": "2"}]
    assert plain_messages(two, [])[-1] == {
        "role": "user", "content": "<tool_response>1</tool_response>\n<tool_response>2</tool_response>"}


EXPECTED = {  # what trains, decoded, per template: chosen_only (chosen's assistant turns) and the prompt's turn
    "smol": (('<tool_call>{"name": "calculator", "arguments": {"expression": "5*4"}}</tool_call><|im_end|>\n'
             "It is 20.<|im_end|>\n"),
             '<tool_call>{"name": "calculator", "arguments": {"expression": "2+3"}}</tool_call><|im_end|>\n'),
    "native": ('<call>calculator {"expression": "5*4"}</call><|im_end|>\nIt is 20.<|im_end|>\n',
               '<call>calculator {"expression": "2+3"}</call><|im_end|>\n'),
}


@pytest.mark.parametrize("name", ["smol", "native"])
def test_masks_of_a_three_turn_trajectory(name, request):
    tok = request.getfixturevalue(name)
    chosen_text, prompt_turn = EXPECTED[name]
    (it,), _ = tokenize_pairs([ROW], tok, 1024)
    # the ids are the template's rendering of the whole conversation, split at the prompt
    full = tok.decode(it.prompt_ids + it.chosen_ids)
    if name == "native":
        assert full.startswith('<|im_start|>system\nTools:\n{"type": "function"')
        assert "<|im_start|>tool\n5<|im_end|>" in full  # results in the template's own `tool` turn
    assert len(it.prompt_mask) == len(it.prompt_ids) and len(it.chosen_mask) == len(it.chosen_ids)
    assert sum(it.prompt_mask) == 0  # chosen_only: nothing of the prompt trains
    assert _trained(tok, it.chosen_ids, it.chosen_mask) == chosen_text
    assert _trained(tok, it.rejected_ids, it.rejected_mask) == "It is 14.<|im_end|>\n"
    # the tool result inside chosen and the next turn's header never train
    untrained = tok.decode([i for i, m in zip(it.chosen_ids, it.chosen_mask) if not m])
    assert "20" in untrained and "<|im_start|>assistant\n" in untrained
    (every,), _ = tokenize_pairs([ROW], tok, 1024, train_on="all_assistant")
    assert every.prompt_ids == it.prompt_ids and every.chosen_mask == it.chosen_mask
    assert _trained(tok, every.prompt_ids, every.prompt_mask) == prompt_turn  # not the user turn, not the result
    # the prompt for generation is the same prefix
    assert tokenize_prompts([PROMPT], tok, 1024, tools=[[CALC]])[0][0] == it.prompt_ids
    # one response: the same masks
    (seq,), _ = tokenize_completions([PROMPT], [CHOSEN], tok, 1024, tools=[[CALC]])
    assert (seq.prompt_ids, seq.completion_ids, seq.completion_mask) == (it.prompt_ids, it.chosen_ids, it.chosen_mask)


def test_plain_rows_keep_the_plain_layout(smol):
    (it,), _ = tokenize_pairs([{"prompt": "Hi", "chosen": "Hello.", "rejected": "Go."}], smol, 64)
    assert (it.prompt_mask, it.chosen_mask, it.rejected_mask) == (None, None, None)
    (every,), _ = tokenize_pairs([{"prompt": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"},
                                              {"role": "user", "content": "Again"}],
                                   "chosen": "Hello.", "rejected": "Go."}], smol, 64, train_on="all_assistant")
    assert _trained(smol, every.prompt_ids, every.prompt_mask) == "Yo<|im_end|>\n"
    with pytest.raises(ValueError, match="train_on must be one of chosen_only, all_assistant"):
        tokenize_pairs([ROW], smol, 64, train_on="everything")


def test_truncation_cuts_the_masks_with_the_ids(smol):
    (full,), _ = tokenize_pairs([ROW], smol, 1024, train_on="all_assistant")
    (cut,), rep = tokenize_pairs([ROW], smol, 140, max_prompt_length=100, train_on="all_assistant")
    assert rep.num_truncated == 1 and (len(cut.prompt_ids), len(cut.chosen_ids)) == (100, 40)
    # the prompt keeps its BOS and its last 99 tokens, the response its first 39 and an EOS: the masks alike
    assert cut.prompt_ids[0] == smol.bos_token_id
    assert cut.prompt_mask == full.prompt_mask[:1] + full.prompt_mask[-99:] and sum(cut.prompt_mask) > 0
    assert cut.chosen_mask == full.chosen_mask[:39] + [1] and 0 in cut.chosen_mask  # cut inside the tool result
    assert cut.rejected_mask == full.rejected_mask
