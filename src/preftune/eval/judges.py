"""Judges: who decides whether the model's response beats the baseline's.

A judge's `compare(prompts, responses_a, responses_b)` returns one verdict per prompt: 1.0 = a wins,
0.5 = tie, 0.0 = b wins. Scoring judges (`gold`, `rm:RUN`) also have `score(prompts, responses) ->
(N,) array`, used by best-of-N. Spec strings select one:

    gold        the synthetic world's scorer, preftune.world.gold_score(prompt, response)["total"]
    rm:RUN      a trained reward model (or ensemble) via preftune.models.scoring.load_scorer(RUN)
    llm:MODEL   a local causal LM asked for a pairwise verdict with a fixed prompt
    http:URL    any OpenAI-compatible chat endpoint (POST URL/chat/completions), key from an env var

LLM judges are asked twice with the positions swapped; verdicts that disagree count as ties and their
share is kept in `info["position_bias_rate"]` (position bias: Zheng et al. 2023, MT-Bench,
arXiv 2306.05685).
"""

from __future__ import annotations

import enum
import http.client
import json
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from preftune.data.records import render_text

Prompt = str | list  # a string or a chat conversation

JUDGE_PROMPT = (
    "You are comparing two responses to the same user request. Decide which response is better: "
    "more helpful, correct, and faithful to every instruction in the request.\n\n"
    "[Request]\n{prompt}\n\n[Response A]\n{first}\n\n[Response B]\n{second}\n\n"
    "Answer with a single letter: A if Response A is better, B if Response B is better, "
    "or T if they are equally good.")
# Capital letters only: a lower-case "a" is an article, not a verdict.
_VERDICT_RE = re.compile(r"\b(A|B|T|[Tt]ie|TIE)\b")


class Judge(Protocol):
    name: str
    info: dict

    def compare(self, prompts: Sequence[Prompt], responses_a: Sequence[str],
                responses_b: Sequence[str]) -> list[float]: ...


def prompt_text(prompt: Prompt) -> str:
    return prompt if isinstance(prompt, str) else render_text(prompt)


def verdicts_from_scores(scores_a: np.ndarray, scores_b: np.ndarray, tie_eps: float = 1e-9) -> list[float]:
    """(N,), (N,) scores -> verdicts: 1.0 where a scores higher, 0.0 where lower, 0.5 within tie_eps."""
    d = np.asarray(scores_a, dtype=np.float64) - np.asarray(scores_b, dtype=np.float64)
    return [0.5 if abs(x) <= tie_eps else (1.0 if x > 0 else 0.0) for x in d]


def combine_swapped(first: Sequence[str], second: Sequence[str]) -> tuple[list[float], float]:
    """Verdicts asked as (a, b) in `first` and as (b, a) in `second`, each "A" | "B" | "T".

    Consistent pairs give a verdict for a: (A, B) -> 1, (B, A) -> 0, (T, T) -> 0.5. Anything else means
    the answer followed the position, not the content: a tie, counted in the returned rate.
    """
    if len(first) != len(second):
        raise ValueError(f"{len(first)} verdicts against {len(second)} swapped verdicts")
    outcomes, inconsistent = [], 0
    for v1, v2 in zip(first, second):
        if (v1, v2) == ("A", "B"):
            outcomes.append(1.0)
        elif (v1, v2) == ("B", "A"):
            outcomes.append(0.0)
        else:
            outcomes.append(0.5)
            inconsistent += (v1, v2) != ("T", "T")
    return outcomes, (inconsistent / len(first) if first else 0.0)


def parse_verdict(text: str) -> str:
    """The first A / B / T(ie) token of a judge's answer; an answer without one is a tie ("T")."""
    m = _VERDICT_RE.search(text or "")
    if not m:
        return "T"
    v = m.group(1).upper()
    return "T" if v in ("T", "TIE") else v


def gold_score_fn() -> Callable[[Prompt, str], dict]:
    """The world's `gold_score(prompt, response) -> {"total", ...}`, imported late."""
    from preftune.world.gold import gold_score

    return gold_score


class _ScoreJudge:
    """A judge that scores each response on its own and compares the scores."""
    name = "score"

    def __init__(self) -> None:
        self.info: dict = {}
        self.last_std: np.ndarray | None = None  # (N,) ensemble std of the last score() call, if any
        # the scores (and stds) behind the last compare(), for length-bias and uncertainty guards
        self.last_compare: dict = {}

    def score(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> np.ndarray:
        raise NotImplementedError

    def compare(self, prompts, responses_a, responses_b) -> list[float]:
        scores_a = self.score(prompts, responses_a)
        std_a = self.last_std
        scores_b = self.score(prompts, responses_b)
        self.last_compare = {"scores_a": scores_a, "scores_b": scores_b,
                             "std_a": std_a, "std_b": self.last_std}
        return verdicts_from_scores(scores_a, scores_b)


class GoldJudge(_ScoreJudge):
    """The synthetic world's exact scorer (total of its per-attribute scores)."""
    name = "gold"

    def score(self, prompts, responses) -> np.ndarray:
        gold_score = gold_score_fn()
        return np.asarray([float(gold_score(prompt_text(p), r)["total"]) for p, r in zip(prompts, responses)])


class RewardModelJudge(_ScoreJudge):
    """A trained reward model (or ensemble) run folder; keeps the last ensemble std in `last_std`."""

    def __init__(self, run_dir: str) -> None:
        super().__init__()
        # a path that is not there is a typo; a bare name may be a model alias (load_scorer decides)
        if os.sep in run_dir and not os.path.exists(run_dir):
            raise ValueError(f"reward model run {run_dir} does not exist")
        try:
            from preftune.models.scoring import load_scorer
        except ImportError as e:
            raise ValueError(f"the rm: judge needs preftune.models.scoring.load_scorer ({e})") from e
        self.name = f"rm:{run_dir}"
        self.scorer = load_scorer(run_dir)

    def score(self, prompts, responses) -> np.ndarray:
        out = self.scorer.score(list(prompts), list(responses))
        self.last_std = np.asarray(out["std"]) if out.get("std") is not None else None
        return np.asarray(out["reward"], dtype=np.float64)


class _SwapJudge:
    """Pairwise judge asked twice per pair, positions swapped; `ask` returns "A" | "B" | "T" per item."""
    name = "pairwise"

    def __init__(self) -> None:
        self.info: dict = {"position_bias_rate": None}
        self.template = JUDGE_PROMPT  # {prompt}, {first}, {second}; `label ai` asks per principle with its own

    def ask(self, prompts: list[str], firsts: list[str], seconds: list[str]) -> list[str]:
        raise NotImplementedError

    def compare(self, prompts, responses_a, responses_b) -> list[float]:
        texts = [prompt_text(p) for p in prompts]
        first = self.ask(texts, list(responses_a), list(responses_b))
        second = self.ask(texts, list(responses_b), list(responses_a))
        outcomes, rate = combine_swapped(first, second)
        self.info["position_bias_rate"] = rate
        return outcomes


class LocalLLMJudge(_SwapJudge):
    """A local causal LM; its verdict is whichever of the tokens "A" / "B" it finds likelier next."""

    def __init__(self, model_name: str) -> None:
        super().__init__()
        from preftune.eval.generate import load_causal_lm

        self.name = f"llm:{model_name}"
        self.model, self.tok = load_causal_lm(model_name)
        self.ids = [self.tok.encode(s, add_special_tokens=False)[0] for s in ("A", "B")]

    def ask(self, prompts, firsts, seconds) -> list[str]:
        import torch

        from preftune.eval.generate import render_prompt

        out = []
        old_side = self.tok.padding_side
        self.tok.padding_side = "left"  # the next-token logits are then all at the last column
        try:
            for i in range(0, len(prompts), 8):
                batch = [render_prompt(self.tok, self.template.format(prompt=p, first=f, second=s))
                         for p, f, s in zip(prompts[i:i + 8], firsts[i:i + 8], seconds[i:i + 8])]
                enc = self.tok(batch, return_tensors="pt", padding=True, add_special_tokens=False)
                pos = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)
                with torch.no_grad():
                    logits = self.model(**enc, position_ids=pos).logits[:, -1]  # (B, V)
                pick = logits[:, self.ids]  # (B, 2)
                out.extend("A" if a > b else ("B" if b > a else "T") for a, b in pick.tolist())
        finally:
            self.tok.padding_side = old_side
        return out


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Never follow a redirect: urllib would resend the Authorization header to whatever origin the
    Location names (and turn the POST into a GET whose answer is not a verdict)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        raise urllib.error.HTTPError(req.full_url, code, f"redirect to {newurl} refused (the judge must answer "
                                     "the request itself; give the final URL)", headers, fp)


class _Transient(Exception):
    """A failure worth retrying: HTTP 5xx / 429, a reset or refused connection, a timeout."""


class HTTPJudge(_SwapJudge):
    """An OpenAI-compatible chat endpoint (vLLM, llama.cpp server, ...), called with urllib (the
    standard library: no extra dependency for one POST, and full control over redirects and reads).

    Hardened (issue 16): redirects are refused, so the API key never leaves the endpoint's origin;
    a 5xx / 429 / reset connection / timeout is retried `retries` times with exponential backoff;
    each request has a deadline (`timeout`, also for a server that trickles bytes) and the whole
    judging step one more (`deadline`); an answer over `max_bytes` is refused unread; every error
    names the endpoint and the status."""

    def __init__(self, url: str, model: str = "default", key_env: str = "OPENAI_API_KEY",
                 timeout: float = 60.0, retries: int = 3, backoff: float = 1.0, deadline: float | None = None,
                 max_bytes: int = 1_000_000) -> None:
        super().__init__()
        self.name = url  # a bare URL is itself a judge spec (not "http:http://...")
        base = url.rstrip("/")
        self.endpoint = base if base.endswith("/chat/completions") else base + "/chat/completions"
        for name, v in (("timeout", timeout), ("backoff", backoff), ("max_bytes", max_bytes)):
            if not v > 0:
                raise ValueError(f"http judge: {name} must be > 0, got {v}")
        if retries < 0 or (deadline is not None and not deadline > 0):
            raise ValueError(f"http judge: need retries >= 0 and deadline > 0, got {retries}, {deadline}")
        self.model, self.key_env, self.timeout = model, key_env, timeout
        self.retries, self.backoff, self.deadline, self.max_bytes = retries, backoff, deadline, max_bytes
        self._opener = urllib.request.build_opener(_NoRedirect)
        self._t0: float | None = None

    def _left(self) -> float:
        """Seconds left of the overall deadline (inf without one)."""
        if self.deadline is None or self._t0 is None:
            return float("inf")
        left = self.deadline - (time.monotonic() - self._t0)
        if left <= 0:
            raise ValueError(f"judge endpoint {self.endpoint}: the judging deadline of {self.deadline:g} s "
                             "(--judge-deadline) passed")
        return left

    def _read(self, resp, t_end: float) -> bytes:
        length = resp.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            raise ValueError(f"judge endpoint {self.endpoint}: answer of {int(length):,} bytes is over the "
                             f"limit of {self.max_bytes:,} bytes (--judge-max-bytes)")
        chunks, size = [], 0
        while True:
            if time.monotonic() > t_end:  # a trickling server passes every per-read socket timeout
                raise _Transient(f"no complete answer within {self.timeout:g} s")
            chunk = resp.read1(65536)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > self.max_bytes:
                raise ValueError(f"judge endpoint {self.endpoint}: answer over the limit of "
                                 f"{self.max_bytes:,} bytes (--judge-max-bytes)")
            chunks.append(chunk)

    def _once(self, req) -> bytes:
        budget = min(self.timeout, self._left())
        try:
            with self._opener.open(req, timeout=budget) as resp:
                if resp.status != 200:
                    raise ValueError(f"judge endpoint {self.endpoint} answered HTTP {resp.status}, not 200")
                return self._read(resp, time.monotonic() + budget)
        except urllib.error.HTTPError as e:
            if e.code >= 500 or e.code == 429:
                raise _Transient(f"HTTP {e.code} {e.reason}") from e
            raise ValueError(f"judge endpoint {self.endpoint} answered HTTP {e.code}: {e.reason}") from None
        except (urllib.error.URLError, ConnectionError, TimeoutError, http.client.HTTPException, OSError) as e:
            reason = getattr(e, "reason", None) or e
            raise _Transient(f"{type(e).__name__}: {reason}") from e

    def _post(self, content: str) -> str:
        body = json.dumps({"model": self.model, "temperature": 0, "max_tokens": 8,
                           "messages": [{"role": "user", "content": content}]}).encode()
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        req = urllib.request.Request(self.endpoint, data=body, headers=headers, method="POST")
        for attempt in range(self.retries + 1):
            try:
                raw = self._once(req)
                break
            except _Transient as e:
                if attempt == self.retries:
                    raise ValueError(f"cannot reach judge endpoint {self.endpoint}: {e} "
                                     f"(after {self.retries + 1} attempts)") from None
                time.sleep(min(self.backoff * 2 ** attempt, max(self._left() - 1e-3, 0)))
        try:
            data = json.loads(raw.decode())
            return data["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise ValueError(f"judge endpoint {self.endpoint}: not an OpenAI chat response: "
                             f"{raw[:200]!r}") from None

    def compare(self, prompts, responses_a, responses_b) -> list[float]:
        self._t0 = time.monotonic()
        return super().compare(prompts, responses_a, responses_b)

    def ask(self, prompts, firsts, seconds) -> list[str]:
        from tqdm.auto import tqdm

        out = []
        for p, f, s in tqdm(list(zip(prompts, firsts, seconds)), desc=f"judge {self.endpoint}", unit="req",
                            leave=False):
            out.append(parse_verdict(self._post(self.template.format(prompt=p, first=f, second=s))))
        return out


class JudgeKind(enum.Enum):
    GOLD = "gold"
    RM = "rm"
    LLM = "llm"
    HTTP = "http"

    @property
    def build(self) -> Callable[..., Judge]:
        return {JudgeKind.GOLD: lambda arg, **kw: GoldJudge(),
                JudgeKind.RM: lambda arg, **kw: RewardModelJudge(arg),
                JudgeKind.LLM: lambda arg, **kw: LocalLLMJudge(arg),
                JudgeKind.HTTP: lambda arg, **kw: HTTPJudge(arg, **kw)}[self]


def parse_judge_spec(spec: str) -> tuple[JudgeKind, str]:
    """"gold" | "rm:RUN" | "llm:MODEL" | "http:URL" (a bare http(s):// URL also works) -> (kind, argument)."""
    if spec.startswith(("http://", "https://")):
        return JudgeKind.HTTP, spec
    kind, _, arg = spec.partition(":")
    try:
        k = JudgeKind(kind)
    except ValueError:
        raise ValueError(f"unknown judge {spec!r}: use gold, rm:RUN, llm:MODEL or http:URL") from None
    if k is JudgeKind.GOLD and arg:
        raise ValueError(f"judge {spec!r}: gold takes no argument")
    if k is not JudgeKind.GOLD and not arg:
        raise ValueError(f"judge {spec!r}: {k.value} needs an argument, e.g. {k.value}:PATH")
    return k, arg


def make_judge(spec: str, *, judge_model: str = "default", key_env: str = "OPENAI_API_KEY",
               **http_options) -> Judge:
    """Build the judge a spec names (see the module docstring). http_options (timeout, retries,
    backoff, deadline, max_bytes) go to an http: judge."""
    kind, arg = parse_judge_spec(spec)
    if kind is JudgeKind.HTTP:
        return kind.build(arg, model=judge_model, key_env=key_env, **http_options)
    return kind.build(arg)


def make_scorer(spec: str) -> _ScoreJudge:
    """A judge that scores responses one by one (gold or rm:RUN), as best-of-N needs."""
    kind, arg = parse_judge_spec(spec)
    if kind not in (JudgeKind.GOLD, JudgeKind.RM):
        raise ValueError(f"scorer {spec!r}: best-of-N needs a scorer, gold or rm:RUN")
    return kind.build(arg)  # type: ignore[return-value]
