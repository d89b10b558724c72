"""Causal language models as policies: loading, prompt/response batches, log-probabilities, sampling.

The machinery that supervised fine-tuning, DPO and PPO-RLHF share (Ouyang et al. 2022, "Training language models
to follow instructions with human feedback"; Rafailov et al. 2023, "Direct Preference Optimization"). A language
model is a policy whose state is the prompt plus the tokens generated so far and whose action is the next token;
a response is an episode that ends at the end-of-text token (EOS) or after ``max_new_tokens``.

Shapes: B sequences; a batch of prompt/response pairs is right-padded to L tokens (``input_ids``, ``attention_mask``
and ``response_mask``, which is 1 on the response's tokens, EOS included); a sampled batch keeps the prompts
left-padded to P tokens (``query``) and the responses to T tokens (``response``), 1 in ``response_mask`` up to and
including the EOS and 0 after it. Log-probabilities are float32 nats.

``algo.model`` (and ``algo.ref_model``) may be a local model directory (``save_pretrained``), the run directory of
an rlrun language-model run (its ``model/``), a name in the local Hugging Face cache (``gpt2``,
``Qwen/Qwen2.5-0.5B``), or ``rlrun-tiny-gpt2``: the tiny GPT-2 that rlrun pretrains itself
(:mod:`rlrun.rlhf.tiny_lm`).
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rlrun.core.config import ConfigError
from rlrun.rlhf.tiny_lm import TINY_LM_NAME, tiny_lm_path

MODEL_DIR = "model"  # <run dir>/model/: the model a language-model run writes (save_pretrained)
REWARD_DIR = "reward_model"  # <run dir>/reward_model/: the text reward model of algo=reward_model algo.data=text
HUB_LOGGER = "huggingface_hub"  # its download retries warn on this logger; silenced while a model loads
BUCKET_OVERHEAD_TOKENS = 64  # length_buckets: a forward call's fixed cost, in token positions (measured on CPU)
log = logging.getLogger(__name__)


# ---- finding and loading models ------------------------------------------------------------------------------

def _looks_like_path(name: str) -> bool:
    """True if ``name`` can only be a file system path, not a Hugging Face name like ``org/model``."""
    return (os.path.isabs(name) or name.startswith((".", "~")) or name.count("/") > 1
            or (os.sep != "/" and os.sep in name))


def resolve_model(name: Any, key: str, subdir: str = MODEL_DIR) -> str:
    """The directory or Hugging Face name that ``key=name`` stands for, without loading it.

    ``rlrun-tiny-gpt2`` becomes the cached tiny GPT-2 (pretrained on first use); a run directory becomes its
    ``subdir`` (``model/`` of an SFT, DPO or PPO-RLHF run, ``reward_model/`` of a text reward-model run); any other
    existing directory must hold config.json; anything else is a Hugging Face name.

    Raises:
        ConfigError: naming ``key`` if ``name`` is not a non-empty string, or names a path that does not exist or
            is not a model directory.
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{key}={name!r} is not allowed: expected a model directory, an rlrun run directory, a "
                          f"name in the Hugging Face cache or {TINY_LM_NAME}")
    if name == TINY_LM_NAME:
        return str(tiny_lm_path())
    local = Path(name).expanduser()
    if local.exists() or _looks_like_path(name):
        if (local / subdir / "config.json").is_file():
            return str(local / subdir)
        if not local.is_dir():
            raise ConfigError(f"{key}={name!r}: no such directory: expected a model directory with config.json "
                              "(written by save_pretrained), an rlrun run directory or a cached model name")
        if not (local / "config.json").is_file():
            raise ConfigError(f"{key}={name!r}: the directory has neither config.json nor {subdir}/config.json: "
                              f"expected a model written by save_pretrained or an rlrun run that wrote {subdir}/")
        return str(local)
    return name


def load_pretrained(kind: Any, name: str, key: str, **kwargs: Any) -> Any:
    """``kind.from_pretrained(name)`` with the errors of a missing model turned into one ConfigError.

    A name that is not a local directory is looked up in the Hugging Face cache first (no network, so a cached
    model loads at once offline), then downloaded, with huggingface_hub's retry warnings silenced.
    """
    if not Path(name).is_dir():
        try:
            return kind.from_pretrained(name, local_files_only=True, **kwargs)
        except (OSError, ValueError):
            pass  # not cached: try to download it below
    hub_logger = logging.getLogger(HUB_LOGGER)
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)
    try:
        return kind.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as exc:
        first_line = (str(exc).strip().splitlines() or [""])[0]
        raise ConfigError(f"{key}={name!r} cannot be loaded ({exc.__class__.__name__}: {first_line}): expected a "
                          "local directory with config.json or the name of a model in the Hugging Face cache") from None
    finally:
        hub_logger.setLevel(level)


_pad_warned: set[str] = set()


def load_tokenizer(name: str, key: str) -> Any:
    """The tokenizer of model ``name``. One without a padding token pads with its EOS token (as GPT-2's, which has
    none), said once per model; masks, never the pad id, mark the padding.

    Raises:
        ConfigError: naming ``key`` if it cannot be loaded or has neither a pad nor an EOS token.
    """
    from transformers import AutoTokenizer

    tokenizer = load_pretrained(AutoTokenizer, name, key)
    if tokenizer.eos_token_id is None:
        raise ConfigError(f"{key}={name!r}: its tokenizer has no EOS token: expected one, to end responses")
    if tokenizer.pad_token_id is None:
        if name not in _pad_warned:
            log.warning("%s=%s: the tokenizer has no pad token; padding with its EOS token %r (attention masks mark "
                        "the padding)", key, name, tokenizer.eos_token)
            _pad_warned.add(name)
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_config(name: str, key: str) -> Any:
    """The transformers config of ``name``, checked to be a causal language model.

    Raises:
        ConfigError: naming ``key`` if it cannot be loaded or its model type has no causal-LM head (e.g. BERT, or a
            sequence-classification reward model).
    """
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    config = load_pretrained(AutoConfig, name, key)
    architectures = getattr(config, "architectures", None) or []
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or (
            architectures and not any(a.endswith("LMHeadModel") or a.endswith("ForCausalLM") for a in architectures)):
        raise ConfigError(f"{key}={name!r} is not a causal language model (model_type={config.model_type!r}, "
                          f"architectures={architectures}): expected one that AutoModelForCausalLM loads, e.g. GPT-2, "
                          "Qwen2 or Llama")
    return config


def context_length(config: Any) -> int | None:
    """The longest input in tokens that a model's positions allow, or None if its config does not say."""
    for attr in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(config, attr, None)
        if isinstance(value, int):
            return value
    return None


def load_causal_lm(name: str, key: str, dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """Load ``(tokenizer, model)`` of a causal language model resolved by :func:`resolve_model`.

    Raises:
        ConfigError: as :func:`load_causal_config` and :func:`load_tokenizer`.
    """
    from transformers import AutoModelForCausalLM

    config = load_causal_config(name, key)
    tokenizer = load_tokenizer(name, key)
    model = load_pretrained(AutoModelForCausalLM, name, key, config=config, dtype=dtype)
    model.config.pad_token_id = tokenizer.pad_token_id
    return tokenizer, model


def load_policy_and_reference(algo: Any, device: torch.device) -> tuple[Any, Any, Any]:
    """``(tokenizer, policy, reference)`` of a DPO or PPO-RLHF config: the policy from ``algo.model`` on ``device``
    in ``algo.dtype``, and a frozen reference from ``algo.ref_model`` (null: the same model). Transformers'
    progress bars are turned off (the run has its own). Raises ConfigError as :func:`load_causal_lm`."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    dtype = torch_dtype(algo.dtype)
    tokenizer, policy = load_causal_lm(resolve_model(algo.model, "algo.model"), "algo.model", dtype)
    _, reference = load_causal_lm(resolve_model(algo.ref_model or algo.model, "algo.ref_model"), "algo.ref_model",
                                  dtype)
    return tokenizer, policy.to(device), frozen(reference.to(device))


def epoch_batches(indices: np.ndarray, batch_size: int, epochs: int, seed: int, stream: int, start_step: int = 0):
    """The minibatches of ``epochs`` passes over ``indices``, each pass in its own random order
    (``np.random.default_rng([seed, stream, epoch])``), resuming after ``start_step`` minibatches: a resumed
    run gets exactly the batches the uninterrupted one would have. Yields int arrays of at most batch_size."""
    steps_per_epoch = -(-len(indices) // batch_size)
    for epoch in range(start_step // steps_per_epoch, epochs):
        order = indices[np.random.default_rng([seed, stream, epoch]).permutation(len(indices))]
        first = start_step % steps_per_epoch if epoch == start_step // steps_per_epoch else 0
        for start in range(first * batch_size, len(order), batch_size):
            yield order[start:start + batch_size]


def torch_dtype(name: str) -> torch.dtype:
    """``float32`` or ``bfloat16`` (``algo.dtype``) as a torch dtype."""
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[name]


def frozen(model: nn.Module) -> nn.Module:
    """``model`` in eval mode with no parameter requiring gradients: the reference of KL penalties and DPO."""
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


# ---- prompt/response batches -----------------------------------------------------------------------------------

def encode_prompt(tokenizer: Any, prompt: str) -> list[int]:
    """Token ids of a prompt, with the tokenizer's own special tokens (none for GPT-2, BOS for Llama). Never cut:
    the callers check lengths against the context and name the record (``verbose=False`` keeps transformers'
    own too-long warning out)."""
    return list(tokenizer(prompt, verbose=False)["input_ids"])


def encode_response(tokenizer: Any, response: str) -> list[int]:
    """Token ids of a response followed by EOS, without other special tokens: prompt + response + EOS is what the
    model learns to write and what it writes when sampled."""
    return list(tokenizer(response, add_special_tokens=False, verbose=False)["input_ids"]) + [tokenizer.eos_token_id]


def fit_pair(prompt_ids: list[int], response_ids: list[int], max_length: int, where: str, key: str
             ) -> tuple[list[int], list[int], bool]:
    """(prompt ids, response ids, truncated): the response cut so that the pair fits ``max_length`` tokens.

    Raises:
        ConfigError: naming ``where`` (file and line) and ``key`` if the prompt leaves no room for one response
            token.
    """
    if len(prompt_ids) >= max_length:
        raise ConfigError(f"{where}: the prompt has {len(prompt_ids)} tokens, more than {key}={max_length} allows "
                          "with a response: expected a shorter prompt or a larger " + key)
    room = max_length - len(prompt_ids)
    return prompt_ids, response_ids[:room], len(response_ids) > room


@dataclass
class PairBatch:
    """Right-padded prompt + response sequences: ``input_ids``, ``attention_mask``, ``response_mask`` (B, L) and
    ``position_ids`` (B, L), int64."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor

    def to(self, device: torch.device) -> PairBatch:
        return PairBatch(self.input_ids.to(device), self.attention_mask.to(device), self.response_mask.to(device))


def collate_pairs(pairs: list[tuple[list[int], list[int]]], pad_token_id: int) -> PairBatch:
    """Right-pad B (prompt ids, response ids) pairs into a :class:`PairBatch`; the loss of supervised fine-tuning
    and the log-probabilities of DPO are taken where ``response_mask`` is 1, so prompt tokens never count."""
    length = max(len(p) + len(r) for p, r in pairs)
    ids = torch.full((len(pairs), length), pad_token_id, dtype=torch.long)
    attention = torch.zeros((len(pairs), length), dtype=torch.long)
    response = torch.zeros((len(pairs), length), dtype=torch.long)
    for row, (p, r) in enumerate(pairs):
        ids[row, :len(p) + len(r)] = torch.tensor(p + r, dtype=torch.long)
        attention[row, :len(p) + len(r)] = 1
        response[row, len(p):len(p) + len(r)] = 1
    return PairBatch(ids, attention, response)


def positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count only attended tokens (left padding starts at position 0 on the first real token)."""
    return (attention_mask.cumsum(dim=1) - 1).clamp(min=0)


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[target]: (B, L, V) float logits and (B, L) int64 targets -> (B, L) float32.

    Computed as logit[target] - logsumexp(logits), which never materializes the (B, L, V) log-softmax (half the
    memory traffic of ``log_softmax`` + ``gather`` on a 50k vocabulary)."""
    logits = logits.float()
    return torch.gather(logits, 2, targets.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(dim=-1)


def pair_logprobs(model: Any, batch: Samples) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities of every response token of a batch from :func:`collate_responses` under ``model``.

    Returns:
        (summed log-probabilities of each response (B,), per-token log-probabilities (B, T) of the response tokens,
        0 where ``response_mask`` is 0).
    """
    logits, _ = sequence_forward(model, batch)
    per_token = token_logprobs(logits, batch.response) * batch.response_mask.to(torch.float32)
    return per_token.sum(dim=1), per_token


# ---- sampling --------------------------------------------------------------------------------------------------

def _cache_argument(model: Any) -> str:
    """The name under which ``model.forward`` takes the key/value cache (``cache`` in transformers 5,
    ``past_key_values`` before)."""
    parameters = inspect.signature(model.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def _returned_cache(output: Any) -> Any:
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Keep the ``top_k`` most likely tokens (0 = all) and then the smallest set whose probability reaches
    ``top_p`` (nucleus sampling, Holtzman et al. 2020; 1.0 = all); the others get -inf. (B, V) -> (B, V)."""
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop = cumulative - sorted_logits.softmax(dim=-1) >= top_p  # the mass before this token already reaches top_p
        logits = logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    return logits


@dataclass
class Samples:
    """Sampled responses: ``query`` (B, P) left-padded prompts with ``query_mask``; ``response`` (B, T) with
    ``response_mask`` 1 up to and including each EOS and 0 after it (those positions hold the pad id);
    ``ended`` (B,) bool, True where the response ended with EOS rather than at ``max_new_tokens``."""

    query: torch.Tensor
    query_mask: torch.Tensor
    response: torch.Tensor
    response_mask: torch.Tensor
    ended: torch.Tensor

    def to(self, device: torch.device) -> Samples:
        return Samples(self.query.to(device), self.query_mask.to(device), self.response.to(device),
                       self.response_mask.to(device), self.ended.to(device))


def left_pad(prompts: list[list[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, P) int64 ids and mask of B prompts padded on the left to the longest."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, p in enumerate(prompts):
        if p:
            ids[row, width - len(p):] = torch.tensor(p, dtype=torch.long)
            mask[row, width - len(p):] = 1
    return ids, mask


def collate_responses(pairs: list[tuple[list[int], list[int]]], pad_token_id: int, eos_token_id: int) -> Samples:
    """B (prompt ids, response ids) pairs as :class:`Samples`: prompts left-padded to P, responses right-padded to
    T with ``response_mask`` 1 on each response's tokens; ``ended`` is True where a response ends with EOS (one cut
    by a maximum length does not). Every row's response then starts at column P, which lets
    :func:`sequence_forward` run the LM head on the response positions only (DPO's log-probabilities)."""
    query, query_mask = left_pad([p for p, _ in pairs], pad_token_id)
    width = max(len(r) for _, r in pairs)
    response = torch.full((len(pairs), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(pairs), width), dtype=torch.long)
    for row, (_, r) in enumerate(pairs):
        response[row, :len(r)] = torch.tensor(r, dtype=torch.long)
        mask[row, :len(r)] = 1
    ended = torch.tensor([bool(r) and r[-1] == eos_token_id for _, r in pairs])
    return Samples(query, query_mask, response, mask, ended)


def length_buckets(shapes: list[tuple[int, int]], overhead_tokens: int = BUCKET_OVERHEAD_TOKENS) -> list[list[int]]:
    """Split B (prompt length, response length) sequences into groups that are run through the model one group per
    forward call, to spend as little compute on padding as possible.

    A group of n sequences laid out by :func:`collate_responses` costs n * (longest prompt + longest response)
    token positions, plus ``overhead_tokens`` for the call itself. The sequences are sorted by total length and
    cut into contiguous groups by dynamic programming to minimize the summed cost (exact for that order; a batch
    of equal lengths stays one group). Returns lists of indices into ``shapes``, each group in ascending length.
    """
    order = sorted(range(len(shapes)), key=lambda i: (shapes[i][0] + shapes[i][1], i))
    best, cut = [0.0] + [math.inf] * len(order), [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):
        longest_prompt = longest_response = 0
        for start in range(end - 1, -1, -1):  # the group order[start:end]
            prompt, response = shapes[order[start]]
            longest_prompt, longest_response = max(longest_prompt, prompt), max(longest_response, response)
            cost = best[start] + (end - start) * (longest_prompt + longest_response) + overhead_tokens
            if cost < best[end]:
                best[end], cut[end] = cost, start
    groups, end = [], len(order)
    while end > 0:
        groups.append(order[cut[end]:end])
        end = cut[end]
    return groups[::-1]


def summed_logprobs(model: Any, pairs: list[tuple[list[int], list[int]]], pad_token_id: int, eos_token_id: int,
                    device: torch.device) -> torch.Tensor:
    """Summed log-probability of each response given its prompt, log pi(response | prompt): (B,) float32 nats,
    differentiable when ``model`` is. The sequences go through the model in :func:`length_buckets` groups, so a
    batch of mixed lengths is not padded to its longest member; the values equal those of one padded batch."""
    summed = torch.empty(len(pairs), dtype=torch.float32, device=device)
    groups = length_buckets([(len(p), len(r)) for p, r in pairs])
    parts = [pair_logprobs(model, collate_responses([pairs[i] for i in group], pad_token_id, eos_token_id)
                           .to(device))[0] for group in groups]
    index = torch.tensor([i for group in groups for i in group], device=device)
    return summed.index_copy(0, index, torch.cat(parts))


@torch.no_grad()
def sample(model: Any, prompts: list[list[int]], max_new_tokens: int, eos_token_id: int, pad_token_id: int,
           temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
           generator: torch.Generator | None = None) -> Samples:
    """Sample a response to each prompt, token by token with the key/value cache, until EOS or ``max_new_tokens``.

    The next token is drawn from softmax(logits / temperature) after :func:`filter_logits`, with ``generator``
    (on the model's device) so that a run's samples depend on its own seeded stream; temperature 0 is greedy.
    A response stops at its EOS: later positions hold ``pad_token_id`` and are 0 in ``response_mask``.

    Args:
        prompts: B lists of token ids (at least one id each).

    Returns:
        :class:`Samples` on the model's device.
    """
    device = next(model.parameters()).device
    query, query_mask = left_pad(prompts, pad_token_id)
    query, query_mask = query.to(device), query_mask.to(device)
    cache_arg = _cache_argument(model)
    attention = query_mask
    output = model(input_ids=query, attention_mask=attention, position_ids=positions(attention), use_cache=True)
    tokens, live = [], torch.ones(len(prompts), dtype=torch.bool, device=device)
    ended = torch.zeros_like(live)
    for step in range(max_new_tokens):
        logits = output.logits[:, -1].float()
        if temperature == 0:
            token = logits.argmax(dim=-1)
        else:
            probs = filter_logits(logits / temperature, top_k, top_p).softmax(dim=-1)
            token = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        token = torch.where(live, token, torch.full_like(token, pad_token_id))
        tokens.append(token)
        ended |= live & (token == eos_token_id)
        live &= token != eos_token_id
        if not live.any() or step == max_new_tokens - 1:
            break
        attention = torch.cat([attention, torch.ones_like(attention[:, :1])], dim=1)
        output = model(input_ids=token[:, None], attention_mask=attention,
                       position_ids=positions(attention)[:, -1:], use_cache=True,
                       **{cache_arg: _returned_cache(output)})
    response = torch.stack(tokens, dim=1)
    return Samples(query, query_mask, response, response_mask_of(response, eos_token_id), ended)


def response_mask_of(response: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """(B, T) int64 mask, 1 on every token up to and including the first EOS of each row, 0 after it."""
    is_eos = (response == eos_token_id).long()
    before = is_eos.cumsum(dim=1) - is_eos  # EOS tokens strictly before position t
    return (before == 0).long()


def decode_responses(tokenizer: Any, samples: Samples) -> list[str]:
    """The text of each sampled response without its EOS and padding."""
    texts = []
    for ids, mask, ended in zip(samples.response.tolist(), samples.response_mask.tolist(), samples.ended.tolist()):
        n = sum(mask) - (1 if ended else 0)
        texts.append(tokenizer.decode(ids[:n], skip_special_tokens=True))
    return texts


@functools.cache
def _keeps_logits(model_class: type) -> bool:
    """Whether ``model_class.forward`` takes ``logits_to_keep`` (transformers' causal LMs do: the LM head then runs
    on the last positions only); asked once per class."""
    return "logits_to_keep" in inspect.signature(model_class.forward).parameters


def sequence_forward(model: Any, samples: Samples, output_hidden: bool = False) -> tuple[torch.Tensor, Any]:
    """Run ``model`` over prompt + response; returns the logits that predict the T response tokens (B, T, V) and
    the last layer's hidden states at the same positions (B, T, H) if ``output_hidden``, else None.

    As the prompts are left-padded, the T + 1 last positions are the same in every row, so the LM head (and its
    (B, L, V) logits, the largest tensor of a small model) is computed on those only where the model allows it."""
    ids = torch.cat([samples.query, samples.response], dim=1)
    attention = torch.cat([samples.query_mask, samples.response_mask], dim=1)
    steps = samples.response.shape[1]
    extra = {"logits_to_keep": steps + 1} if _keeps_logits(type(model)) else {}
    output = model(input_ids=ids, attention_mask=attention, position_ids=positions(attention),
                   output_hidden_states=output_hidden, **extra)
    start, end = samples.query.shape[1] - 1, ids.shape[1] - 1
    hidden = output.hidden_states[-1][:, start:end] if output_hidden else None
    logits = output.logits[:, :steps] if extra else output.logits[:, start:end]
    return logits, hidden


def entropy_of(logits: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of softmax(logits): (B, T, V) -> (B, T) float32."""
    logp = logits.float().log_softmax(dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)


class ValueHead(nn.Module):
    """The value head of PPO-RLHF (Ziegler et al. 2019; Ouyang et al. 2022): V(prompt, tokens so far) as a linear
    map of the policy's last hidden state, sharing the language model's trunk. (B, T, H) -> (B, T) float32."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.summary = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.summary.weight)
        nn.init.zeros_(self.summary.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.summary(hidden.to(self.summary.weight.dtype)).squeeze(-1).float()


def hidden_size(model: Any) -> int:
    """Width of the last hidden state of a transformers model."""
    config = model.config
    for attr in ("hidden_size", "n_embd", "d_model"):
        value = getattr(config, attr, None)
        if isinstance(value, int):
            return value
    raise ConfigError(f"the model's config has no hidden size (model_type={config.model_type!r})")


def save_model(directory: Path, model: Any, tokenizer: Any, extra_files: dict[str, str] | None = None) -> Path:
    """``save_pretrained`` of model and tokenizer into ``directory``, with ``extra_files`` (name -> text), atomically:
    everything goes to a temporary sibling first, which then replaces ``directory``."""
    tmp = directory.with_name(f".tmp_{directory.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    for name, text in (extra_files or {}).items():
        (tmp / name).write_text(text)
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(tmp, directory)
    return directory


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` is 1 (same shape)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """``values`` scaled to unit variance (and zero mean if ``shift_mean``) over the entries where ``mask`` is 1."""
    mean = masked_mean(values, mask)
    var = masked_mean((values - mean) ** 2, mask)
    whitened = (values - mean) * torch.rsqrt(var + 1e-8)
    return whitened if shift_mean else whitened + mean


def cross_entropy_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean token cross-entropy of (B, L, V) logits against (B, L) targets over the entries where mask is 1."""
    losses = F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")
    return masked_mean(losses, mask)
