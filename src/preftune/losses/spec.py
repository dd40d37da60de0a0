"""The names of the direct-preference losses and their mixes: what each needs and accepts.

Pure Python (no torch), so that configs can validate a loss spec when they load, before any
model or tensor exists. The losses themselves are in preference.py and unpaired.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class LossType(Enum):
    SIGMOID = "sigmoid"            # DPO; with label_smoothing > 0 it is cDPO
    IPO = "ipo"
    HINGE = "hinge"                # SLiC-HF / RSO
    ROBUST = "robust"              # robust DPO, label_smoothing = flip rate ε
    SIGMOID_NORM = "sigmoid_norm"  # length-normalised DPO
    SIMPO = "simpo"
    ORPO = "orpo"
    BCO_PAIR = "bco_pair"
    APO_ZERO = "apo_zero"
    APO_DOWN = "apo_down"
    SPPO_HARD = "sppo_hard"
    NCA_PAIR = "nca_pair"
    EXO_PAIR = "exo_pair"
    DISCOPOP = "discopop"
    SFT = "sft"                    # NLL of chosen; with a DPO loss in a LossMix it is RPO
    KTO = "kto"                    # unpaired; on pairs it splits them into unpaired rows

    @property
    def needs_reference(self) -> bool:
        return self not in _REFERENCE_FREE

    @property
    def paired(self) -> bool:
        """False for losses defined on unpaired rows (they still accept pairs, split in two)."""
        return self is not LossType.KTO

    @property
    def needs_lengths(self) -> bool:
        """Needs chosen_lengths/rejected_lengths (IPO too, unless ipo_normalize_length=False)."""
        return self in (LossType.SIGMOID_NORM, LossType.SIMPO, LossType.ORPO)

    @property
    def accepts_margin(self) -> bool:
        """A per-pair margin m shifts the logit z = βΔ - m (ODPO-style offset)."""
        return self in _MARGIN_LOSSES

    @property
    def accepts_confidence(self) -> bool:
        """Row confidence c is a soft target: -c log σ(z) - (1-c) log σ(-z) (Bernoulli likelihood)."""
        return self in (LossType.SIGMOID, LossType.SIGMOID_NORM, LossType.SIMPO)

    @property
    def accepts_label_smoothing(self) -> bool:
        """cDPO smoothing (sigmoid, sigmoid_norm, simpo) or the flip rate ε (robust, exo_pair)."""
        return self in _SMOOTHING_LOSSES

    @classmethod
    def from_name(cls, name: str | LossType) -> LossType:
        if isinstance(name, cls):
            return name
        key = str(name).strip().lower().replace("-", "_")
        key = _ALIASES.get(key, key)
        try:
            return cls(key)
        except ValueError:
            valid = ", ".join([m.value for m in cls] + sorted(_ALIASES))
            raise ValueError(f"unknown loss {name!r}; valid: {valid}") from None


_REFERENCE_FREE = frozenset({LossType.SIMPO, LossType.ORPO, LossType.SFT})
_MARGIN_LOSSES = frozenset({
    LossType.SIGMOID, LossType.HINGE, LossType.ROBUST, LossType.SIGMOID_NORM, LossType.SIMPO,
    LossType.DISCOPOP,
})
_SMOOTHING_LOSSES = frozenset({
    LossType.SIGMOID, LossType.SIGMOID_NORM, LossType.SIMPO, LossType.ROBUST, LossType.EXO_PAIR,
})
_ALIASES = {"dpo": "sigmoid", "cdpo": "sigmoid", "slic": "hinge", "rso": "hinge", "rdpo": "robust",
            "ln_dpo": "sigmoid_norm", "length_normalized": "sigmoid_norm", "nll": "sft"}


@dataclass(frozen=True)
class LossMix:
    """Weighted sum of losses plus an optional SFT (NLL of chosen) term: RPO = sigmoid + α·sft.

    terms: ((LossType, weight), ...), at least one. sft_weight: weight of `chosen_nll`.
    ORPO already contains its own NLL term: an extra sft_weight adds a second one on purpose only.
    """

    terms: tuple[tuple[LossType, float], ...]
    sft_weight: float = 0.0

    def __post_init__(self) -> None:
        if not self.terms:
            raise ValueError("LossMix needs at least one loss")
        object.__setattr__(self, "terms", tuple((LossType.from_name(t), float(w)) for t, w in self.terms))

    @classmethod
    def parse(cls, spec: str, sft_weight: float = 0.0) -> LossMix:
        """'sigmoid' or 'sigmoid:1.0,ipo:0.5' -> LossMix; an 'sft:α' term sets sft_weight."""
        terms, sft = [], sft_weight
        for part in (p.strip() for p in spec.split(",") if p.strip()):
            name, _, w = part.partition(":")
            try:
                weight = float(w) if w else 1.0
            except ValueError:
                raise ValueError(f"bad weight {w!r} in loss spec {spec!r}; write name:weight") from None
            if LossType.from_name(name) is LossType.SFT:
                sft += weight
            else:
                terms.append((LossType.from_name(name), weight))
        if not terms:
            terms = [(LossType.SFT, 0.0)]  # pure SFT: the NLL alone, carried by sft_weight
        return cls(tuple(terms), sft)

    @property
    def needs_reference(self) -> bool:
        return any(t.needs_reference for t, _ in self.terms)

    @property
    def paired(self) -> bool:
        return all(t.paired for t, _ in self.terms)
