"""Attention over a cache layer's whole fixed-length buffer, and the stack of packed layers built on it.

`FixedBufferStack` runs chunks through layer ranges on packed linears (`packed_bf16.py`'s oneDNN and native bf16
kernels, `native_f32.py`'s fp32 ones): each row attends over the whole buffer with the slots it may not see masked,
so no row's arithmetic depends on the other rows; several sequences' calls share each layer's linears. Where the
kernels offer whole layers in C (`FusedLayers`), the calls of a group run through all their layers as one C call:
op for op the same arithmetic, so the same bits, without the Python between the ops.
"""
from __future__ import annotations

import ctypes
import functools

import torch

from harness.core.backends.cpu_kernels import NATIVE_ROWS
from harness.core.layer_calls import LayerCall, joined, split_like
from harness.core.rotary import apply_rotary

ATTENTION_BLOCK = 64  # query rows per attention block: bounds the fp32 score buffer for long prefills
EXACT_ROWS_PROBES = (4, 8, 16, 24, 32, 48, 64)  # row counts at which a batch's exactness is measured


def rotary_and_mask(runner, past: int, q_len: int, slots: int, positions: torch.Tensor | None,
                    chunk_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """cos/sin per row ([rows, head_dim]) and the additive mask over the whole buffer ([rows, slots]): the `past`
    valid slots and the chunk's own (causal, or `chunk_mask`) visible, every other slot -inf."""
    device = runner.device
    pos = positions if positions is not None else torch.arange(past, past + q_len, device=device)
    inner = chunk_mask if chunk_mask is not None else torch.ones(q_len, q_len, dtype=torch.bool, device=device).tril()
    visible = torch.zeros(q_len, slots, dtype=torch.bool, device=device)
    visible[:, :past] = True
    visible[:, past:past + q_len] = inner
    mask = torch.zeros(visible.shape, device=device).masked_fill_(~visible, float("-inf"))
    cos, sin = runner.rotary_tables()
    return cos[pos], sin[pos], mask


class PackedLayer:
    """A decoder layer's linears packed for one kernel (`linear`: q/k/v as one weight) and its norms' fp32 weights."""

    def __init__(self, layer: torch.nn.Module, linear: type) -> None:
        attn, mlp = layer.self_attn, layer.mlp
        self.qkv = linear(attn.q_proj, attn.k_proj, attn.v_proj)
        self.o = linear(attn.o_proj)
        self.gate = linear(mlp.gate_proj)
        self.up = linear(mlp.up_proj)
        self.down = linear(mlp.down_proj)
        self.input_norm = norm_weight(layer.input_layernorm)
        self.post_norm = norm_weight(layer.post_attention_layernorm)
        self.q_norm = getattr(attn, "q_norm", None)
        self.k_norm = getattr(attn, "k_norm", None)


def norm_weight(norm: torch.nn.Module) -> tuple[torch.Tensor, float]:
    return norm.weight.detach().float(), float(getattr(norm, "variance_epsilon", getattr(norm, "eps", 1e-6)))



def native_attend(function, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
                  scaling: float) -> torch.Tensor:
    """A kernel's attention (`attend_bf16`, `attend_f32`): q [rows, heads, dim] (rows contiguous inside) over a cache
    layer's whole buffer (keys, values [kv_heads, slots, dim]), slots masked -inf in `mask` [rows, slots] skipped."""
    rows, heads, dim = q.shape
    assert q.stride(2) == 1 and q.stride(1) == dim and keys.is_contiguous() and values.is_contiguous()
    mask = mask.contiguous()
    out = q.new_empty(rows, heads * dim)
    function(q.data_ptr(), q.stride(0), keys.data_ptr(), values.data_ptr(), mask.data_ptr(), out.data_ptr(), rows, heads,
             keys.shape[0], dim, keys.shape[1], scaling)
    return out


def native_rms_norm(function, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """A kernel's RMSNorm (`rms_norm_bf16`, `rms_norm_f32`) of rows x [rows, d] with its fp32 weight."""
    x = x.contiguous()
    y = torch.empty_like(x)
    function(x.data_ptr(), weight.data_ptr(), y.data_ptr(), x.shape[0], x.shape[1], eps)
    return y


def layer_struct(linear: type[ctypes.Structure]) -> type[ctypes.Structure]:
    """The C `layer_t` of `decoder_layer.h` over a kernel's `linear_t`."""

    class Layer(ctypes.Structure):
        _fields_ = ([(name, linear) for name in ("qkv", "o", "gate", "up", "down")]
                    + [("input_norm", ctypes.c_void_p), ("post_norm", ctypes.c_void_p), ("input_eps", ctypes.c_float),
                       ("post_eps", ctypes.c_float), ("heads", ctypes.c_int64), ("kv_heads", ctypes.c_int64),
                       ("head_dim", ctypes.c_int64)])

    return Layer


KERNEL_ARGUMENTS = {  # a kernel library's functions (each named `<name>_<element suffix>`) and their C arguments
    "linear": [ctypes.c_void_p] * 5 + [ctypes.c_int64] * 3 + [ctypes.c_int],
    "attend": [ctypes.c_void_p, ctypes.c_int64] + [ctypes.c_void_p] * 4 + [ctypes.c_int64] * 5 + [ctypes.c_float],
    "rms_norm": [ctypes.c_void_p] * 3 + [ctypes.c_int64] * 2 + [ctypes.c_float],
    "layers": ([ctypes.c_void_p] + [ctypes.c_int64] * 2 + [ctypes.c_void_p, ctypes.c_int64] + [ctypes.c_void_p] * 4
               + [ctypes.c_float]),
}


def declare_kernels(library: ctypes.CDLL, suffix: str) -> None:
    """Gives ctypes the arguments of `library`'s linear, attention, RMSNorm and layer functions (`decoder_layer.h`)."""
    for name, arguments in KERNEL_ARGUMENTS.items():
        function = getattr(library, f"{name}_{suffix}")
        function.argtypes, function.restype = arguments, None


class FusedLayers:
    """The stack's `PackedLayer`s (no q/k norms) as the kernels' `LAYERS` function (`decoder_layer.h`): several
    sequences' chunks through their layer ranges in one C call, each linear once over the rows of every sequence
    that runs it, op for op the arithmetic of the separate calls (so the same bits) without the Python between."""

    def __init__(self, layers: list[PackedLayer], struct: type[ctypes.Structure], function, heads: int,
                 kv_heads: int, head_dim: int) -> None:
        self.layers, self.function = layers, function  # the layers keep the tensors the structs point into alive
        self.structs = (struct * len(layers))(*(
            struct(*(lin.as_struct() for lin in (layer.qkv, layer.o, layer.gate, layer.up, layer.down)),
                   layer.input_norm[0].data_ptr(), layer.post_norm[0].data_ptr(), layer.input_norm[1],
                   layer.post_norm[1], heads, kv_heads, head_dim) for layer in layers))

    def __call__(self, runner, calls: list[LayerCall], scaling: float) -> list[torch.Tensor]:
        """Each call's hidden states after its layer range; each attending layer's keys and values written after
        that layer's valid slots of the call's cache."""
        first, end = min(c.start for c in calls), max(c.end for c in calls)
        plan = []  # per layer, per call: attention, MLP, the slot its chunk's keys land at
        for i in range(first, end):
            for c in calls:
                inside = c.start <= i < c.end
                attention = inside and i not in c.skip_attention
                plan.append((int(attention), int(inside and i not in c.skip_mlp),
                             c.cache.reserve(i, c.rows) if attention else 0))
        chunks = [(None if c.positions is None else c.positions.to(torch.int64).contiguous(),
                   None if c.chunk_mask is None else c.chunk_mask.to(torch.bool).contiguous()) for c in calls]
        sequences = torch.tensor([(c.rows, c.cache.k.data_ptr(), c.cache.v.data_ptr(), c.cache.k.shape[3],
                                   c.cache.k.stride(0), _pointer(positions), _pointer(mask))
                                  for c, (positions, mask) in zip(calls, chunks)], dtype=torch.int64)
        steps = torch.tensor(plan, dtype=torch.int64)
        x = torch.cat([c.hidden[0] for c in calls])  # a fresh copy, written in place
        cos, sin = (t.contiguous() for t in runner.rotary_tables())
        self.function(ctypes.addressof(self.structs), first, end - first, x.data_ptr(), len(calls),
                      sequences.data_ptr(), steps.data_ptr(), cos.data_ptr(), sin.data_ptr(), scaling)
        return [part[None] for part in split_like(x, [c.hidden[0] for c in calls])]


def _pointer(tensor: torch.Tensor | None) -> int:
    return 0 if tensor is None else tensor.data_ptr()


class FixedBufferStack:
    """Runs chunks through layer ranges on packed linears with fixed-buffer attention (see the module doc).

    A subclass gives the kernels: `linear` (a class built from the linears it joins, with `__call__`, `silu`,
    `times`), `_norm` and, where `native`, `_attend_native`; `fused` (a layer function, or None) and `shadow`
    (a lone row runs beside a copy of itself: oneDNN's one-row kernel differs from its many-row one)."""

    def __init__(self, runner, linear: type, native: bool, shadow: bool,
                 fused: tuple[type[ctypes.Structure], object] | None = None) -> None:
        self.runner = runner
        self.linear, self.native, self.shadow = linear, native, shadow
        self.layers = [PackedLayer(layer, linear) for layer in runner.layers]
        self.final_norm = norm_weight(runner.norm)
        self.lm_head = linear(runner.lm_head)
        self.n_heads, self.n_kv_heads, self.head_dim = runner.n_heads, runner.n_kv_heads, runner.head_dim
        self.scaling = runner.scaling
        fusable = fused is not None and all(layer.q_norm is None for layer in self.layers)
        self.fused = FusedLayers(self.layers, *fused, self.n_heads, self.n_kv_heads,
                                 self.head_dim) if fusable else None

    def _norm(self, x: torch.Tensor, norm: tuple[torch.Tensor, float]) -> torch.Tensor:
        raise NotImplementedError

    def _attend_native(self, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                       mask: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

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
            x = torch.randn(limit, linear.in_features, generator=torch.Generator().manual_seed(0)).to(self.runner.dtype)
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
        if self.fused is not None and sum(c.rows for c in calls) <= NATIVE_ROWS:  # the same bits, sooner
            return self.fused(self.runner, calls, self.scaling)
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
                outs.append(self._attend_native(q.contiguous(), keys, values, mask)[:given])
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
