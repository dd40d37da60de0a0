"""Records -> token ids: chat templates with a prefix check, one BOS, an EOS per response, truncation.

Three tokenizer families:
- decoders with a chat template: the template is applied to the whole conversation (prompt +
  response) and to the prompt alone with `add_generation_prompt=True`; the prompt's text and tokens
  must be a prefix of the full conversation's, the response ids are the rest.
- decoders without a chat template: "prompt\\n\\nresponse" + EOS, prompt and response tokenised apart
  (so the split is exact by construction).
- encoders (BERT-like): prompt_ids = [CLS] prompt [SEP], response ids = response [SEP], so
  prompt_ids + chosen_ids is the standard text-pair encoding (token_type_ids 0 then 1).

Agent rows (data/agent.py): a template that reads `tools` gets `tools=` and the structured messages; any
other template gets the documented plain rendering of `agent.plain_messages` (tool schemas in the system
turn, `<tool_call>{json}</tool_call>` and `<tool_response>...</tool_response>` blocks). Which tokens train
is explicit (`train_on`): "chosen_only" (default) trains the assistant turns of the response, "all_assistant"
also every assistant turn of the prompt's trajectory; tool results, user and system turns never train. Each
assistant turn's span comes from rendering the conversation up to it, with the prefix check at every turn;
the masks are `PairTokens.prompt_mask` / `chosen_mask` / `rejected_mask` (None = the plain layout: every
response token trains, no prompt token does).

Truncation keeps the prompt's END (the question and the generation prompt sit there) and the
response's START plus its final EOS/[SEP]; every touched row is counted in the report, every dropped
row is listed with its reason. Nothing here imports torch.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from preftune.data import agent
from preftune.data.records import PairRecord, record_from_dict, render_text

ON_OVERLONG = ("truncate", "drop", "error")
TRAIN_ON = ("chosen_only", "all_assistant")
Mask = list  # list[int], 1 = the token trains, one per token id


@dataclass
class PairTokens:
    """One tokenised pair. prompt_ids + chosen_ids (or + rejected_ids) is the full sequence."""
    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    truncated: bool
    index: int  # position of the row in the input
    prompt_mask: Mask | None = None    # agent rows / train_on=all_assistant: which tokens train
    chosen_mask: Mask | None = None
    rejected_mask: Mask | None = None


@dataclass
class SequenceTokens:
    """One prompt with one response (SFT, KTO, scoring single responses)."""
    prompt_ids: list[int]
    completion_ids: list[int]
    truncated: bool
    index: int
    prompt_mask: Mask | None = None
    completion_mask: Mask | None = None


UnpairedTokens = SequenceTokens


@dataclass
class TokenizeReport:
    num_rows: int = 0
    num_truncated: int = 0
    num_dropped: int = 0
    dropped: list[tuple[int, str]] = field(default_factory=list)  # (row index, reason)

    def summary(self) -> str:
        return (f"{self.num_rows} rows: {self.num_truncated} truncated, {self.num_dropped} dropped"
                + "".join(f"\n  row {i}: {why}" for i, why in self.dropped[:10]))

    def to_dict(self, max_dropped: int = 100, **extra: Any) -> dict:
        """What run.json records (the first `max_dropped` dropped rows with their reasons)."""
        return {"num_rows": self.num_rows, "num_truncated": self.num_truncated, "num_dropped": self.num_dropped,
                "dropped": [{"row": i, "reason": why} for i, why in self.dropped[:max_dropped]], **extra}


class _Encoder:
    """The tokenizer-specific part: how a (prompt, response) conversation becomes ids."""

    def __init__(self, tokenizer: Any, encoder: bool | None, split_merged: bool = False):
        self.tok = tokenizer
        self.split_merged = split_merged
        self.template = getattr(tokenizer, "chat_template", None)
        self.native_tools = bool(self.template) and _reads_tools(self.template)
        # The renderings and ids of one row, kept while its responses are split: chosen and rejected share
        # the prompt's turns, and the per-turn prefix check renders them again (cleared per row).
        self.memo: dict = {}
        if encoder is None:
            encoder = (not self.template and tokenizer.cls_token_id is not None
                       and tokenizer.sep_token_id is not None)
        self.encoder = encoder
        if encoder:
            self.end_id = tokenizer.sep_token_id
            self.head_ids = [tokenizer.cls_token_id]
            return
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no EOS token: set tokenizer.eos_token before tokenising")
        self.end_id = tokenizer.eos_token_id
        bos = tokenizer.bos_token_id
        # Does the tokenizer add a BOS of its own? Then every sequence gets exactly one.
        probe = tokenizer("a", add_special_tokens=True)["input_ids"]
        self.adds_bos = bos is not None and bool(probe) and probe[0] == bos
        self.head_ids = [bos] if bos is not None else []

    def ids(self, text: str) -> list[int]:
        return list(self.tok(text, add_special_tokens=False)["input_ids"])

    def _one_bos(self, ids: list[int]) -> list[int]:
        bos = self.tok.bos_token_id
        if bos is None:
            return ids
        n = 0
        while n < len(ids) and ids[n] == bos:
            n += 1
        if n > 1:  # template wrote a BOS and something added another: keep one
            ids = ids[n - 1:]
        elif n == 0 and self.adds_bos:
            ids = [bos] + ids
        return ids

    def render(self, conv: list[dict], tools: list[dict], gen: bool = False) -> str:
        """The chat template's text of `conv` (agent rows as the module docstring says)."""
        key = ("text", json.dumps([conv, tools, gen], sort_keys=True))
        if key not in self.memo:
            self.memo[key] = self._render(conv, tools, gen)
        return self.memo[key]

    def template_ids(self, text: str) -> list[int]:
        """The ids of a rendered text, with one BOS (memoised with the renderings)."""
        key = ("ids", text)
        if key not in self.memo:
            self.memo[key] = self._one_bos(self.ids(text))
        return self.memo[key]

    def _render(self, conv: list[dict], tools: list[dict], gen: bool) -> str:
        if not (tools or agent.is_agent_conversation(conv)):
            return self.tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=gen)
        if self.native_tools:
            return self.tok.apply_chat_template(agent.template_messages(conv), tools=tools or None, tokenize=False,
                                                add_generation_prompt=gen)
        return self.tok.apply_chat_template(agent.plain_messages(conv, tools), tokenize=False,
                                            add_generation_prompt=gen)

    def _plain(self, conv: list[dict], tools: list[dict]) -> str:
        return render_text(agent.plain_messages(conv, tools) if tools or agent.is_agent_conversation(conv) else conv)

    def split(self, prompt: list[dict], response: list[dict], index: int,
              tools: list[dict] | None = None) -> tuple[list[int], list[int]]:
        """(prompt_ids, response_ids) for one conversation; ValueError naming the row on a bad template."""
        tools = tools or []
        if self.encoder:
            p = self.ids(self._plain(prompt, tools))
            return [self.tok.cls_token_id] + p + [self.end_id], self.ids(self._plain(response, [])) + [self.end_id]
        if not self.template:
            p = self._one_bos(self.ids(self._plain(prompt, tools) + "\n\n"))
            return p, self.ids(self._plain(response, [])) + [self.end_id]
        p_text = self.render(prompt, tools, gen=True)
        f_text = self.render(prompt + response, tools)
        if not f_text.startswith(p_text):
            raise ValueError(
                f"row {index}: the chat template does not render the prompt as a prefix of prompt + response "
                f"(they differ from character {_diverge(p_text, f_text)}: prompt ...{p_text[-40:]!r} vs "
                f"full ...{f_text[len(p_text) - 40:len(p_text) + 20]!r}); responses cannot be split off. "
                "Use a template that keeps earlier turns unchanged when a reply is appended.")
        p_ids, f_ids = list(self.template_ids(p_text)), list(self.template_ids(f_text))
        if f_ids[:len(p_ids)] != p_ids and self.split_merged:
            # What generation does: the model continues from exactly the prompt's tokens.
            f_ids = p_ids + self.ids(f_text[len(p_text):])
        if f_ids[:len(p_ids)] != p_ids:
            raise ValueError(
                f"row {index}: the prompt's tokens are not a prefix of prompt + response tokens (the tokenizer "
                f"merges across the boundary at token {_diverge(p_ids, f_ids)}: prompt ends "
                f"{self.tok.convert_ids_to_tokens(p_ids[-3:])}, full has "
                f"{self.tok.convert_ids_to_tokens(f_ids[len(p_ids) - 3:len(p_ids) + 2])}). "
                "Strip leading whitespace from the response, or pass split_merged=True to tokenise the "
                "response apart from the prompt (as generation would).")
        r_ids = f_ids[len(p_ids):]
        if not r_ids:
            raise ValueError(f"row {index}: the response renders to no tokens")
        if self.end_id not in r_ids:
            # ChatML ends a turn with <|im_end|>"\n": the template's own end is kept; only when the
            # template's end is not the EOS (e.g. a Llama-3 tokenizer whose EOS is <|end_of_text|>) is it added.
            r_ids = r_ids + [self.end_id]
        return p_ids, r_ids

    def split_masked(self, prompt: list[dict], response: list[dict], index: int, tools: list[dict],
                     train_on: str, masked: bool) -> tuple[list[int], list[int], Mask | None, Mask | None]:
        """`split` plus the masks of the module docstring when `masked` (the row is an agent row, or
        train_on is all_assistant); None, None otherwise."""
        p_ids, r_ids = self.split(prompt, response, index, tools)
        if self.encoder or not masked:
            return p_ids, r_ids, None, None
        if not self.template:
            raise ValueError(f"row {index}: masking tool results and training earlier assistant turns needs a chat "
                             "template; this tokenizer has none (set tokenizer.chat_template)")
        full = prompt + response
        train = [0] * (len(p_ids) + len(r_ids))
        for k, start, end in self.assistant_spans(full, tools, index):
            if k >= len(prompt) or train_on == "all_assistant":
                train[start:end] = [1] * (end - start)
        if r_ids and r_ids[-1] == self.end_id:
            train[-1] = 1  # the EOS ending the last assistant turn (the template's own, or the one appended)
        return p_ids, r_ids, train[:len(p_ids)], train[len(p_ids):]

    def assistant_spans(self, conv: list[dict], tools: list[dict], index: int) -> list[tuple[int, int, int]]:
        """(message index, first token, end token) of every assistant turn of `conv`: from the conversation
        rendered up to the turn with the assistant turn opened, to the conversation rendered through it.
        Both must be prefixes of the whole rendering, as text and as tokens, at every turn."""
        full = self.render(conv, tools)
        full_ids = self.template_ids(full)
        out = []
        for k, m in enumerate(conv):
            if m["role"] != "assistant":
                continue
            bounds = []
            for text in (self.render(conv[:k], tools, gen=True), self.render(conv[:k + 1], tools)):
                ids = self.template_ids(text)
                if not full.startswith(text) or full_ids[:len(ids)] != ids:
                    raise ValueError(f"row {index}: the chat template does not render the conversation up to turn "
                                     f"{k} as a prefix of the whole one (as text or as tokens); the turns' tokens "
                                     "cannot be told apart")
                bounds.append(len(ids))
            out.append((k, bounds[0], bounds[1]))
        return out


def _reads_tools(template: str) -> bool:
    """Whether a Jinja chat template reads the `tools` variable (then it renders tool schemas itself)."""
    import jinja2
    import jinja2.meta

    try:
        return "tools" in jinja2.meta.find_undeclared_variables(jinja2.Environment().parse(template))
    except jinja2.TemplateSyntaxError:
        return "tools" in template


def _diverge(a: Sequence, b: Sequence) -> int:
    n = 0
    while n < len(a) and n < len(b) and a[n] == b[n]:
        n += 1
    return n


def _keep_end(prompt: list[int], budget: int, head: list[int]) -> list[int]:
    """Keep the prompt's leading BOS/[CLS] (if it has one) and its last tokens, `budget` in all."""
    if len(prompt) <= budget:
        return prompt
    keep_head = len(head) if head and prompt[:len(head)] == head else 0
    tail = budget - keep_head
    return prompt[:keep_head] + (prompt[-tail:] if tail > 0 else [])


def _keep_start(response: list[int], budget: int, end_id: int) -> list[int]:
    """Keep the response's first tokens and end it with EOS/[SEP], `budget` in all."""
    if len(response) <= budget:
        return response
    return response[:budget - 1] + [end_id]


def _fit(prompt: list[int], responses: list[list[int]], enc: _Encoder, max_length: int,
         max_prompt_length: int | None) -> tuple[list[int], list[list[int]], bool]:
    """Truncate so that prompt + each response fits max_length; returns (prompt, responses, touched)."""
    longest = max(len(r) for r in responses)
    p_budget = len(prompt)
    if max_prompt_length is not None:
        p_budget = min(p_budget, max_prompt_length)
    if p_budget + longest > max_length:
        # The prompt gets what the responses leave, but at least half of max_length (when it needs it),
        # and at most max_length - 2 so that every response keeps one token plus its EOS.
        floor = max_prompt_length if max_prompt_length is not None else max_length // 2
        p_budget = min(p_budget, max(max_length - longest, floor), max_length - 2)
    new_prompt = _keep_end(prompt, p_budget, enc.head_ids)
    r_budget = max_length - len(new_prompt)
    new_responses = [_keep_start(r, r_budget, enc.end_id) for r in responses]
    touched = len(new_prompt) != len(prompt) or any(len(a) != len(b) for a, b in zip(new_responses, responses))
    return new_prompt, new_responses, touched


def _fit_masks(masks: tuple, old: tuple, new: tuple, head: list[int]) -> tuple:
    """The masks of (prompt, responses) cut as `_fit` cut their ids (prompt: head + end; response: start + EOS)."""
    (p_mask, r_masks), (p_old, r_old), (p_new, r_new) = masks, old, new
    if len(p_new) < len(p_old):
        keep_head = len(head) if head and p_old[:len(head)] == head and p_new[:len(head)] == head else 0
        tail = len(p_new) - keep_head
        p_mask = p_mask[:keep_head] + (p_mask[-tail:] if tail > 0 else [])
    r_masks = [m if len(n) == len(o) else m[:len(n) - 1] + [1] for m, o, n in zip(r_masks, r_old, r_new)]
    return p_mask, r_masks


def _check_args(max_length: int, max_prompt_length: int | None, on_overlong: str,
                train_on: str = "chosen_only") -> None:
    if train_on not in TRAIN_ON:
        raise ValueError(f"train_on must be one of {', '.join(TRAIN_ON)}, got {train_on!r}")
    if on_overlong not in ON_OVERLONG:
        raise ValueError(f"on_overlong must be one of {', '.join(ON_OVERLONG)}, got {on_overlong!r}")
    if max_length < 4:
        raise ValueError(f"max_length must be at least 4, got {max_length}")
    if max_prompt_length is not None and not 1 <= max_prompt_length <= max_length - 2:
        raise ValueError(f"max_prompt_length must be in [1, max_length - 2], got {max_prompt_length}")


def _overlong(index: int, prompt: list[int], responses: list[list[int]], max_length: int,
              max_prompt_length: int | None) -> str | None:
    """Why a row does not fit as it is (None when it fits)."""
    if max_prompt_length is not None and len(prompt) > max_prompt_length:
        return f"prompt has {len(prompt)} tokens > max_prompt_length {max_prompt_length}"
    total = len(prompt) + max(len(r) for r in responses)
    if total > max_length:
        return f"prompt + response has {total} tokens > max_length {max_length}"
    return None


def _tokenize(rows: Iterable[tuple[list[dict], list[list[dict]], list[dict]]], tokenizer: Any, max_length: int,
              max_prompt_length: int | None, on_overlong: str, encoder: bool | None, split_merged: bool,
              train_on: str = "chosen_only"):
    """Shared loop: yields (index, prompt_ids, response ids list, truncated, masks or None); fills a report."""
    _check_args(max_length, max_prompt_length, on_overlong, train_on)
    enc = _Encoder(tokenizer, encoder, split_merged)
    report = TokenizeReport()
    out = []
    for index, (prompt, responses, tools) in enumerate(rows):
        report.num_rows += 1
        enc.memo.clear()
        # one decision per row, so that every response of it gets masks or none does
        masked = train_on == "all_assistant" or bool(tools) or any(agent.is_agent_conversation(prompt + r)
                                                                    for r in responses)
        split = [enc.split_masked(prompt, r, index, tools, train_on, masked) for r in responses]
        p_ids = split[0][0]
        assert all(s[0] == p_ids and s[2] == split[0][2] for s in split), \
            "one prompt must tokenise (and mask) the same way for every response"
        r_ids = [s[1] for s in split]
        masks = None if split[0][2] is None else (split[0][2], [s[3] for s in split])
        why = _overlong(index, p_ids, r_ids, max_length, max_prompt_length)
        if why is not None and on_overlong == "error":
            raise ValueError(f"row {index}: {why} (set on_overlong='truncate' or 'drop', or raise max_length)")
        if why is not None and on_overlong == "drop":
            report.num_dropped += 1
            report.dropped.append((index, why))
            continue
        new_p, new_r, touched = _fit(p_ids, r_ids, enc, max_length, max_prompt_length)
        if masks is not None and touched:
            masks = _fit_masks(masks, (p_ids, r_ids), (new_p, new_r), enc.head_ids)
        report.num_truncated += int(touched)
        out.append((index, new_p, new_r, touched, masks))
    return out, report


def _conv(value: Any, role: str) -> list[dict]:
    """A plain string becomes one message; a message list is kept."""
    return [{"role": role, "content": value}] if isinstance(value, str) else list(value)


def _pair_fields(rec: Any) -> tuple[list[dict], list[list[dict]], list[dict]]:
    if isinstance(rec, dict):
        rec = record_from_dict(rec)
    if not isinstance(rec, PairRecord) and not hasattr(rec, "chosen"):
        raise ValueError(f"expected a pair record (prompt/chosen/rejected), got {type(rec).__name__}")
    return rec.prompt, [rec.chosen, rec.rejected], list(getattr(rec, "tools", None) or [])


def tokenize_pairs(records: Iterable[Any], tokenizer: Any, max_length: int, max_prompt_length: int | None = None,
                   on_overlong: str = "truncate", encoder: bool | None = None, split_merged: bool = False,
                   train_on: str = "chosen_only") -> tuple[list[PairTokens], TokenizeReport]:
    """Tokenise pair records (PairRecord or raw dicts).

    on_overlong: "truncate" (keep the prompt's end and each response's start + EOS; counted),
    "drop" (listed in report.dropped) or "error" (ValueError naming the row).
    encoder: force/deny the [CLS] prompt [SEP] response [SEP] layout (default: guessed from the tokenizer).
    split_merged: when the tokenizer merges a token across the prompt/response boundary (a response
    starting with whitespace), tokenise the response text apart instead of raising.
    train_on: "chosen_only" or "all_assistant" (module docstring); agent rows get masks either way.
    """
    rows, report = _tokenize((_pair_fields(r) for r in records), tokenizer, max_length, max_prompt_length,
                             on_overlong, encoder, split_merged, train_on)
    return [PairTokens(p, rs[0], rs[1], t, i, *((m[0], m[1][0], m[1][1]) if m else ()))
            for i, p, rs, t, m in rows], report


def tokenize_completions(prompt_convs: Sequence[list[dict]], completion_convs: Sequence[list[dict]],
                         tokenizer: Any, max_length: int, max_prompt_length: int | None = None,
                         on_overlong: str = "truncate", encoder: bool | None = None,
                         split_merged: bool = False, train_on: str = "chosen_only",
                         tools: Sequence[list[dict]] | None = None) -> tuple[list[SequenceTokens], TokenizeReport]:
    """Tokenise (prompt, completion) conversations, one response each (SFT, KTO, scoring); `tools[i]` are the
    tool definitions of row i (agent rows)."""
    if len(prompt_convs) != len(completion_convs):
        raise ValueError(f"{len(prompt_convs)} prompts for {len(completion_convs)} completions")
    tools = list(tools) if tools is not None else [[]] * len(prompt_convs)
    rows, report = _tokenize(((_conv(p, "user"), [_conv(c, "assistant")], list(ts or []))
                              for p, c, ts in zip(prompt_convs, completion_convs, tools)),
                             tokenizer, max_length, max_prompt_length, on_overlong, encoder, split_merged, train_on)
    return [SequenceTokens(p, rs[0], t, i, *((m[0], m[1][0]) if m else ())) for i, p, rs, t, m in rows], report


def tokenize_prompts(prompt_convs: Sequence[list[dict]], tokenizer: Any, max_prompt_length: int,
                     encoder: bool | None = None,
                     tools: Sequence[list[dict]] | None = None) -> tuple[list[list[int]], TokenizeReport]:
    """Token ids of each prompt ready for generation (the chat template with the assistant turn opened),
    at most max_prompt_length tokens: a longer prompt keeps its end (the question and the open turn) and
    is counted as truncated. The rollout samples right after these ids, so prompt + completion is a
    sequence the training forward sees exactly."""
    enc = _Encoder(tokenizer, encoder)
    report = TokenizeReport(num_rows=len(prompt_convs))
    out = []
    for i, conv in enumerate(prompt_convs):
        enc.memo.clear()
        row_tools = list(tools[i] or []) if tools is not None else []
        if enc.template:
            ids = enc._one_bos(enc.ids(enc.render(list(conv), row_tools, gen=True)))
        else:  # as _Encoder.split renders a prompt without a template
            ids = enc._one_bos(enc.ids(enc._plain(list(conv), row_tools) + "\n\n"))
        if len(ids) > max_prompt_length:
            report.num_truncated += 1
            ids = _keep_end(ids, max_prompt_length, enc.head_ids)
        out.append(ids)
    return out, report
