"""Tokenisation: prefix check on two real chat templates, one BOS, EOS per response, truncation, report."""

import pytest

from preftune.models import load_tokenizer
from preftune.tokenize import tokenize_completions, tokenize_pairs

LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")

LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
SYSTEM = {"role": "system", "content": "You are terse."}
MULTI = [SYSTEM, {"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4."},
         {"role": "user", "content": "And 3+3?"}]


@pytest.fixture(scope="module")
def chatml():
    return load_tokenizer("tiny-llama")


@pytest.fixture(scope="module")
def llama3():
    from tokenizers import Regex, pre_tokenizers
    from tokenizers.processors import TemplateProcessing

    tok = load_tokenizer("tiny-llama")
    # Llama-3's pre-tokenizer regex keeps "\n\n" whole before a word (SmolLM's splits it), which is
    # what makes the header's "\n\n" a token boundary in Llama-3.
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.add_special_tokens({"additional_special_tokens": [
        "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]})
    tok.bos_token, tok.eos_token, tok.pad_token = "<|begin_of_text|>", "<|end_of_text|>", "<|end_of_text|>"
    tok.chat_template = LLAMA3_TEMPLATE
    # like Llama-3's tokenizer, this one adds a BOS of its own: the template's BOS must not be doubled
    bos = tok.convert_tokens_to_ids("<|begin_of_text|>")
    tok.backend_tokenizer.post_processor = TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", bos)])
    assert tok("a")["input_ids"][0] == bos
    return tok


def _pair(prompt, chosen="Four.", rejected="Five, obviously."):
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def _template_ids(tok, conv, gen=False):
    return tok(tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=gen),
               add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("prompt", ["What is 2+2?", [SYSTEM, {"role": "user", "content": "What is 2+2?"}], MULTI])
def test_chatml_split_is_the_template(chatml, prompt):
    items, report = tokenize_pairs([_pair(prompt)], chatml, 512)
    it = items[0]
    conv = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    assert it.prompt_ids == _template_ids(chatml, conv, gen=True)
    assert it.prompt_ids + it.chosen_ids == _template_ids(chatml, conv + [{"role": "assistant", "content": "Four."}])
    # ChatML ends a turn with <|im_end|> "\n": the template's end is kept and contains the EOS (== pad)
    assert chatml.pad_token_id == chatml.eos_token_id
    assert it.chosen_ids[-2:] == [chatml.eos_token_id, chatml("\n", add_special_tokens=False)["input_ids"][0]]
    assert it.rejected_ids[-2] == chatml.eos_token_id
    full = it.prompt_ids + it.chosen_ids
    assert full[0] == chatml.bos_token_id and full[1] != chatml.bos_token_id
    assert report.num_rows == 1 and report.num_truncated == 0 and report.num_dropped == 0


def test_llama3_style_template_one_bos_and_eos(llama3):
    items, _ = tokenize_pairs([_pair(MULTI), _pair("Hi")], llama3, 512)
    bos, eos = llama3.bos_token_id, llama3.eos_token_id
    eot = llama3.convert_tokens_to_ids("<|eot_id|>")
    for it in items:
        full = it.prompt_ids + it.chosen_ids
        assert full.count(bos) == 1 and full[0] == bos  # template BOS + tokenizer BOS -> one
        # the template ends a turn with <|eot_id|>; the tokenizer's EOS differs, so it is appended
        assert it.chosen_ids[-2:] == [eot, eos] and it.rejected_ids[-2:] == [eot, eos]
    body = _template_ids(llama3, MULTI + [{"role": "assistant", "content": "Four."}])
    assert items[0].prompt_ids + items[0].chosen_ids[:-1] == body
    assert items[0].prompt_ids == _template_ids(llama3, MULTI, gen=True)


def test_template_without_bos_gets_one_when_tokenizer_adds_it(llama3):
    tok = llama3
    old = tok.chat_template
    tok.chat_template = LLAMA3_TEMPLATE.replace("{{ bos_token }}", "")
    try:
        items, _ = tokenize_pairs([_pair("Hi")], tok, 512)
    finally:
        tok.chat_template = old
    full = items[0].prompt_ids + items[0].chosen_ids
    assert full[0] == tok.bos_token_id and full.count(tok.bos_token_id) == 1


def test_template_breaking_prefix_names_the_row(chatml):
    tok = load_tokenizer("tiny-llama")
    # renders the number of messages first: adding the reply changes the prompt's text
    tok.chat_template = "{{ messages | length }}" + chatml.chat_template
    with pytest.raises(ValueError, match=r"row 0: the chat template does not render the prompt as a prefix"):
        tokenize_pairs([_pair("Hi")], tok, 512)


def test_token_boundary_merge_is_an_error_or_split(chatml):
    rows = [_pair("Hi"), _pair("Hi", chosen="\n\nFour.")]  # "\n" of the prompt merges with the reply's
    with pytest.raises(ValueError, match=r"row 1: the prompt's tokens are not a prefix"):
        tokenize_pairs(rows, chatml, 512)
    items, _ = tokenize_pairs(rows, chatml, 512, split_merged=True)
    it = items[1]
    assert it.chosen_ids[:-2] == chatml("\n\nFour.", add_special_tokens=False)["input_ids"]


def test_plain_text_decoder(chatml):
    tok = load_tokenizer("tiny-llama")
    tok.chat_template = None
    items, _ = tokenize_pairs([_pair("What is 2+2?")], tok, 512, encoder=False)
    it = items[0]
    assert it.prompt_ids == tok("What is 2+2?\n\n", add_special_tokens=False)["input_ids"]
    assert it.chosen_ids == tok("Four.", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]


def test_encoder_text_pair_encoding():
    tok = load_tokenizer("tiny-bert")
    items, _ = tokenize_pairs([_pair("What is 2+2?")], tok, 128)
    it = items[0]
    ref = tok("What is 2+2?", "Five, obviously.")
    assert it.prompt_ids + it.rejected_ids == ref["input_ids"]
    assert [0] * len(it.prompt_ids) + [1] * len(it.rejected_ids) == ref["token_type_ids"]
    assert it.prompt_ids[0] == tok.cls_token_id and it.chosen_ids[-1] == tok.sep_token_id


def test_truncation_keeps_prompt_end_and_response_start(chatml):
    long_prompt = " ".join(f"w{i}" for i in range(300))
    long_resp = " ".join(f"r{i}" for i in range(300))
    rows = [_pair("short"), _pair(long_prompt, chosen=long_resp), _pair("short", chosen=long_resp)]
    full, _ = tokenize_pairs(rows, chatml, 4096)
    items, report = tokenize_pairs(rows, chatml, 128)
    assert report.num_rows == 3 and report.num_truncated == 2 and report.num_dropped == 0
    assert [it.truncated for it in items] == [False, True, True]
    assert items[0] == full[0]
    for it, orig in zip(items[1:], full[1:]):
        assert len(it.prompt_ids) + max(len(it.chosen_ids), len(it.rejected_ids)) <= 128
        assert it.prompt_ids[0] == chatml.bos_token_id  # the one BOS survives
        k = len(it.prompt_ids) - 1
        assert it.prompt_ids[1:] == orig.prompt_ids[-k:]  # the END of the prompt
        n = len(it.chosen_ids) - 1
        assert it.chosen_ids[:n] == orig.chosen_ids[:n] and it.chosen_ids[-1] == chatml.eos_token_id
    assert len(items[1].prompt_ids) == 64  # the prompt gets half of max_length when both are long
    assert items[2].prompt_ids == full[2].prompt_ids  # a short prompt is never cut


def test_max_prompt_length_drop_and_error(chatml):
    long_prompt = " ".join(f"w{i}" for i in range(300))
    rows = [_pair("short"), _pair(long_prompt)]
    items, report = tokenize_pairs(rows, chatml, 512, max_prompt_length=40)
    assert len(items[1].prompt_ids) == 40 and report.num_truncated == 1
    items, report = tokenize_pairs(rows, chatml, 128, on_overlong="drop")
    assert [it.index for it in items] == [0]
    assert report.num_dropped == 1 and report.dropped[0][0] == 1 and "max_length 128" in report.dropped[0][1]
    with pytest.raises(ValueError, match="row 1: prompt \\+ response has"):
        tokenize_pairs(rows, chatml, 128, on_overlong="error")
    with pytest.raises(ValueError, match="on_overlong"):
        tokenize_pairs(rows, chatml, 128, on_overlong="cut")


def test_completions_match_pairs(chatml):
    pairs, _ = tokenize_pairs([_pair(MULTI)], chatml, 512)
    seqs, report = tokenize_completions([MULTI, "Hi"], ["Four.", [{"role": "assistant", "content": "Yo"}]],
                                        chatml, 512)
    assert seqs[0].prompt_ids == pairs[0].prompt_ids and seqs[0].completion_ids == pairs[0].chosen_ids
    assert seqs[1].index == 1 and report.num_rows == 2
    with pytest.raises(ValueError, match="2 prompts for 1 completions"):
        tokenize_completions([MULTI, "Hi"], ["x"], chatml, 512)
