"""The alignment tax on constructed inputs with known values, and on a tiny model (model == baseline: no tax)."""

import math

import pytest
import torch

from preftune.eval.tax import (
    alignment_tax,
    arithmetic_accuracy,
    arithmetic_tasks,
    distinct_n,
    diversity,
    mean_token_entropy,
    perplexity,
    reference_text,
    self_bleu,
)
from preftune.world.agent import AgentTask


def test_distinct_n_by_hand():
    assert distinct_n(["a a b"], 1) == pytest.approx(2 / 3)
    assert distinct_n(["a a b"], 2) == 1.0  # (a a), (a b)
    assert distinct_n(["a b", "a b"], 1) == 0.5 and distinct_n(["a b", "a b"], 2) == 0.5
    assert distinct_n(["x"], 2) == 0.0


def test_self_bleu_limits_and_a_hand_value():
    same = "the cat sat on the mat"
    assert self_bleu([same, same, same]) == pytest.approx(1.0)
    # disjoint vocabularies: no unigram matches, and BLEU is 0 (nltk returns 0 then, smoothing or not)
    assert self_bleu(["a b c d", "e f g h"]) == 0.0
    # "a b" vs "a c": order 2 (the shortest length): p1 = 1/2, p2 = 0.1 / 1 (smoothed), BP = 1
    assert self_bleu(["a b", "a c"]) == pytest.approx(math.sqrt(0.5 * 0.1))
    with pytest.raises(ValueError, match="at least 2"):
        self_bleu(["only one"])


def test_diversity_averages_over_prompts():
    d = diversity([["a a b", "a a b"], ["x y z w", "p q r s"]])
    assert d["distinct_1"] == pytest.approx((2 / 6 + 1.0) / 2)


def test_mean_token_entropy():
    V = 8
    uniform = torch.zeros(2, 3, V)
    assert mean_token_entropy(uniform, torch.ones(2, 3, dtype=torch.bool)) == pytest.approx(math.log(V))
    peaked = torch.full((1, 2, V), -1e4)
    peaked[..., 0] = 0.0
    mixed = torch.cat([uniform[:1, :2], peaked], 0)  # row 0 uniform, row 1 one-hot
    mask = torch.tensor([[True, False], [True, True]])
    assert mean_token_entropy(mixed, mask) == pytest.approx(math.log(V) / 3, abs=1e-5)


def test_arithmetic_accuracy():
    tasks = [AgentTask("arithmetic", "What is 2 * 3 + 1?", [], "7", True),
             AgentTask("arithmetic", "What is 10 * 10 - 1?", [], "99", True)]
    assert arithmetic_accuracy(tasks, ["It is 7.", "About 100."]) == 0.5
    generated = arithmetic_tasks(5, seed=1)
    assert len(generated) == 5 and all(t.category == "arithmetic" for t in generated)


class _Uniform(torch.nn.Module):
    """A language model whose every next-token distribution is uniform: perplexity = V exactly."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, **kw):
        return type("Out", (), {"logits": torch.zeros(*input_ids.shape, self.vocab) + 0 * self.w})()


def test_perplexity_of_a_uniform_model_is_the_vocabulary_size():
    from preftune.models import load_tokenizer

    tok = load_tokenizer("tiny-llama")
    V = len(tok)
    assert perplexity(_Uniform(V), tok, reference_text(), max_length=64) == pytest.approx(V, rel=1e-5)
    assert len(reference_text().split()) > 200


def test_alignment_tax_on_a_tiny_model_is_zero_against_itself():
    from preftune.models import load_policy, load_tokenizer

    pair = (load_policy("tiny-llama").eval(), load_tokenizer("tiny-llama"))
    same = (pair[0], pair[1])
    tax = alignment_tax(pair, same, ["Say hi.", "Name a colour."], num_samples=2, max_new_tokens=6,
                        num_arithmetic=2, seed=0)
    assert set(tax["model"]) == {"distinct_1", "distinct_2", "self_bleu", "mean_token_entropy", "arithmetic_accuracy",
                                 "reference_perplexity"}
    assert all(v == pytest.approx(0.0) for v in tax["delta"].values())  # same weights, same seeds
    assert 0 < tax["model"]["mean_token_entropy"] <= math.log(len(pair[1])) + 1e-6
    assert tax["model"]["reference_perplexity"] > 1.0
