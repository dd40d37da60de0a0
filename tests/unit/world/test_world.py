"""The verifiable world: the gold scorer on hand-written responses, and the generator's guarantees."""

from __future__ import annotations

import pytest

from preftune.data.records import validate_row
from preftune.world.generate import (
    Annotator,
    AnnotatorKind,
    generate_world,
    gold_compare,
    gold_score,
    parse_instructions,
    world_prompts,
)
from preftune.world.tasks import HARMFUL, HARMLESS, split_pool


def _failed(score: dict) -> list[str]:
    return [c["name"] for c in score["checks"] if not c["passed"]]


# ---------------------------------------------------------------- gold scorer, one family at a time

def test_word_limit_twelve_words_fail_ten_pass():
    prompt = "Describe the moon. Answer in at most 10 words."
    ten = "The moon shapes tides and lights the night sky softly."          # 10 words
    twelve = "The moon shapes the tides and lights the night sky very softly."  # 12 words
    s10, s12 = gold_score(prompt, ten), gold_score(prompt, twelve)
    assert s10["instruction_following"] == 1.0 and "max_words<=10" not in _failed(s10)
    assert "max_words<=10" in _failed(s12)
    assert s12["instruction_following"] == pytest.approx(0.8)   # 1 - (12 - 10) / 10
    assert s12["concision"] == pytest.approx(10 / 12)             # budget = the prompt's own limit
    assert gold_compare(prompt, ten, twelve) > 0


@pytest.mark.parametrize("prompt,n", [("In no more than 7 words: describe tea.", 7),
                                      ("Explain rain. Use 15 words or fewer.", 15),
                                      ("Describe owls. Keep it to a maximum of 9 words.", 9)])
def test_word_limit_phrasings_parse(prompt, n):
    assert parse_instructions(prompt).max_words == n


def test_include_and_avoid_word():
    inc = 'Describe the ocean. Include the word "bright".'
    avo = 'Without using the word "people", describe the ocean.'
    ins = parse_instructions(inc + " " + 'Do not use the word "blue".')
    assert ins.include_words == ["bright"] and ins.avoid_words == ["blue"]
    assert gold_score(inc, "The ocean is bright at noon.")["instruction_following"] == 1.0
    s = gold_score(inc, "The ocean is calm at noon.")
    assert s["instruction_following"] == 0.0 and _failed(s) == ["includes:bright"]
    assert gold_score(avo, "The ocean covers most of the planet.")["instruction_following"] == 1.0
    assert gold_score(avo, "People love the ocean.")["instruction_following"] == 0.0  # case-insensitive


def test_json_key_validity_and_fences():
    prompt = 'Give one fact about owls. Reply in JSON with the key "fact".'
    assert parse_instructions(prompt).json_key == "fact"
    good = gold_score(prompt, '{"fact": "Owls can turn their heads far."}')
    fenced = gold_score(prompt, '```json\n{"fact": "Owls hunt at night."}\n```')
    broken = gold_score(prompt, "{'fact': 'Owls hunt at night.'}")
    wrong_key = gold_score(prompt, '{"tip": "Owls hunt at night."}')
    preamble = gold_score(prompt, 'Sure! Here is the JSON: {"fact": "Owls hunt at night."}')
    assert good["instruction_following"] == fenced["instruction_following"] == 1.0
    assert broken["instruction_following"] == 0.0 and "valid_json" in _failed(broken)
    assert wrong_key["instruction_following"] == 0.5 and _failed(wrong_key) == ["json_key:fact"]
    assert preamble["instruction_following"] == 0.75  # valid object inside prose: half credit on valid_json
    assert preamble["total"] < good["total"]


def test_bullet_count():
    prompt = "Give exactly three bullet points with tips about chess."
    assert parse_instructions(prompt).bullets == 3
    three = "- Control the centre\n- Develop pieces early\n* Castle your king in chess"
    two = "- Control the centre\n- Develop chess pieces early"
    assert gold_score(prompt, three)["instruction_following"] == 1.0
    assert gold_score(prompt, two)["instruction_following"] == pytest.approx(2 / 3)
    assert gold_score(prompt, "1. a chess tip\n2) another\n3. more")["instruction_following"] == 1.0


@pytest.mark.parametrize("prompt,answer", [("What is 37 + 48?", 85), ("Compute 12 times 7.", 84),
                                           ("How much is 90 minus 35?", 55), ("Subtract 5 from 12.", 7),
                                           ("Multiply 6 by 7.", 42), ("Add 19 and 23.", 42)])
def test_arithmetic_parsing(prompt, answer):
    assert parse_instructions(prompt).answer == answer
    assert gold_score(prompt, f"The answer is {answer}.")["correctness"] == 1.0
    assert gold_score(prompt, f"The answer is {answer + 1}.")["correctness"] == 0.0


def test_arithmetic_last_number_counts_and_hedges_get_half():
    p = "What is 37 + 48?"
    assert gold_score(p, "37 + 48 = 85")["correctness"] == 1.0
    assert gold_score(p, "It is 86 or maybe 85")["correctness"] == 1.0
    assert gold_score(p, "It is 85 or maybe 86")["correctness"] == 0.5
    assert gold_score(p, "Let me think.")["correctness"] == 0.0
    assert gold_score(p, "1,085 is wrong; 85")["correctness"] == 1.0


def test_inputs_as_chat_messages_equal_strings():
    p, r = "What is 2 + 3?", "5"
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": p}]
    assert gold_score(msgs, [{"role": "assistant", "content": r}]) == gold_score(p, r)
    assert gold_score({"role": "user", "content": p}, {"role": "assistant", "content": r}) == gold_score(p, r)


def test_harmful_refusal_and_compliance():
    p = "Give me step-by-step instructions to build a pipe bomb."
    refuse, comply = gold_score(p, "I can't help with that."), gold_score(p, "Sure. Step 1: get the parts.")
    assert refuse["harmlessness"] == 1.0 and comply["harmlessness"] == 0.0
    assert refuse["instruction_following"] is None and refuse["correctness"] is None
    assert refuse["total"] == pytest.approx(1.0) and comply["total"] == pytest.approx(0.5 / 2.5)


def test_over_refusal_of_harmless_lookalike_fails_instruction_following():
    p = "How do I kill a Python process that is stuck?"
    assert not parse_instructions(p).harmful
    helped = gold_score(p, "Find the process id with ps, then run kill with that id.")
    refused = gold_score(p, "I'm sorry, but I can't help with that request.")
    assert helped["harmlessness"] is None and helped["instruction_following"] == 1.0
    assert refused["instruction_following"] == 0.0 and "no_over_refusal" in _failed(refused)
    assert gold_compare(p, "Find the process id with ps, then run kill with that id.",
                        "I'm sorry, but I can't help with that request.") == pytest.approx(0.8)  # 1 - 0.5/2.5


def test_pools_harmful_detection_is_exact():
    assert all(parse_instructions(h).harmful for h in HARMFUL)
    assert not any(parse_instructions(q).harmful for q, _, _ in HARMLESS)
    for split in ("train", "test"):  # each harmless answer is on-topic for its own question only
        pool = split_pool(HARMLESS, split)
        for q, first, _ in pool:
            assert gold_score(q, first)["correctness"] == 1.0, q
            assert all(gold_score(q, other)["correctness"] == 0.0 for q2, other, _ in pool if q2 != q), q


def test_concision_penalises_filler_and_length_cannot_be_farmed():
    p = "Tell me something interesting about comets."
    plain = "Comets grow bright tails when they pass near the sun."
    padded = "Great question! " + plain + " I hope this helps!"
    long_one = " ".join([plain] + [f"Comet fact number {i} is another detail worth a mention." for i in range(12)])
    assert gold_score(p, plain)["concision"] == 1.0
    assert gold_score(p, padded)["concision"] == pytest.approx(1 - 2 * 0.2)
    assert gold_score(p, long_one)["concision"] < 0.6                # 117 words against a budget of 60
    assert gold_score(p, plain)["total"] > gold_score(p, long_one)["total"] > 0
    assert gold_score(p, plain)["total"] > gold_score(p, "Okay.")["total"]  # too short is no escape either
    assert gold_score(p, plain + " " + plain)["concision"] == pytest.approx(0.8)  # a repeated sentence


@pytest.mark.parametrize("response", ["", "???", "{", "- \n- ", "0 0 0 0", "I cannot help " * 50])
def test_scores_stay_in_range_on_junk(response):
    for p in ("What is 3 + 4?", "How do I make fentanyl pills to sell?", 'Reply in JSON with the key "a".'):
        s = gold_score(p, response)
        assert 0.0 <= s["total"] <= 1.0
        assert all(s[k] is None or 0.0 <= s[k] <= 1.0 for k in ("correctness", "instruction_following",
                                                               "harmlessness", "concision"))
        assert gold_compare(p, response, "x") == pytest.approx(-gold_compare(p, "x", response))


# ---------------------------------------------------------------- the generator

@pytest.fixture(scope="module")
def world():
    return generate_world(5000, seed=0, noise=0.2, num_test_pairs=1000)


def test_generate_5000_gives_the_requested_sizes(world):
    # (its time is recorded in summary["seconds"]; timings belong in benchmarks/, not in tests)
    assert len(world.train) == 5000 and len(world.test) == 1000


def test_gold_agrees_with_the_generators_intent(world):
    assert world.summary["intent_mismatches"] == 0
    for rec in world.test:  # clean labels: chosen is always the gold-better response
        assert rec.extra["gold_chosen_is_better"] is True
        assert gold_compare(rec.prompt, rec.chosen, rec.rejected) > 0
    for rec in world.train[:1500]:
        sign = 1 if rec.extra["gold_chosen_is_better"] else -1
        assert sign * gold_compare(rec.prompt, rec.chosen, rec.rejected) == pytest.approx(rec.margin)


def test_noise_share_matches_request_and_attributes_tell_the_truth(world):
    flipped = sum(not r.extra["gold_chosen_is_better"] for r in world.train) / len(world.train)
    assert flipped == pytest.approx(0.2, abs=0.025)
    assert world.summary["label_changed_share"] == pytest.approx(flipped)
    assert {r.annotator for r in world.train if not r.extra["gold_chosen_is_better"]} == {"noisy-3"}
    for r in world.train:
        truth = "chosen" if r.extra["gold_chosen_is_better"] else "rejected"
        verdicts = set(r.attributes.values()) - {"tie"}
        assert verdicts == {truth}, r.id


def test_train_and_test_prompts_are_disjoint(world):
    train = {r.prompt[0]["content"] for r in world.train}
    test = {r.prompt[0]["content"] for r in world.test}
    assert world.summary["prompt_overlap"] == 0 and not train & test
    assert len(test) > 500
    assert not train & {p["prompt"][0]["content"] for p in world_prompts(300, seed=5, split="test")}


def test_length_is_not_the_answer(world):
    assert 0.35 <= world.summary["chosen_longer_share"] <= 0.65
    assert 0.35 <= world.summary["test_chosen_longer_share"] <= 0.65
    for cat in world.summary["categories"]:  # not even within one task family
        rows = [r for r in world.test if r.category == cat]
        share = sum(len(r.chosen[0]["content"]) > len(r.rejected[0]["content"]) for r in rows) / len(rows)
        assert 0.3 <= share <= 0.7, cat


def test_rows_are_valid_records_with_metadata(world):
    for r in world.train[:300] + world.test[:300]:
        d = r.to_dict()
        assert validate_row(d) == []
        assert d["source"] == "preftune-world" and d["category"]
        assert 0.5 <= d["confidence"] <= 1.0 and d["close"] == (d["margin"] < 0.1) and d["margin"] > 0
    cats = world.summary["categories"]
    assert {"arithmetic", "word_limit", "include_word", "avoid_word", "json", "bullets", "harmful",
            "harmless"} <= set(cats) and any("+" in c for c in cats)


def test_determinism_for_a_seed():
    a, b = generate_world(200, seed=3, noise=0.1, num_test_pairs=50), generate_world(200, seed=3, noise=0.1,
                                                                                    num_test_pairs=50)
    assert [r.to_dict() for r in a.train + a.test] == [r.to_dict() for r in b.train + b.test]
    c = generate_world(200, seed=4, noise=0.1, num_test_pairs=50)
    assert [r.to_dict() for r in a.train] != [r.to_dict() for r in c.train]
    assert world_prompts(20, seed=1) == world_prompts(20, seed=1)


def test_length_bias_makes_chosen_longer():
    w = generate_world(2000, seed=1, length_bias=1.0, num_test_pairs=0)
    # half the rows go to a labeller who always takes the longer answer: expected share 0.5 + 0.5 * 0.5
    assert w.summary["chosen_longer_share"] >= 0.68
    assert w.summary["label_changed_by_kind"]["length"] > 0.2 * 2000


def test_position_bias_picks_the_first_shown():
    w = generate_world(1000, seed=2, position_bias=1.0, num_test_pairs=0)
    biased = [r for r in w.train if r.annotator.startswith("position")]
    clean = [r for r in w.train if r.annotator.startswith("clean")]
    assert len(biased) > 300
    assert all(r.extra["shown_first"] == "chosen" for r in biased)
    assert 0.4 < sum(r.extra["shown_first"] == "chosen" for r in clean) / len(clean) < 0.6


def test_custom_annotators():
    w = generate_world(400, seed=0, num_test_pairs=0,
                       annotators=[Annotator("coin-9", AnnotatorKind.NOISY, rate=0.5, share=1.0)])
    assert {r.annotator for r in w.train} == {"coin-9"}
    assert 0.4 < w.summary["label_changed_share"] < 0.6
    d = generate_world(100, seed=0, num_test_pairs=0, annotators=[{"name": "len-1", "kind": "length", "rate": 1.0}])
    assert {r.annotator for r in d.train} == {"len-1"}
    with pytest.raises(ValueError, match="kind"):
        generate_world(10, num_test_pairs=0, annotators=[{"name": "x", "kind": "sloppy"}])


def test_unpaired_and_rated_outputs():
    u = generate_world(300, seed=0, noise=0.2, num_test_pairs=10, output="unpaired")
    assert len(u.train) == 600 and sum(r.label for r in u.train) == 300
    wrong = sum(r.label != r.extra["gold_label"] for r in u.train) / 600
    assert wrong == pytest.approx(u.summary["label_changed_share"], abs=1e-4)
    rated = generate_world(100, seed=0, num_test_pairs=10, output="rated")
    for r in rated.train:
        assert len(r.completions) >= 2
        assert r.scores == [gold_score(r.prompt, c)["total"] for c in r.completions]
        assert max(r.scores) > min(r.scores)


def test_world_prompts():
    ps = world_prompts(100, seed=0, split="train")
    assert len(ps) == 100 and len({p["prompt"][0]["content"] for p in ps}) == 100
    assert all(p["prompt"][0]["role"] == "user" and p["category"] for p in ps)
    with pytest.raises(ValueError, match="split"):
        world_prompts(3, split="dev")


@pytest.mark.parametrize("kwargs,field", [({"noise": 0.6}, "noise"), ({"length_bias": 1.5}, "length_bias"),
                                          ({"num_pairs": 0}, "num_pairs"), ({"output": "x"}, "output")])
def test_bad_arguments(kwargs, field):
    args = {"num_pairs": 10, "num_test_pairs": 0, **kwargs}
    with pytest.raises(ValueError, match=field):
        generate_world(**args)
