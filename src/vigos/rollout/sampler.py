"""A lean sampler: vigos's own decode loop over a Qwen-VL model's weights.

Why not Hugging Face ``generate``: on a small model every decoding step pays
milliseconds of Python in ``generate`` and in the decoder's module stack
(input preparation, mask building, output recording, per-module hooks,
three LoRA matmuls per adapted layer) while the arithmetic itself is a
handful of matrix-vector products. Here a step is just that arithmetic:

* the prompt batch is prefilled once with the model's own forward pass
  (vision tower, multimodal rotary positions, deepstack features: all the
  family-specific parts stay the model's), one row per distinct prompt;
  its key/value cache is then copied ``num_samples`` times, so a prompt's
  image is encoded and its text prefilled once for all its samples;
* decoding runs over one copy of the language model's linear weights, made
  per rollout, and of the output head: LoRA deltas folded in, query/key/value
  fused into one matrix and gate/up into another, each RMSNorm's weight folded
  into the product it feeds (the norm itself is then three small ops), stored
  transposed (on a CPU a row-vector times a [in, out] matrix is the faster
  product), with a preallocated key/value cache and one
  ``scaled_dot_product_attention`` per layer. That copy is the loop's memory
  cost; it is freed when the rollout ends;
* sampling applies the same filters in the same order as ``generate``
  (min-new-tokens, suppressed tokens, temperature, top-k, top-p) and draws
  with one ``torch.multinomial`` per step over every row, finished or not,
  so for a fixed seed it consumes the random stream exactly as ``generate``
  does and, up to float rounding, samples the same tokens
  (tests/rollout/test_sampler.py compares them token by token).

Text tokens after the prompt have equal temporal/height/width rotary
positions, so decoding needs only each row's next position: the prompt's
largest multimodal position + 1 (the model's ``rope_deltas``) plus the
number of tokens generated so far. The same loop runs the plain Qwen2 and
Llama decoders under LLaVA-OneVision and SmolVLM/Idefics3, whose positions
are one-dimensional and counted over each row's real tokens as ``generate``
counts them; other decoders (Gemma 3's sliding windows and scaled norms)
are left to ``generate``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

# Text decoders with one-dimensional rotary positions whose layers the loop reproduces (LLaVA-OneVision's
# Qwen2, SmolVLM's and Idefics3's Llama).
_PLAIN_DECODERS = frozenset({"qwen2", "llama"})


@dataclass(frozen=True)
class SamplingFilters:
    """What ``generate``'s logits processors do to a step's scores, as plain settings."""

    temperature: float
    top_k: int
    top_p: float
    min_new_tokens: int
    eos_token_ids: tuple[int, ...]
    suppressed_ids: tuple[int, ...]


def filter_scores(scores: torch.Tensor, step: int, filters: SamplingFilters) -> torch.Tensor:
    """Scores [N, V] (float32) after the sampling filters, in ``generate``'s order; removed tokens get -inf."""
    return _ScoreFilter(filters, scores.device)(scores, step)


class _ScoreFilter:
    """:func:`filter_scores` with the removed-token index tensors built once, for a whole rollout."""

    def __init__(self, filters: SamplingFilters, device: torch.device):
        self.filters = filters
        # Before min_new_tokens the end-of-sequence tokens are removed too; both fills write -inf, so
        # one fill over the union is the same as generate's two.
        early = filters.eos_token_ids + filters.suppressed_ids if filters.min_new_tokens else filters.suppressed_ids
        self.removed_early = torch.tensor(early, device=device) if early else None
        self.removed = torch.tensor(filters.suppressed_ids, device=device) if filters.suppressed_ids else None

    def __call__(self, scores: torch.Tensor, step: int) -> torch.Tensor:
        filters, vocab = self.filters, scores.shape[-1]
        removed = self.removed_early if step < filters.min_new_tokens else self.removed
        if removed is not None:
            scores = scores.index_fill(-1, removed, -float("inf"))
        if filters.temperature != 1.0:
            scores = scores / filters.temperature
        if filters.top_k:
            kth = torch.topk(scores, min(filters.top_k, vocab))[0][..., -1, None]
            scores = scores.masked_fill(scores < kth, -float("inf"))
        if filters.top_p < 1.0:
            sorted_scores, order = torch.sort(scores, descending=False)
            cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
            drop_sorted = cumulative <= (1 - filters.top_p)
            drop_sorted[..., -1:] = False  # the most likely token always stays
            scores = scores.masked_fill(drop_sorted.scatter(1, order, drop_sorted), -float("inf"))
        return scores


@dataclass
class _Layer:
    """One decoder layer's weights, ready for a decode step (linear weights transposed: [in, out]).

    The RMSNorms before ``qkv`` and before ``gate_up`` are folded into those products (see
    :func:`_norm_folded`); what is left of them is their ``root_eps``."""

    input_norm_root_eps: torch.Tensor
    qkv: torch.Tensor  # [H, (heads + 2 * kv_heads) * head_dim]
    qkv_bias: torch.Tensor | None
    q_norm: tuple[torch.Tensor, float] | None  # Qwen3: RMSNorm over each head's query and key
    k_norm: tuple[torch.Tensor, float] | None
    o: torch.Tensor
    o_bias: torch.Tensor | None
    post_norm_root_eps: torch.Tensor
    gate_up: torch.Tensor  # [H, 2 * intermediate]
    down: torch.Tensor
    act: Callable[[torch.Tensor], torch.Tensor]


def folded_linear(module: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """A linear layer's weight [out, in] and bias as the model computes with them now: a PEFT LoRA
    layer's base weight plus its active adapters' deltas (a new tensor), else the weight itself. None
    for a layer whose function is not ``x @ W.T + b`` (DoRA, LoRA bias, other layer types) or whose
    weight is sharded."""
    base = getattr(module, "base_layer", module)
    # Sharded weights (FSDP's DTensors, ZeRO-3's empty placeholders) are whole only inside the model's
    # own forward passes.
    if not isinstance(base, torch.nn.Linear) or type(base.weight) is not torch.nn.Parameter or base.weight.numel() == 0:
        return None
    weight = base.weight
    if hasattr(module, "lora_A") and not module.merged and not module.disable_adapters:
        active = [a for a in module.active_adapters if a in module.lora_A]
        if any(module.use_dora.get(a, False) or module.lora_bias.get(a, False) for a in active):
            return None
        if active:
            weight = weight + sum(module.get_delta_weight(a) for a in active)
    return weight, base.bias


def _fused(
    *modules: torch.nn.Module, norm: torch.nn.Module | None = None
) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """The modules' effective weights stacked along the output and transposed [in, sum(out)], with the
    RMSNorm ``norm`` that feeds them folded in (if given), and their biases (all or none)."""
    parts = [folded_linear(m) for m in modules]
    if any(p is None for p in parts) or len({b is None for _, b in parts}) != 1:
        return None
    weight = torch.cat([w for w, _ in parts])
    if norm is not None:
        weight = _norm_folded(weight, norm)
    bias = None if parts[0][1] is None else torch.cat([b for _, b in parts])
    return weight.t().contiguous(), bias


def _norm_eps(module: torch.nn.Module) -> float:
    return float(getattr(module, "variance_epsilon", None) or getattr(module, "eps", None))


def _norm(module: torch.nn.Module) -> tuple[torch.Tensor, float]:
    return module.weight, _norm_eps(module)


def _norm_folded(weight: torch.Tensor, norm: torch.nn.Module) -> torch.Tensor:
    """``weight`` [out, in] times the RMSNorm's weight and sqrt(in) along its input, so that
    ``rms_norm(x) @ weight.T == _unit_rms(x, root_eps) @ folded.T`` up to rounding: a norm then costs a
    decode step three small ops instead of about seven. Computed in float32, kept in the weight's dtype."""
    scale = norm.weight.float() * math.sqrt(weight.shape[1])
    return (weight.float() * scale).to(weight.dtype)


def _root_eps(norm: torch.nn.Module, size: int, device: torch.device) -> torch.Tensor:
    """sqrt(size * eps) of an RMSNorm over ``size`` features, as a float32 scalar tensor."""
    return torch.tensor(math.sqrt(size * _norm_eps(norm)), dtype=torch.float32, device=device)


def _unit_rms(x: torch.Tensor, root_eps: torch.Tensor) -> torch.Tensor:
    """x / sqrt(||x||^2 + H * eps) in float32, back in x's dtype: an RMSNorm whose weight and sqrt(H)
    were folded into the next product (``root_eps`` = sqrt(H * eps))."""
    x32 = x.float()
    return (x32 / torch.hypot(torch.linalg.vector_norm(x32, dim=-1, keepdim=True), root_eps)).to(x.dtype)


def _rms_norm(x: torch.Tensor, norm: tuple[torch.Tensor, float]) -> torch.Tensor:
    # As the Qwen RMSNorms compute it: normalize in float32, back to the input dtype, then scale. In
    # float32 that is one fused op; in lower precision the cast sits between normalizing and scaling.
    weight, eps = norm
    if x.dtype == torch.float32 and weight.dtype == torch.float32:
        return F.rms_norm(x, (x.shape[-1],), weight, eps=eps)
    return weight * F.rms_norm(x.float(), (x.shape[-1],), eps=eps).to(x.dtype)


class LeanDecoder:
    """Decode steps over a Qwen-VL, Qwen2 or Llama language model's weights. Build with :meth:`of`."""

    def __init__(
        self,
        model: torch.nn.Module,
        core: torch.nn.Module,
        language_model: torch.nn.Module,
        layers: list[_Layer],
        attention: torch.nn.Module,
    ):
        self.model = model
        self.core = core
        self.language_model = language_model
        # Qwen-VL's multimodal rotary positions (three axes, offsets in ``rope_deltas``) or plain ones.
        self.multimodal_rope = hasattr(core.model, "rope_deltas")
        self.layers = layers
        self.num_heads = attention.config.num_attention_heads
        self.num_kv_heads = attention.config.num_key_value_heads
        self.head_dim = attention.head_dim
        self.scaling = attention.scaling
        self.embedding = self.language_model.embed_tokens.weight
        head = core.get_output_embeddings()
        final_norm = self.language_model.norm
        # The final norm folded into a transposed copy of the head, as the layers' norms are.
        self.final_norm_root_eps = _root_eps(final_norm, head.weight.shape[1], head.weight.device)
        self.head_weight = _norm_folded(head.weight, final_norm).t().contiguous()
        self.head_bias = head.bias

    @classmethod
    @torch.no_grad()
    def of(cls, model: torch.nn.Module) -> LeanDecoder | None:
        """The decoder for ``model`` (PEFT/DDP-wrapped or not), or None when its layout is not one this
        loop reproduces exactly (then the caller samples with ``generate``)."""
        from vigos.models.modeling import language_model as decoder_of
        from vigos.models.modeling import unwrap

        core = unwrap(model)
        if getattr(core, "model", None) is None:
            return None
        language_model = decoder_of(core)
        config = language_model.config
        if not hasattr(core.model, "rope_deltas") and config.model_type not in _PLAIN_DECODERS:
            return None
        if getattr(config, "use_sliding_window", False) or any(
            kind != "full_attention" for kind in getattr(config, "layer_types", None) or ()
        ):
            return None
        head = core.get_output_embeddings()
        if not isinstance(head, torch.nn.Linear) or not isinstance(language_model.embed_tokens, torch.nn.Embedding):
            return None  # a trained or wrapped head/embedding (modules_to_save, LoRA on them)
        layers = []
        for block in language_model.layers:
            attention, mlp = getattr(block, "self_attn", None), getattr(block, "mlp", None)
            if attention is None or mlp is None or not hasattr(mlp, "act_fn"):
                return None
            try:
                qkv = _fused(attention.q_proj, attention.k_proj, attention.v_proj, norm=block.input_layernorm)
                o = _fused(attention.o_proj)
                gate_up = _fused(mlp.gate_proj, mlp.up_proj, norm=block.post_attention_layernorm)
                down = _fused(mlp.down_proj)
            except AttributeError:  # not the Qwen layer layout
                return None
            if (
                qkv is None
                or o is None
                or gate_up is None
                or down is None
                or gate_up[1] is not None
                or down[1] is not None
            ):
                return None
            hidden_size, device = qkv[0].shape[0], qkv[0].device
            layers.append(
                _Layer(
                    input_norm_root_eps=_root_eps(block.input_layernorm, hidden_size, device),
                    qkv=qkv[0],
                    qkv_bias=qkv[1],
                    q_norm=_norm(attention.q_norm) if hasattr(attention, "q_norm") else None,
                    k_norm=_norm(attention.k_norm) if hasattr(attention, "k_norm") else None,
                    o=o[0],
                    o_bias=o[1],
                    post_norm_root_eps=_root_eps(block.post_attention_layernorm, hidden_size, device),
                    gate_up=gate_up[0],
                    down=down[0],
                    act=mlp.act_fn,
                )
            )
        return cls(model, core, language_model, layers, language_model.layers[0].self_attn)

    @torch.inference_mode()
    def sample(
        self, batch: dict[str, Any], num_samples: int, max_new_tokens: int, filters: SamplingFilters, pad_token_id: int
    ) -> torch.Tensor:
        """New tokens [B * num_samples, <= max_new_tokens] for a left-padded prompt batch of B rows.

        Rows are grouped by prompt (``num_samples`` consecutive rows each); a
        finished row is filled with ``pad_token_id`` after its end-of-sequence
        token, and decoding stops when every row has finished.
        """
        prompt_mask = batch["attention_mask"].bool()
        rows, prompt_length = prompt_mask.shape
        # Prefill: the model's own forward pass (vision, rotary positions, deepstack). Qwen-VL leaves each
        # row's rotary offset in ``rope_deltas``; plain positions count each row's real tokens, as in generate.
        if self.multimodal_rope:
            self.core.model.rope_deltas = None
            out = self.model(**batch, use_cache=True, logits_to_keep=1)
            deltas = self.core.model.rope_deltas.reshape(rows, 1)
        else:
            position_ids = (prompt_mask.long().cumsum(-1) - 1).masked_fill(~prompt_mask, 0)
            out = self.model(**batch, position_ids=position_ids, use_cache=True, logits_to_keep=1)
            deltas = torch.zeros((rows, 1), dtype=torch.long)
        # transformers 5.x renamed past_key_values to cache (the old name warns).
        cache = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
        first_logits = out.logits[:, -1].float()
        del out

        total = prompt_length + max_new_tokens
        n = rows * num_samples
        device = first_logits.device
        keys, values = [], []
        for index in range(len(self.layers)):
            layer_keys, layer_values = _cache_tensors(cache, index)
            k = layer_keys.new_empty((n, self.num_kv_heads, total, self.head_dim))
            v = layer_values.new_empty((n, self.num_kv_heads, total, self.head_dim))
            k[:, :, :prompt_length] = layer_keys.repeat_interleave(num_samples, dim=0)
            v[:, :, :prompt_length] = layer_values.repeat_interleave(num_samples, dim=0)
            keys.append(k)
            values.append(v)
        del cache
        positions = (prompt_mask.sum(-1, keepdim=True) + deltas.to(device)).repeat_interleave(num_samples, 0)

        # Every row's rotary cos/sin for all the positions it can reach, in one call of the model's own
        # rotary module: [N, max_new_tokens, head_dim] each.
        steps = torch.arange(max_new_tokens, device=device)
        reached = positions + steps
        axes = reached.unsqueeze(0).expand(3, n, -1) if self.multimodal_rope else reached
        cos, sin = self.language_model.rotary_emb(self.embedding, axes)
        # rotate_half(x) * sin == roll(x, half) * [-sin_1, sin_2]: the sign moves into the table once.
        half = sin.shape[-1] // 2
        sin = torch.cat([-sin[..., :half], sin[..., half:]], dim=-1)
        # Padding is masked out additively, for every step at once (generated positions are all attended).
        mask = torch.zeros((n, 1, 1, total), dtype=self.embedding.dtype, device=device)
        padding = ~prompt_mask.repeat_interleave(num_samples, dim=0)
        mask[:, 0, 0, :prompt_length].masked_fill_(padding, -float("inf"))
        eos = torch.tensor(filters.eos_token_ids or (-1,), device=device)
        finished = torch.zeros(n, dtype=torch.bool, device=device)
        score_filter = _ScoreFilter(filters, device)
        logits = first_logits.repeat_interleave(num_samples, dim=0)
        tokens = []
        for step in range(max_new_tokens):
            probs = score_filter(logits, step).softmax(dim=-1)
            token = torch.multinomial(probs, num_samples=1).squeeze(1).masked_fill_(finished, pad_token_id)
            tokens.append(token)
            finished |= torch.isin(token, eos)
            if step + 1 == max_new_tokens or bool(finished.all()):
                break
            logits = self._step(token, cos[:, step], sin[:, step], prompt_length + step, keys, values, mask)
        return torch.stack(tokens, dim=1)

    def _step(
        self,
        token: torch.Tensor,
        cos: torch.Tensor,
        signed_sin: torch.Tensor,
        slot: int,
        keys: list[torch.Tensor],
        values: list[torch.Tensor],
        mask: torch.Tensor,
    ) -> torch.Tensor:
        """Feed one token per row at cache ``slot``; the next logits [N, V] in float32.

        ``cos`` and ``signed_sin`` [N, head_dim] are the row's rotary tables (the sine's first half
        negated); ``mask`` [N, 1, 1, >= slot + 1] is the additive attention mask.
        """
        n = token.shape[0]
        hidden = F.embedding(token, self.embedding)  # [N, H]: one position per row, no sequence axis
        cos, signed_sin = cos[:, None, :], signed_sin[:, None, :]  # broadcast over [N, heads, head_dim]
        mask = mask[..., : slot + 1]
        half = self.head_dim // 2
        heads, kv_heads = self.num_heads, self.num_kv_heads
        for layer, layer_keys, layer_values in zip(self.layers, keys, values):
            x = _unit_rms(hidden, layer.input_norm_root_eps)
            qkv = x @ layer.qkv if layer.qkv_bias is None else torch.addmm(layer.qkv_bias, x, layer.qkv)
            qkv = qkv.view(n, heads + 2 * kv_heads, self.head_dim)
            if layer.q_norm is not None:
                qk = torch.cat(
                    [
                        _rms_norm(qkv[:, :heads], layer.q_norm),
                        _rms_norm(qkv[:, heads : heads + kv_heads], layer.k_norm),
                    ],
                    dim=1,
                )
            else:
                qk = qkv[:, : heads + kv_heads]
            qk = qk * cos + qk.roll(half, dims=-1) * signed_sin  # queries and keys rotated together
            layer_keys[:, :, slot] = qk[:, heads:]
            layer_values[:, :, slot] = qkv[:, heads + kv_heads :]
            attended = F.scaled_dot_product_attention(
                qk[:, None, :heads].transpose(1, 2),
                layer_keys[:, :, : slot + 1],
                layer_values[:, :, : slot + 1],
                attn_mask=mask,
                scale=self.scaling,
                enable_gqa=True,
            )
            attended = attended.reshape(n, heads * self.head_dim)
            hidden = hidden + (
                attended @ layer.o if layer.o_bias is None else torch.addmm(layer.o_bias, attended, layer.o)
            )
            gate, up = (_unit_rms(hidden, layer.post_norm_root_eps) @ layer.gate_up).chunk(2, dim=-1)
            hidden = hidden + (layer.act(gate) * up) @ layer.down
        hidden = _unit_rms(hidden, self.final_norm_root_eps)
        logits = (
            hidden @ self.head_weight
            if self.head_bias is None
            else torch.addmm(self.head_bias, hidden, self.head_weight)
        )
        return logits.float()


def _cache_tensors(cache: Any, index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Layer ``index``'s prefill keys and values [B, kv_heads, L, head_dim] from a transformers cache."""
    layer = cache.layers[index]
    return layer.keys, layer.values


def until_eos(ids: Sequence[int], eos_token_ids: Sequence[int]) -> list[int]:
    """``ids`` cut after the first end-of-sequence token (kept): a rollout's completion."""
    eos = set(eos_token_ids)
    end = next((i + 1 for i, token in enumerate(ids) if token in eos), len(ids))
    return list(ids[:end])


def completion_ids(tokens: torch.Tensor, eos_token_ids: Sequence[int]) -> list[list[int]]:
    """Each row of new tokens [N, T] cut after its first end-of-sequence token."""
    return [until_eos(ids, eos_token_ids) for ids in tokens.tolist()]
