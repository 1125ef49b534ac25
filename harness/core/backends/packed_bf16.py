"""The fast, batch-invariant bf16 path for CPUs with bf16 hardware (AVX512-BF16 or AMX).

Why it exists: on such CPUs a bf16 chunk of 1–8 positions costs what one position costs (the weights are streamed
once either way), so drafts, catch-up chunks and candidate trees ride along almost for free, as on a GPU. For that
to be lossless, row i of a chunk must come out bit-for-bit as it would alone. Every step here is chosen for that:

- linear layers run on oneDNN weights prepacked once (`mkldnn._reorder_linear_weight`): its bf16 kernels
  accumulate in fp32 and give each row the same bits whatever the number of rows, and prepacking saves re-laying
  the weight on every call (measured 1.6–2× faster, same bits). q/k/v are packed as one matrix; SiLU(gate) and
  the product with up are fused into the gate and up linears' epilogues (a fused residual add is not
  batch-invariant, so the residual adds stay separate); one row is fed as two (see `PackedLinear`);
- attention is written out over the cache's fixed-length buffer, every slot a row may not see masked to -inf
  and the softmax in fp32, in blocks of at most `ATTENTION_BLOCK` rows: each row's reductions then run over the
  same length with the same kernels whatever the chunk (`scaled_dot_product_attention` is not row-invariant);
- norms, rotary embeddings and activations are row-wise.

The bits depend on the buffer's length (the reductions run over all of it), so two computations agree exactly when
their caches have the same length: every decoder allocates `Decoder.new_cache` (prompt + budget + headroom).

`tests/test_bf16_exactness.py` checks the claim: random causal chunks (q = 1..8, and deep layers catching up on
shallow ones) give, at every layer, the hidden states and KV entries of one-position forwards, bit for bit. A tree
mask is not covered: a node's ancestors sit at other slots of the buffer than in left-to-right decoding, and the
reductions then add the same terms in other vector lanes (measured: Medusa's trees leave vanilla's output at logit
margins of 0–0.25 on 17 of 100 samples).
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from harness.core.backends import native_linear
from harness.core.backends.cpu_kernels import NATIVE_ROWS, cpu_flags
from harness.core.backends.fixed_buffer import rotary_and_mask, run_fused_layers
from harness.core.backends.native_linear import NativeLinear
from harness.core.layer_calls import LayerCall, joined, split_like
from harness.core.rotary import apply_rotary

ATTENTION_BLOCK = 64  # query rows per attention block: bounds the fp32 score buffer for long prefills
EXACT_ROWS_PROBES = (4, 8, 16, 24, 32, 48, 64)  # row counts at which a batch's exactness is measured


@functools.cache
def cpu_has_bf16_hardware() -> bool:
    """True where the CPU advertises AVX512-BF16 or AMX-BF16 (Linux /proc/cpuinfo) and oneDNN takes bf16."""
    hardware = bool({"avx512_bf16", "amx_bf16"} & cpu_flags())
    return hardware and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def packed_path_applies(device: torch.device, dtype: torch.dtype) -> bool:
    return device.type == "cpu" and dtype == torch.bfloat16 and cpu_has_bf16_hardware()


class PackedLinear:
    """One oneDNN-prepacked bf16 weight (several linears side by side along the output), with fused epilogues.

    A single row is fed as two identical rows: oneDNN's one-row kernel is neither batch-invariant (measured: the
    1536→576 down projection differs in the last bit from the same row in a larger batch) nor fast (4 ms against
    0.05 ms for two rows, measured on AVX512-BF16). From two rows on, every row's bits are the same at any count
    up to the row count where oneDNN changes its blocking (`PackedBF16Stack.exact_rows`, measured at start-up).
    """

    def __init__(self, *linears: torch.nn.Linear) -> None:
        weight = torch.cat([lin.weight.detach() for lin in linears]).contiguous()
        self.in_features = weight.shape[1]
        biases = [lin.bias for lin in linears]
        self.bias = None if all(b is None for b in biases) else torch.cat(
            [b.detach() if b is not None else weight.new_zeros(lin.out_features) for b, lin in zip(biases, linears)])
        self.weight = torch.ops.mkldnn._reorder_linear_weight(weight, None)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, "none")

    def silu(self, x: torch.Tensor) -> torch.Tensor:
        """SiLU(x Wᵀ + b), fused."""
        return self._run(x, "swish")

    def times(self, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        """(x Wᵀ + b) · other, fused."""
        if x.shape[0] == 1:
            return torch.ops.mkldnn._linear_pointwise.binary(x.expand(2, -1), other.expand(2, -1), self.weight,
                                                             self.bias, "mul")[:1]
        return torch.ops.mkldnn._linear_pointwise.binary(x, other, self.weight, self.bias, "mul")

    def _run(self, x: torch.Tensor, activation: str) -> torch.Tensor:
        if x.shape[0] == 1:
            return torch.ops.mkldnn._linear_pointwise(x.expand(2, -1), self.weight, self.bias, activation, [], "")[:1]
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, activation, [], "")


class PackedLayer:
    def __init__(self, layer: torch.nn.Module, linear: type = PackedLinear) -> None:
        attn, mlp = layer.self_attn, layer.mlp
        self.qkv = linear(attn.q_proj, attn.k_proj, attn.v_proj)
        self.o = linear(attn.o_proj)
        self.gate = linear(mlp.gate_proj)
        self.up = linear(mlp.up_proj)
        self.down = linear(mlp.down_proj)
        self.input_norm = _norm_weight(layer.input_layernorm)
        self.post_norm = _norm_weight(layer.post_attention_layernorm)
        self.q_norm = getattr(attn, "q_norm", None)
        self.k_norm = getattr(attn, "k_norm", None)


def _norm_weight(norm: torch.nn.Module) -> tuple[torch.Tensor, float]:
    return norm.weight.detach().float(), float(getattr(norm, "variance_epsilon", getattr(norm, "eps", 1e-6)))


def rms_norm(x: torch.Tensor, norm: tuple[torch.Tensor, float]) -> torch.Tensor:
    """RMSNorm in fp32 (weight included), rounded once to bf16."""
    weight, eps = norm
    return F.rms_norm(x.float(), weight.shape, weight, eps).to(x.dtype)


class PackedBF16Stack:
    """Runs chunks through layer ranges with prepacked weights and fixed-buffer attention (see the module doc)."""

    def __init__(self, runner, linear: type | None = None) -> None:
        """`linear`: NativeLinear or PackedLinear (oneDNN); by default the native kernel where it runs."""
        self.runner = runner
        self.linear = linear or (NativeLinear if native_linear.library() is not None else PackedLinear)
        self.layers = [PackedLayer(layer, self.linear) for layer in runner.layers]
        self.final_norm = _norm_weight(runner.norm)
        self.lm_head = self.linear(runner.lm_head)
        # oneDNN's one-row kernel differs from its many-row one, so a lone row runs beside a copy of itself there
        self.shadow = self.linear is PackedLinear
        self.native = self.linear is NativeLinear and runner.head_dim <= native_linear.MAX_HEAD_DIM
        self.n_heads, self.n_kv_heads, self.head_dim = runner.n_heads, runner.n_kv_heads, runner.head_dim
        self.scaling = runner.scaling
        fusable = self.native and all(layer.q_norm is None for layer in self.layers)
        self.fused = [native_linear.NativeLayer(layer, self.n_heads, self.n_kv_heads, self.head_dim)
                      for layer in self.layers] if fusable else None

    @property
    def kernel_path(self) -> str:
        kind = "AMX-BF16" if native_linear.uses_amx() else "AVX512-BF16"
        linears = (f"native {kind} linears" if self.linear is NativeLinear else
                   f"oneDNN prepacked weights ({native_linear.unavailable_reason()})")
        return f"cpu-bf16-packed ({linears}, fixed-buffer attention; batch-invariant)"

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self._norm(hidden[0], self.final_norm)).float()

    def logits_batch(self, hiddens: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each sequence's logits, the lm head run once per group of sequences whose rows stay exact together."""
        out: list[torch.Tensor | None] = [None] * len(hiddens)
        for group in self._exact_groups([h.shape[1] for h in hiddens]):
            rows = [hiddens[j] for j in group]
            for j, logits in zip(group, split_like(self.logits(joined(rows, dim=1)), [h[0] for h in rows])):
                out[j] = logits
        return out

    def run_layers(self, hidden, cache, start, end, positions, chunk_mask, skip_attention, skip_mlp):
        return self._run_group([LayerCall(hidden, cache, start, end, positions, chunk_mask, skip_attention,
                                          skip_mlp)])[0]

    def run_batch(self, calls: list[LayerCall]) -> list[torch.Tensor]:
        """Each call's chunk through its own layer range and cache, sequences sharing the weights' passes in groups
        whose rows the kernels give the bits they give alone (`exact_rows`)."""
        out: list[torch.Tensor | None] = [None] * len(calls)
        for group in self._exact_groups([c.rows for c in calls]):
            for j, hidden in zip(group, self._run_group([calls[j] for j in group])):
                out[j] = hidden
        return out

    def _exact_groups(self, rows: list[int]) -> list[list[int]]:
        """Indices of the calls, grouped in order so that each group holds at most `exact_rows` rows (a longer
        call, a prefill, runs alone as it would unbatched)."""
        groups: list[list[int]] = []
        total = self.exact_rows + 1
        for j, n in enumerate(rows):
            if total + n > self.exact_rows:
                groups.append([])
                total = 0
            groups[-1].append(j)
            total += n
        return groups

    @functools.cached_property
    def exact_rows(self) -> int:
        """The most rows one linear takes with every row's bits as in two-row calls, measured on the model's first
        q/k/v and down projections at `EXACT_ROWS_PROBES` (oneDNN changes its blocking with the row count)."""
        limit = EXACT_ROWS_PROBES[-1]
        for linear in (self.layers[0].qkv, self.layers[0].down):
            x = torch.randn(limit, linear.in_features, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
            pairs = torch.cat([linear(x[j:j + 2]) for j in range(0, limit, 2)])
            exact = 2
            for m in EXACT_ROWS_PROBES:
                if not torch.equal(linear(x[:m]), pairs[:m]):
                    break
                exact = m
            limit = min(limit, exact)
        return limit

    def _run_group(self, calls: list[LayerCall]) -> list[torch.Tensor]:
        """The calls' chunks through their layer ranges, each layer's linears once over the rows of every call that
        reaches it, attention per call over its own cache."""
        if self.fused is not None and len(calls) == 1 and calls[0].rows <= NATIVE_ROWS:  # the same bits, sooner
            return [run_fused_layers(self.runner, self.fused, calls[0], self.scaling)]
        alone = self.shadow and len(calls) == 1 and calls[0].rows == 1  # its shadow rides along all the way
        xs = [c.hidden[0].expand(2, -1) if alone else c.hidden[0] for c in calls]
        per_past: list[dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = [{} for _ in calls]
        for i in range(min(c.start for c in calls), max(c.end for c in calls)):
            layer = self.layers[i]
            attending = [j for j, c in enumerate(calls) if c.start <= i < c.end and i not in c.skip_attention]
            if attending:
                tables = []
                for j in attending:
                    c, past = calls[j], calls[j].cache.lengths[i]
                    if past not in per_past[j]:
                        per_past[j][past] = self._rotary_and_mask(past, c.rows, c.cache.k.shape[3],
                                                                  c.positions, c.chunk_mask)
                    tables.append(per_past[j][past])
                outs = self._attention(i, layer, [xs[j] for j in attending], [calls[j] for j in attending], tables)
                for j, out in zip(attending, outs):
                    xs[j] = out
            feeding = [j for j, c in enumerate(calls) if c.start <= i < c.end and i not in c.skip_mlp]
            if feeding:
                x = joined([xs[j] for j in feeding])
                h = self._norm(x, layer.post_norm)
                for j, out in zip(feeding, split_like(x + layer.down(layer.up.times(h, layer.gate.silu(h))),
                                                      [xs[j] for j in feeding])):
                    xs[j] = out
        return [x[None, :c.rows] for x, c in zip(xs, calls)]

    def _norm(self, x: torch.Tensor, norm: tuple[torch.Tensor, float]) -> torch.Tensor:
        return native_linear.rms_norm(x, *norm) if self.native else rms_norm(x, norm)

    def _rotary_and_mask(self, past: int, q_len: int, slots: int, positions: torch.Tensor | None,
                         chunk_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`fixed_buffer.rotary_and_mask`, cos/sin as [rows, 1, head_dim]; a single row comes with its shadow's
        copy."""
        cos, sin, mask = rotary_and_mask(self.runner, past, q_len, slots, positions, chunk_mask)
        if q_len == 1 and self.shadow:
            cos, sin, mask = cos.expand(2, -1), sin.expand(2, -1), mask.expand(2, -1)
        return cos[:, None], sin[:, None], mask

    def _attention(self, index: int, layer: PackedLayer, xs: list[torch.Tensor], calls: list[LayerCall],
                   tables: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
        """Attention for each call's rows (xs[j]: [q, d], or a lone row and its shadow), q/k/v and output projections
        over all calls' rows at once. A single row attends beside a shadow copy of itself (see `PackedLinear`: the
        kernels then see the shapes they see for any chunk); only a chunk's real rows enter its cache."""
        heads, kv_heads, dim = self.n_heads, self.n_kv_heads, self.head_dim
        x = joined(xs)
        qkv = layer.qkv(self._norm(x, layer.input_norm))
        outs = []
        for part, call, (cos, sin, mask) in zip(split_like(qkv, xs), calls, tables):
            q_len, cache, given = call.rows, call.cache, part.shape[0]
            part = part.expand(2, -1) if given == 1 and self.shadow else part
            rows = part.shape[0]
            qk, v = part.split([(heads + kv_heads) * dim, kv_heads * dim], dim=-1)
            qk, v = qk.view(rows, heads + kv_heads, dim), v.view(rows, kv_heads, dim)
            if layer.q_norm is not None:
                qk = torch.cat([layer.q_norm(qk[:, :heads]), layer.k_norm(qk[:, heads:])], dim=1)
            q, k = apply_rotary(qk, cos, sin).split([heads, kv_heads], dim=1)  # one rotary pass over q and k heads
            cache.append(index, k[:q_len].transpose(0, 1)[None], v[:q_len].transpose(0, 1)[None])
            keys, values = cache.k[index, 0], cache.v[index, 0]  # the whole buffer: [kv_heads, max_len, dim]
            if self.native:
                outs.append(native_linear.attend(q.contiguous(), keys, values, mask, self.scaling)[:given])
                continue
            group = heads // kv_heads
            # rows ordered (kv head, query head in group, position): one batched matmul per kv head, no key copies
            grouped = q.view(rows, kv_heads, group, dim).permute(1, 2, 0, 3)
            blocks = [self._attend(grouped[:, :, lo:lo + ATTENTION_BLOCK], keys, values,
                                   mask[lo:lo + ATTENTION_BLOCK]) for lo in range(0, rows, ATTENTION_BLOCK)]
            out = blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=2)
            outs.append(out.permute(2, 0, 1, 3).reshape(rows, heads * dim)[:given])
        return split_like(x + layer.o(joined(outs)), xs)

    def _attend(self, grouped: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        """Softmax attention of query rows [kv_heads, group, n, dim] over the whole key/value buffer."""
        kv_heads, group, n, dim = grouped.shape
        scores = torch.matmul(grouped.reshape(kv_heads, group * n, dim), keys.transpose(1, 2))
        probs = torch.softmax(torch.add(mask, scores.view(kv_heads, group, n, -1).float(), alpha=self.scaling), -1)
        return torch.matmul(probs.to(keys.dtype).view(kv_heads, group * n, -1), values).view(kv_heads, group, n, dim)
