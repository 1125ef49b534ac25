"""A decoder-only transformer seen as embeddings, a list of layers, a final norm and a head.

`run_layers` pushes any chunk of positions through any layer range `[start, end)` against a `LayeredKVCache`.
It is the one primitive every decoder uses: vanilla runs one token through all layers, early-exit methods run
shallow layers ahead and catch deep layers up later as a chunk, speculative methods verify drafted chunks and
tree-shaped candidates. Attention is written out here (rather than calling the Hugging Face layer) so the cache,
the positions and the mask are fully in our hands; weights and norms are the model's own modules.

Supported: Llama, Mistral, Qwen2 (and Qwen3's q/k norms) style decoder layers.
"""
from __future__ import annotations

import threading

import torch
import torch.nn.functional as F

from harness.core.kv_cache import LayeredKVCache
from harness.core.layer_calls import LayerCall, joined, split_like
from harness.core.backends.native_f32 import NativeF32Stack, native_f32_applies
from harness.core.backends.packed_bf16 import PackedBF16Stack, packed_path_applies
from harness.core.backends.runner_backends import RUNNERS, backend
from harness.core.rotary import apply_rotary


def store_linears_column_major(model: torch.nn.Module) -> None:
    """Re-stores every linear layer's weight [out, in] as the transpose of a contiguous [in, out] tensor.

    Same values, same module code; on a CPU, F.linear then takes oneDNN's fast path for the few rows a decoder
    feeds it: measured (one thread) 2× faster for SmolLM2's lm head at one position and 1.16× over its 30 MLPs
    (1.45× for projection-sized matrices in isolation). A tied lm head gets its own copy (the embedding keeps
    row-major rows for lookups).
    """
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and module.weight.is_contiguous():
            column_major = module.weight.detach().t().contiguous().t()
            module.weight = torch.nn.Parameter(column_major, requires_grad=False)


class ModelRunner:
    def __init__(self, model: torch.nn.Module, tokenizer, name: str = "", runner: str = "fast") -> None:
        """`runner`: `eager` (the model's own modules), `fast` (the fastest arithmetic measured correct here: the
        native CPU kernels where they apply), `compiled` (the static step compiled by inductor on a CPU) or
        `captured` (CUDA graphs, replayed eagerly off a GPU); see `runner_backends.py`."""
        if runner not in RUNNERS:
            raise ValueError(f"unknown runner {runner!r}; use one of {', '.join(RUNNERS)}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.config = model.config
        inner = model.model
        self.embed_tokens = inner.embed_tokens
        self.layers = list(inner.layers)
        self.norm = inner.norm
        self.lm_head = model.lm_head
        self.rotary_emb = inner.rotary_emb
        attn = self.layers[0].self_attn
        self.head_dim = attn.head_dim
        self.n_heads = self.config.num_attention_heads
        self.n_kv_heads = self.config.num_key_value_heads
        self.scaling = attn.scaling
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self._cos = self._sin = None
        self._rotary_lock = threading.Lock()
        self.runner_kind = runner
        if self.device.type == "cpu" and not packed_path_applies(self.device, self.dtype):
            store_linears_column_major(model)  # for the eager modules, which also run prefills beside native fp32
        self._packed = self._native_stack()
        self._static = backend(self, runner)

    def companion(self, model: torch.nn.Module, name: str) -> "ModelRunner":
        """A runner for a small model that works beside this one (a draft), on the same arithmetic: `eager` stays
        eager, every other kind runs the `fast` one (static steps are built for the main model only)."""
        return ModelRunner(model, self.tokenizer, name, "eager" if self.runner_kind == "eager" else "fast")

    def repack(self) -> None:
        """Rebuilds the packed weights after the model's weights changed (a loaded or trained draft): the packed path
        reads copies made when the runner was built. Training needs no repack while it runs, since autograd always
        takes the eager path (prepacked weights carry no gradients)."""
        if self._packed is not None:
            self._packed = self._native_stack()
        if self._static is not None:
            self._static = backend(self, self.runner_kind)

    def _native_stack(self) -> PackedBF16Stack | NativeF32Stack | None:
        """The batch-invariant CPU path for this dtype, where it runs: packed bf16, native fp32, else None (the
        model's own modules, which the eager runner always runs)."""
        if self.runner_kind == "eager":
            return None
        if packed_path_applies(self.device, self.dtype):
            return PackedBF16Stack(self)
        return NativeF32Stack(self) if native_f32_applies(self) else None

    def _packed_for(self, hidden: torch.Tensor) -> bool:
        """Whether `hidden` runs on the packed path: inference only, since prepacked weights carry no gradients."""
        return self._packed is not None and not (hidden.requires_grad and torch.is_grad_enabled())

    @property
    def exact_chunks(self) -> bool:
        """Whether a chunk's rows come out bit-for-bit as one-position forwards would (the packed bf16 and native
        fp32 paths on a CPU).

        Elsewhere (torch's kernels: CUDA, `--runner eager`, `FASTDECODE_NATIVE=0`) they may differ in the last bits,
        and a decoder's output can then leave vanilla's at a numerical near-tie; parity classification says which."""
        return self._packed is not None

    @property
    def kernel_path(self) -> str:
        """Which arithmetic runs under `run_layers`, for the run's metadata."""
        if self._static is not None:
            return self._static.kernel_path
        if self._packed is not None:
            return self._packed.kernel_path
        return f"{self.device.type}-eager (scaled_dot_product_attention; not batch-invariant)"

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def eos_token_ids(self) -> set[int]:
        ids = self.model.generation_config.eos_token_id if self.model.generation_config else None
        ids = ids if ids is not None else self.tokenizer.eos_token_id
        return set(ids) if isinstance(ids, (list, tuple)) else {ids}

    def new_cache(self, max_len: int) -> LayeredKVCache:
        spare = self._static.spare_slots if self._static is not None else 0
        self._ensure_rotary(max_len + spare)
        return LayeredKVCache(self.n_layers, self.n_kv_heads, self.head_dim, max_len, self.dtype, self.device, spare)

    def rotary_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin [positions, head_dim], covering every cache allocated so far."""
        return self._cos, self._sin

    def _ensure_rotary(self, max_len: int) -> None:
        """Tabulates cos/sin once with the model's own rotary module (so rope scaling variants are honoured); the
        tables only grow, also when the sequences of a batch allocate their caches at once."""
        with self._rotary_lock:
            if self._cos is not None and self._cos.shape[0] >= max_len:
                return
            positions = torch.arange(max_len, device=self.device)[None]
            probe = torch.zeros(1, 1, self.hidden_size, dtype=self.dtype, device=self.device)
            cos, sin = self.rotary_emb(probe, positions)
            self._cos, self._sin = cos[0], sin[0]

    def embed(self, token_ids: torch.Tensor | list[int]) -> torch.Tensor:
        """Token ids [q] → hidden states [1, q, d]."""
        ids = torch.as_tensor(token_ids, device=self.device).reshape(1, -1)
        return self.embed_tokens(ids)

    def run_layers(self, hidden: torch.Tensor, cache: LayeredKVCache, start: int = 0, end: int | None = None,
                   positions: torch.Tensor | None = None, chunk_mask: torch.Tensor | None = None,
                   skip_attention: frozenset[int] = frozenset(), skip_mlp: frozenset[int] = frozenset()
                   ) -> torch.Tensor:
        """Runs hidden states [1, q, d] through layers [start, end), appending their keys/values to the cache.

        Each layer's chunk lands after that layer's valid slots. By default its positions follow on from those slots
        and it attends causally within itself, aligned to the end of the cache (every cached slot is visible).
        `positions` overrides the rotary positions (tree candidates share depths); `chunk_mask` ([q, q] bool,
        True = may attend) overrides the causal pattern inside the chunk. Skipped attention or MLP sub-layers
        (draft models of self-speculative decoding) leave that layer's cache untouched.
        """
        end = self.n_layers if end is None else end
        if self._static is not None and not (hidden.requires_grad and torch.is_grad_enabled()):
            return self._static.run_layers(hidden, cache, start, end, positions, chunk_mask, frozenset(skip_attention),
                                           frozenset(skip_mlp))
        return self.eager_layers(hidden, cache, start, end, positions, chunk_mask, skip_attention, skip_mlp)

    def run_layers_batch(self, calls: list[LayerCall]) -> list[torch.Tensor]:
        """`run_layers` for several sequences at once, each call with its own cache, chunk and layer range; returns
        each call's hidden states. At every layer the linears run once over all rows that reach it, attention per
        sequence over its own cache. On the batch-invariant path each sequence's bits are those it gets alone."""
        if self._static is not None:  # the static step is built for one sequence: the calls run in turn
            return [self.run_layers(c.hidden, c.cache, c.start, c.end, c.positions, c.chunk_mask, c.skip_attention,
                                    c.skip_mlp) for c in calls]
        if self._packed_for(calls[0].hidden):
            return self._packed.run_batch(calls)
        return self._eager_batch(calls)

    def eager_layers(self, hidden: torch.Tensor, cache: LayeredKVCache, start: int, end: int,
                     positions: torch.Tensor | None, chunk_mask: torch.Tensor | None,
                     skip_attention: frozenset[int], skip_mlp: frozenset[int]) -> torch.Tensor:
        """`run_layers` on the eager runner (the packed bf16 path where it applies)."""
        call = LayerCall(hidden, cache, start, end, positions, chunk_mask, skip_attention, skip_mlp)
        if self._packed_for(hidden):
            return self._packed.run_batch([call])[0]
        return self._eager_batch([call])[0]

    def _eager_batch(self, calls: list[LayerCall]) -> list[torch.Tensor]:
        """The model's own modules, over the rows of every call that reaches a layer (joined along the positions)."""
        hs = [c.hidden for c in calls]
        for i in range(min(c.start for c in calls), max(c.end for c in calls)):
            layer = self.layers[i]
            attending = [j for j, c in enumerate(calls) if c.start <= i < c.end and i not in c.skip_attention]
            if attending:
                x = joined([hs[j] for j in attending], dim=1)
                out = self._attention(i, layer.self_attn, layer.input_layernorm(x), [calls[j] for j in attending])
                for j, h in zip(attending, split_like(x + out, [hs[j] for j in attending], dim=1)):
                    hs[j] = h
            feeding = [j for j, c in enumerate(calls) if c.start <= i < c.end and i not in c.skip_mlp]
            if feeding:
                x = joined([hs[j] for j in feeding], dim=1)
                out = x + layer.mlp(layer.post_attention_layernorm(x))
                for j, h in zip(feeding, split_like(out, [hs[j] for j in feeding], dim=1)):
                    hs[j] = h
        return hs

    def _attention(self, index: int, attn, x: torch.Tensor, calls: list[LayerCall]) -> torch.Tensor:
        """Attention of the calls' rows (joined in x, [1, rows, d]): projections over all rows, the attention
        itself per call over its own cache."""
        q_all, k_all, v_all = attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)
        outs, lo = [], 0
        for call in calls:
            q_len, past, hi = call.rows, call.cache.lengths[index], lo + call.rows
            q = q_all[:, lo:hi].view(1, q_len, -1, self.head_dim).transpose(1, 2)
            k = k_all[:, lo:hi].view(1, q_len, -1, self.head_dim).transpose(1, 2)
            v = v_all[:, lo:hi].view(1, q_len, -1, self.head_dim).transpose(1, 2)
            lo = hi
            if hasattr(attn, "q_norm"):
                q, k = attn.q_norm(q), attn.k_norm(k)
            pos = call.positions if call.positions is not None else torch.arange(past, past + q_len,
                                                                                 device=self.device)
            cos, sin = self._cos[pos][None, None], self._sin[pos][None, None]
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
            keys, values = call.cache.append(index, k, v)
            mask, causal = None, False
            if call.chunk_mask is not None:
                mask = torch.ones(q_len, past + q_len, dtype=torch.bool, device=self.device)
                mask[:, past:] = call.chunk_mask
            elif q_len > 1 and past == 0:
                causal = True  # the same kernel path the reference uses for a prefill
            elif q_len > 1:
                mask = torch.ones(q_len, past + q_len, dtype=torch.bool, device=self.device).tril(past)
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, is_causal=causal,
                                                 scale=self.scaling, enable_gqa=self.n_kv_heads != self.n_heads)
            outs.append(out.transpose(1, 2).reshape(1, q_len, -1))
        return attn.o_proj(joined(outs, dim=1))

    def final_norm(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.norm(hidden)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Final norm and lm head: hidden states [1, q, d] → logits [q, vocab] (float32)."""
        if self._packed_for(hidden):
            return self._packed.logits(hidden)
        return self.lm_head(self.norm(hidden))[0].float()

    def logits_batch(self, hiddens: list[torch.Tensor]) -> list[torch.Tensor]:
        """`logits` for several sequences' hidden states in one lm-head pass (each row's bits as alone where the
        runner is batch-invariant)."""
        if self._packed_for(hiddens[0]):
            return self._packed.logits_batch(hiddens)
        return split_like(self.logits(joined(hiddens, dim=1)), [h[0] for h in hiddens])

    def forward(self, token_ids: torch.Tensor | list[int], cache: LayeredKVCache, last_only: bool = False
                ) -> torch.Tensor:
        """All layers for a chunk of tokens: the logits [q, vocab] (`last_only`: of the last position only, [1, vocab],
        as a prefill needs; the lm head then skips the other positions)."""
        hidden = self.run_layers(self.embed(token_ids), cache)
        return self.logits(hidden[:, -1:] if last_only else hidden)
