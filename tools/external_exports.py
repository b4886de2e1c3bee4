"""Naive exports made by other codebases' model code: the corpus the compiler must re-roll.

Each entry builds a randomly initialised model from pip-installable code (nothing downloaded),
exports it with torch's TorchScript exporter as a user would, and writes `<out>.ref.npz` with the
input and the *library's own* PyTorch output, so `compile_model` verifies against that:

    python -m tools.external_exports --list
    python -m tools.external_exports hf-mamba-n16 -o hf.onnx
    python -m tools.external_exports hf-mamba-n16 --check      # export, compile with every pipeline, verify

  hf-mamba-*        transformers' MambaModel, slow path (no mamba_ssm kernels), use_cache=False
  hf-falcon-mamba-* transformers' FalconMambaModel (RMS norms on B, C and dt), slow path
  hf-jamba-*        transformers' JambaModel, one Mamba layer and one attention layer, slow path
  hf-zamba-*        transformers' ZambaModel, Mamba layers of 2 heads (one scan per head), slow path
  hf-mamba2*, hf-zamba2*, hf-bamba, hf-nemotron-h, hf-falcon-h1, hf-granite-moe-hybrid  transformers' Mamba2 family:
                    the chunked SSD (no per-step loop, nothing to re-roll; Einsum contractions), slow path
  hf-recurrent-gemma-*  transformers' RecurrentGemmaModel, recurrent blocks only: the RG-LRU loop, which
                    writes each step's state into a zeros buffer (`out[:, t] = h`), not a stacked list
  hf-rwkv*, hf-xlstm*, hf-minimax, hf-qwen3-next-dynamo  transformers' linear-attention models on their CPU path
                    (session s35's probe): RWKV's and xLSTM's per-step loops rescaled by a running maximum, MiniMax's
                    loop over blocks, Qwen3Next's chunked delta rule; left unrolled, each with its reason
  mambapy-n16       mambapy's Mamba, pscan=False (the sequential loop)
  user-bidirectional-s6*  a user's own bidirectional S6 block in plain PyTorch (Vision Mamba's two directions,
                    each its own loop): the backward one runs `for t in reversed(range(L))` and writes
                    `y[:, t] = y_t` into a zeros buffer (session s21's probe: left unrolled before)
  user-bidirectional-s6-script-loop*  each direction's loop in a torch.jit.script function: an ONNX Loop each
  user-bidirectional-s6-scan-op-dynamo  each direction as torch's scan higher-order op through dynamo: an ONNX Scan
  user-s6-unbind    the same block, one direction, looping over zip(deltaA.unbind(1), ..): one Split per tensor
  user-s6-assign-every-axis  one direction writing `y[:, t, :] = y_t`: ScatterND over every element's indices
  user-s6-addcmul   one direction stepping `h = torch.addcmul(deltaBx[:, t], h, deltaA[:, t])`
  user-s6-split-keepdim  one direction over zip(deltaA.split(1, 1), ..), keepdim readouts torch.cat-ed along their
                    kept axis
  user-s6-reversed-keep-step-axis*  the same run `for t in reversed(range(L))`, readouts torch.cat(ys[::-1], 1)
  user-s6-reversed-stack  a backward loop whose readouts are stacked in position order, torch.stack(ys[::-1], 1)
  user-s6-states-stack-last*  the states stacked last, torch.stack(hs, -1), read out after the loop by an einsum
  user-s6-discretise-in-loop*  one direction computing each step's decay and drive inside the loop
  user-s6-keep-step-axis  one direction stepping `h = deltaA[:, t:t+1] * h + deltaBx[:, t:t+1]` (the step axis kept),
                    readouts torch.cat-ed along it
  vision-*         vision Mamba blocks written by hand after their papers (tools/vision_scans.py, session s36): PlainMamba's
                    zig-zag orders, LocalMamba's windows, EfficientVMamba's atrous sub-planes, Vim's middle class token,
                    MambaVision's half-SSM mixer
  fork-channels-*   the public VMamba ONNX fork's loop with d_state > 1: readout
                    F.conv1d(h_i.view(1, B*KD*N, 1), C_i.view(B*KD, N, 1), groups=B*KD), written
                    with vmamba_ref.mamba1d --readout conv-channels
  *-dynamo          the same code through torch.onnx.export(dynamo=True) (opset 18)
  *-dynamic-batch   the same code exported with a symbolic batch axis (EXPORT_OPTIONS)
  *-no-folding      the same code exported with do_constant_folding=False
  *-f16, *-f64      model.half() / model.double() exported (session s17's generality probe: the
                    float64 export re-rolled nothing; ONNX Runtime has no float64 Conv to verify it)
"""
from __future__ import annotations

import importlib.metadata
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from passes.one_line import OneLineArgumentParser
from tools.vision_scans import vision_mamba

INPUT_NAME, OUTPUT_NAME = "input", "output"


@dataclass(frozen=True)
class ExternalExport:
    name: str
    codebase: str            # the pip distribution whose model code is exported
    description: str
    build: Callable          # () -> (torch module, sample input tensor)
    scans: int               # unrolled scans in the export
    steps: int               # scan steps in all
    options: dict = field(default_factory=dict)   # how it is exported: EXPORT_OPTIONS
    overflows: tuple[str, ...] = ()   # pipelines whose scan form overflows float32 on it (by design: seed)
    unrolled_by: tuple[str, ...] = ()  # pipelines whose scan form refuses its decays (log space, decays not > 0;
    #                                   a running maximum's unbounded ones past chunk24's range: RWKV, s36)
    exporter: str = "torchscript"     # torch.onnx.export with dynamo=False, or "dynamo" (dynamo=True)
    dtype: str = "float32"            # the module (and a float sample) converted first: model.half(), .double()
    tolerance: float = 1e-5           # rel L2 the compiled model must reach against the library's output
    runs_in_onnxruntime: bool = True  # False: ONNX Runtime's CPU provider lacks a kernel (float64 Conv)
    loops_kept_by: tuple[str, ...] = ()  # pipelines without unroll-loops (seed): 0 scans (onnxsim may unroll a Loop)

    @property
    def version(self) -> str:
        dist = "vmamba-passes" if self.codebase == "vmamba_ref" else self.codebase
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "(this repository)"


def hf_mamba(hidden: int, state: int, layers: int, length: int, batch: int = 1, vocab: int = 64, seed: int = 0,
             dt: float | None = None):
    """transformers.MambaModel from a config (random init), its slow path, and a sample of token ids.
    dt: set every dt_proj bias to softplus^-1(dt), so that dt ~ dt (init draws 1e-3..1e-1)."""
    import torch
    from transformers import MambaConfig, MambaModel

    torch.manual_seed(seed)
    config = MambaConfig(vocab_size=vocab, hidden_size=hidden, state_size=state, num_hidden_layers=layers,
                         expand=2, conv_kernel=4, use_mambapy=False, use_cache=False)

    class LastHiddenState(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = MambaModel(config)

        def forward(self, input_ids):
            return self.model(input_ids=input_ids, use_cache=False).last_hidden_state

    model = LastHiddenState().eval()
    if dt is not None:
        with torch.no_grad():
            for layer in model.model.layers:
                layer.mixer.dt_proj.bias.fill_(float(np.log(np.expm1(dt))))
    ids = torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))
    return model, ids


def _last_hidden_state(model, mask: bool = False):
    """A transformers base model's last_hidden_state for input_ids, use_cache=False; `mask`: an all-ones
    attention_mask passed too (hybrid models: with none and no cache, transformers' causal-mask code
    looks for packed sequences with torch.diff, which the TorchScript exporter cannot export)."""
    import torch

    class LastHiddenState(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids):
            extra = {"attention_mask": torch.ones_like(input_ids)} if mask else {}
            return self.model(input_ids=input_ids, use_cache=False, **extra).last_hidden_state

    return LastHiddenState().eval()


def hf_hybrid(kind: str, hidden: int, state: int, layers: int, length: int, batch: int = 1, vocab: int = 64,
              seed: int = 0):
    """transformers' FalconMambaModel, JambaModel or ZambaModel from a tiny config (random init, no mamba_ssm
    kernels, so the slow path's per-step loop), and a sample of token ids. Jamba: layer 1 of every 2 is
    attention (one Mamba layer and one attention layer for layers=2), one expert; Zamba: all Mamba layers."""
    import torch
    import transformers

    torch.manual_seed(seed)
    mask = kind != "falcon-mamba"
    if kind == "falcon-mamba":
        config = transformers.FalconMambaConfig(vocab_size=vocab, hidden_size=hidden, state_size=state,
                                                num_hidden_layers=layers, expand=2, conv_kernel=4,
                                                use_mambapy=False, use_cache=False)
        model = transformers.FalconMambaModel(config)
    elif kind == "jamba":
        config = transformers.JambaConfig(
            vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
            num_attention_heads=2, num_key_value_heads=1, num_experts=1, num_experts_per_tok=1,
            attn_layer_period=2, attn_layer_offset=1, mamba_d_state=state,
            mamba_d_conv=4, mamba_expand=2, use_cache=False, max_position_embeddings=64)
        model = transformers.JambaModel(config)
    elif kind == "zamba":
        config = transformers.ZambaConfig(
            vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
            num_attention_heads=2, num_key_value_heads=2, n_mamba_heads=2,
            mamba_d_state=state, mamba_expand=2, use_cache=False, layers_block_type=["mamba"] * layers,
            max_position_embeddings=64)
        model = transformers.ZambaModel(config)
    else:
        raise ValueError(f"unknown transformers model kind {kind!r}")
    ids = torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))
    return _last_hidden_state(model, mask), ids


# transformers' Mamba2 family: the same chunked SSD (torch_forward's slow path: no per-step loop, five einsum
# contractions per layer, e.g. 'bclhn,bcshn->bclsh'), each model with one Mamba2 layer of `heads` heads of `head_dim`.
MAMBA2_KINDS = ("mamba2", "zamba2", "zamba2-hybrid", "bamba", "nemotron-h", "falcon-h1", "granite-moe-hybrid")


def hf_mamba2(kind: str, hidden: int = 16, state: int = 8, heads: int = 4, head_dim: int = 8, chunk: int = 4,
              length: int = 8, batch: int = 1, vocab: int = 64, seed: int = 0):
    """One of transformers' Mamba2-family base models from a tiny config (random init, Mamba layers only, the
    slow path), and a sample of token ids. FalconH1's layer runs attention beside its Mamba mixer; the hybrids
    get an all-ones attention_mask, as in hf_hybrid."""
    import torch
    import transformers

    torch.manual_seed(seed)
    common = dict(vocab_size=vocab, hidden_size=hidden, use_cache=False)
    attention = dict(intermediate_size=2 * hidden, num_attention_heads=2, num_key_value_heads=2)
    mamba = dict(mamba_d_state=state, mamba_expand=2)
    heads_of = dict(mamba_n_heads=heads, mamba_d_head=head_dim, mamba_n_groups=1, mamba_chunk_size=chunk)
    if kind == "mamba2":
        model = transformers.Mamba2Model(transformers.Mamba2Config(
            **common, num_heads=heads, head_dim=head_dim, state_size=state, num_hidden_layers=1, expand=2, n_groups=1,
            chunk_size=chunk))
    elif kind in ("zamba2", "zamba2-hybrid"):   # Zamba2's head size is mamba_expand * hidden / n_mamba_heads
        blocks = ["mamba"] if kind == "zamba2" else ["mamba", "hybrid"]   # hybrid: the shared attention block too
        model = transformers.Zamba2Model(transformers.Zamba2Config(
            **common, **attention, **mamba, num_hidden_layers=len(blocks), layers_block_type=blocks, mamba_ngroups=1,
            n_mamba_heads=heads, chunk_size=chunk, max_position_embeddings=64, num_mem_blocks=1))
    elif kind == "bamba":
        model = transformers.BambaModel(transformers.BambaConfig(
            **common, **attention, **mamba, **heads_of, num_hidden_layers=1, attn_layer_indices=[],
            max_position_embeddings=64))
    elif kind == "nemotron-h":
        model = transformers.NemotronHModel(transformers.NemotronHConfig(
            **common, **attention, layers_block_type=["mamba"], mamba_num_heads=heads, mamba_head_dim=head_dim,
            ssm_state_size=state, n_groups=1, expand=2, chunk_size=chunk, head_dim=8))
    elif kind == "falcon-h1":
        model = transformers.FalconH1Model(transformers.FalconH1Config(
            **common, **attention, **mamba, **heads_of, num_hidden_layers=1, mamba_d_ssm=heads * head_dim,
            max_position_embeddings=64))
    elif kind == "granite-moe-hybrid":
        model = transformers.GraniteMoeHybridModel(transformers.GraniteMoeHybridConfig(
            **common, **attention, **mamba, **heads_of, num_hidden_layers=1, layer_types=["mamba"],
            num_local_experts=0, shared_intermediate_size=2 * hidden, max_position_embeddings=64))
    else:
        raise ValueError(f"unknown Mamba2-family kind {kind!r} (known: {', '.join(MAMBA2_KINDS)})")
    ids = torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))
    return _last_hidden_state(model, mask=kind != "mamba2"), ids


def hf_recurrent_gemma(hidden: int, layers: int, length: int, batch: int = 1, vocab: int = 64, seed: int = 0):
    """transformers.RecurrentGemmaModel from a tiny config of recurrent blocks only (random init), and a sample
    of token ids. Its RG-LRU, h_t = a_t * h_{t-1} + x_t, is a per-step loop with a_t = 0 at position 0 (the
    reset), so the decays are not known to be > 0: the log-space forms (seed's chunk24) refuse them."""
    import torch
    import transformers

    torch.manual_seed(seed)
    config = transformers.RecurrentGemmaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=2, lru_width=hidden, attention_window_size=16, block_types=("recurrent",), use_cache=False)
    model = transformers.RecurrentGemmaModel(config)
    ids = torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))
    return _last_hidden_state(model), ids


LINEAR_ATTENTION_KINDS = ("rwkv", "xlstm", "qwen3-next", "minimax")


def hf_linear_attention(kind: str, hidden: int = 16, length: int = 8, batch: int = 1, vocab: int = 64, seed: int = 0):
    """One of transformers' linear-attention base models from a tiny config (random init, one layer, nothing
    downloaded) on the path a CPU export takes, and a sample of token ids (session s35's probe, gen23):
    rwkv: `rwkv_linear_attention_cpu`, a per-step loop over num/den states rescaled by a running max;
    xlstm: `mlstm_recurrent_sequence_native` (inference mode, L below xLSTM's smallest chunk of 16), a per-step
    matrix state with an exponential input gate stabilised by a running max;
    qwen3-next: `torch_chunk_gated_delta_rule` (a prompt, no cache: the chunked form, a loop over chunks of 64 with a
    matrix state updated by the delta rule);
    minimax: lightning attention, a loop over blocks of `block_size` positions carrying a (head_dim, head_dim) kv
    state times a per-head decay exp(-slope * block)."""
    import torch
    import transformers

    torch.manual_seed(seed)
    common = dict(vocab_size=vocab, hidden_size=hidden, use_cache=False)
    mask = False
    if kind == "rwkv":
        model = transformers.RwkvModel(transformers.RwkvConfig(
            **common, num_hidden_layers=2, attention_hidden_size=hidden, intermediate_size=2 * hidden,
            context_length=64))   # 2 layers: RWKV's init divides by num_hidden_layers - 1
    elif kind == "xlstm":
        model = transformers.xLSTMModel(transformers.xLSTMConfig(
            **common, num_hidden_layers=1, num_heads=2, ffn_round_up_to_multiple_of=8, chunk_size=16,
            autocast_kernel_dtype="float32", inference_state_dtype="float32", mode="inference"))
    elif kind == "qwen3-next":
        model = transformers.Qwen3NextModel(transformers.Qwen3NextConfig(
            **common, num_hidden_layers=1, layer_types=["linear_attention"], intermediate_size=2 * hidden,
            num_attention_heads=2, num_key_value_heads=2, head_dim=8, linear_num_value_heads=2,
            linear_num_key_heads=2, linear_key_head_dim=8, linear_value_head_dim=8, linear_conv_kernel_dim=4,
            num_experts=0, decoder_sparse_step=1, mlp_only_layers=[0], max_position_embeddings=64))
        mask = True
    elif kind == "minimax":
        model = transformers.MiniMaxModel._from_config(transformers.MiniMaxConfig(
            **common, num_hidden_layers=1, layer_types=["linear_attention"], intermediate_size=2 * hidden,
            num_attention_heads=2, num_key_value_heads=2, head_dim=8, num_local_experts=1, num_experts_per_tok=1,
            block_size=4, max_position_embeddings=64), experts_implementation="eager")   # grouped_mm's histc: no ONNX
        mask = True
    else:
        raise ValueError(f"unknown linear-attention kind {kind!r} (known: {', '.join(LINEAR_ATTENTION_KINDS)})")
    ids = torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))
    return _last_hidden_state(model, mask=mask), ids


def mambapy_mamba(d_model: int, state: int, layers: int, length: int, batch: int = 1, seed: int = 0):
    import torch
    from mambapy.mamba import Mamba, MambaConfig

    torch.manual_seed(seed)
    model = Mamba(MambaConfig(d_model=d_model, n_layers=layers, d_state=state, pscan=False)).eval()
    sample = torch.randn(batch, length, d_model, generator=torch.Generator().manual_seed(seed))
    return model, sample


# How a user's own S6 loop may be written (user_s6's `loops`, one per direction of the block).
USER_LOOPS = ("stack", "reversed-assign", "unbind", "assign-every-axis", "addcmul", "split-keepdim", "keep-step-axis",
              "discretise-in-loop", "reversed-keep-step-axis", "reversed-stack", "states-stack-last", "script-loop",
              "script-loop-reversed", "script-loop-states", "script-loop-states-reversed", "script-loop-both",
              "script-loop-both-reversed", "script-loop-from-one", "script-loop-from-one-reversed", "scan-op",
              "scan-op-reversed", "script-loop-guarded", "script-loop-nested", "script-loop-if-first", "reset",
              "script-loop-reset", "script-loop-if-directions", "masked", "masked-not", "script-loop-masked", "masked-lengths", "index-copy",
              "script-loop-index-copy", "script-loop-assign", "masked-after-prefix", "masked-before-rest",
              "script-loop-masked-after-prefix", "masked-lengths-after-prefix", "masked-float", "masked-float-delta",
              "masked-soft")


def user_s6(d_model: int, state: int, length: int, batch: int = 2, seed: int = 0, loops=("stack", "reversed-assign")):
    """An S6 block as a user writes it in plain PyTorch, after Vision Mamba's: one direction per entry of `loops`
    (each with its own x_proj, dt_proj, A and D; summed and gated by SiLU(z)), each loop written so:
      stack            `for t in range(L)`, readouts appended and stacked
      reversed-assign  `for t in reversed(range(L))` (the backward direction), each readout written into a zeros
                       buffer, `y[:, t] = y_t`
      unbind           `for a_t, b_t, c_t in zip(deltaA.unbind(1), deltaBx.unbind(1), C.unbind(1))`, stacked
      assign-every-axis  `for t in range(L)`, each readout (a MatMul) written `y[:, t, :] = y_t` (TorchScript: a
                       ScatterND whose indices are every element's (b, t, d))
      addcmul          `h = torch.addcmul(deltaBx[:, t], h, deltaA[:, t])`, a `torch.bmm` readout, stacked
      split-keepdim    `for a, b, c in zip(deltaA.split(1, 1), deltaBx.split(1, 1), C.split(1, 1))`, readouts
                       `(h * c).sum(-1, keepdim=True)` joined by `torch.cat(ys, -1)` along their kept axis
      keep-step-axis   `h = deltaA[:, t:t+1] * h + deltaBx[:, t:t+1]` (h of shape (batch, 1, d_inner, N): one-position
                       Slices that keep the step axis), readouts `(h * C[:, t:t+1, None, :]).sum(-1)` joined by
                       `torch.cat(ys, 1)` along it
      discretise-in-loop  `for t in range(L)`, the step's decay and drive computed inside the loop from delta[:, t],
                       B[:, t], x[:, t] (`dA = torch.exp(delta[:, t, :, None] * A)`), readouts stacked
      reversed-keep-step-axis  keep-step-axis run `for t in reversed(range(L))`, the readouts joined in position order
                       (`torch.cat(ys[::-1], 1)`)
      reversed-stack   `for t in reversed(range(L))`, readouts appended and stacked in position order
                       (`torch.stack(ys[::-1], 1)`)
      states-stack-last  `for t in range(L)`, the states appended and stacked last (`torch.stack(hs, -1)`, (batch,
                       d_inner, N, L)), read out after the loop by `torch.einsum('bdnl,bln->bld', hs, C)`
      script-loop      the stack loop in a `torch.jit.script` function (the TorchScript exporter keeps it as an ONNX
                       Loop, readouts appended to a sequence: SequenceInsert, ConcatFromSequence)
      script-loop-reversed  the same stepping t = L - 1 - i, the stacked readouts flipped back (`.flip(1)`)
      script-loop-states  a `torch.jit.script` loop that carries h and appends it, `hs.append(h)` (a second sequence
                       in the ONNX Loop), read out after the loop by `torch.einsum('bldn,bln->bld', hs, C)`
      script-loop-both  a `torch.jit.script` loop appending the states and the readouts, `hs.append(h)` and
                       `ys.append(..)`, both returned; the block adds the states summed over N to the readouts
      script-loop-states-reversed, script-loop-both-reversed  the same stepping t = L - 1 - i, flipped back after
      script-loop-from-one  a `torch.jit.script` loop whose first state is the first drive, `h = deltaBx[:, 0]`, its
                       readout the list's first element, `ys = [y_0]`, then `for t in range(1, length)` (the Loop's
                       trip count Cast(Ceil(Div(Cast(length - 1), 1))); a SequenceConstruct before the appends)
      script-loop-from-one-reversed  the same from position L - 1 down, flipped back after
      script-loop-guarded  the script-loop inside `if length > 1:` (else the first position's readout alone): with a
                       dynamic batch the TorchScript exporter keeps an If of Cast(Greater(Gather(Shape(deltaA), 1), 1))
                       around the Loop (a static export folds it)
      script-loop-nested  a `torch.jit.script` loop over the two halves of d_inner, `for k in range(2):` around
                       `for t in range(length):` (nested ONNX Loops), each half's readouts stacked, the halves joined
      script-loop-if-first  a `torch.jit.script` loop that writes its first step in the loop, `if t == 0: h =
                       deltaBx[:, t]` else the recurrence (an ONNX If of Equal(t, 0) in the Loop's body)
      reset            `for t in range(L)` whose state restarts at the middle position, a segment boundary (packed
                       sequences): `if t == L // 2: h = torch.zeros_like(h)` before the step, readouts stacked (traced:
                       two chains whose readouts share one stacking Concat)
      script-loop-reset  the same in a `torch.jit.script` loop (an If of Equal(t, L // 2) in the Loop's body)
      script-loop-if-directions  both directions in one `torch.jit.script` loop, `for k in range(2): if k == 0:` the
                       forward `for t in range(length)` `else:` the backward one (flipped back), summed: an ONNX Loop
                       whose body's If holds a Loop in each branch
      masked           `for t in range(L)`, a masked step, `h = torch.where(mask[:, t, None, None], deltaA[:, t] * h +
                       deltaBx[:, t], h)` (the state held where the mask is off, as over padding), the mask computed
                       from the input (`x[:, :, 0] > 0`), readouts stacked
      masked-not       the same written `torch.where(~mask[:, t, None, None], h, deltaA[:, t] * h + deltaBx[:, t])`
      script-loop-masked  the masked loop in a `torch.jit.script` function (a Where in the Loop's body)
      masked-lengths   the masked loop with the mask of lengths fixed at export, `arange(L)[None] < tensor([L, L - 3])[:,
                       None]` (TorchScript folds it: one bool Constant per step)
      masked-after-prefix  the masked loop whose first 3 positions (a prefix never padded) take the plain step: `step =
                       deltaA[:, t] * h + deltaBx[:, t]; h = step if t < 3 else torch.where(mask[:, t, None, None],
                       step, h)` (3 plain steps, then masked ones, in one chain)
      masked-before-rest  the other way round (left padding of at most 3 positions): `torch.where(..)` for t < 3, the
                       plain step after
      script-loop-masked-after-prefix  masked-after-prefix in a `torch.jit.script` function (an If of Less(t, 3) in
                       the Loop's body, a Where in its else branch)
      masked-lengths-after-prefix  masked-after-prefix with masked-lengths' mask fixed at export
      masked-float     the masked loop with a float mask, transformers' padding multiply: `m = mask.to(x.dtype)[:, t, None,
                       None]; h = m * (deltaA[:, t] * h + deltaBx[:, t]) + (1 - m) * h`
      masked-float-delta  the same written `h = h + m * (deltaA[:, t] * h + deltaBx[:, t] - h)`
      masked-soft      masked-float with a soft mask, m = torch.sigmoid(x[:, :, 0]) (a gate in (0, 1), no Cast of a bool)
      index-copy       `for t in range(L)`, each readout written `y = y.index_copy(1, torch.tensor([t]), y_t[:, None])`
                       into a zeros buffer (TorchScript: a ScatterElements per step, its indices Expand(t, a shape
                       computed from Shape(y)))
      script-loop-index-copy  the same in a `torch.jit.script` function (a ScatterElements in the Loop's body)
      script-loop-assign  a `torch.jit.script` loop writing `y[:, t] = y_t` (index_put_, a ScatterND in the body)
      scan-op          torch's scan higher-order op (`torch._higher_order_ops.scan`, over axis 1), which the dynamo
                       exporter writes as an ONNX Scan
      scan-op-reversed  the same with `reverse=True`"""
    import torch
    import torch.nn.functional as F

    unknown = set(loops) - set(USER_LOOPS)
    if unknown:
        raise ValueError(f"unknown loop spelling {sorted(unknown)} (known: {', '.join(USER_LOOPS)})")
    torch.manual_seed(seed)
    d_inner, rank, directions = 2 * d_model, 2, len(loops)

    def scripted_loop(deltaA: torch.Tensor, deltaBx: torch.Tensor, C: torch.Tensor, h: torch.Tensor,
                      backward: bool) -> torch.Tensor:
        length = deltaA.shape[1]
        ys = []
        for i in range(length):
            t = length - 1 - i if backward else i
            h = deltaA[:, t] * h + deltaBx[:, t]
            ys.append((h * C[:, t].unsqueeze(1)).sum(-1))
        y = torch.stack(ys, 1)
        return y.flip(1) if backward else y
    if {"script-loop", "script-loop-reversed"} & set(loops):
        scripted_loop = torch.jit.script(scripted_loop)

    def scripted_states_loop(deltaA: torch.Tensor, deltaBx: torch.Tensor, C: torch.Tensor, h: torch.Tensor,
                             backward: bool, readout_in_loop: bool) -> tuple[torch.Tensor, torch.Tensor]:
        length = deltaA.shape[1]
        hs = []
        ys = []
        for i in range(length):
            t = length - 1 - i if backward else i
            h = deltaA[:, t] * h + deltaBx[:, t]
            hs.append(h)
            if readout_in_loop:
                ys.append((h * C[:, t].unsqueeze(1)).sum(-1))
        states = torch.stack(hs, 1)          # (batch, L, d_inner, N)
        states = states.flip(1) if backward else states
        if readout_in_loop:
            y = torch.stack(ys, 1)
            return (y.flip(1) if backward else y), states
        return torch.einsum("bldn,bln->bld", states, C), states
    if {"script-loop-states", "script-loop-states-reversed", "script-loop-both", "script-loop-both-reversed"} & set(loops):
        scripted_states_loop = torch.jit.script(scripted_states_loop)

    def scripted_loop_from_one(deltaA: torch.Tensor, deltaBx: torch.Tensor, C: torch.Tensor,
                               backward: bool) -> torch.Tensor:
        length = deltaA.shape[1]
        first = length - 1 if backward else 0
        h = deltaBx[:, first]
        ys = [(h * C[:, first].unsqueeze(1)).sum(-1)]
        for i in range(1, length):
            t = length - 1 - i if backward else i
            h = deltaA[:, t] * h + deltaBx[:, t]
            ys.append((h * C[:, t].unsqueeze(1)).sum(-1))
        y = torch.stack(ys, 1)
        return y.flip(1) if backward else y
    if {"script-loop-from-one", "script-loop-from-one-reversed"} & set(loops):
        scripted_loop_from_one = torch.jit.script(scripted_loop_from_one)

    def scripted_guarded_loop(deltaA: torch.Tensor, deltaBx: torch.Tensor, C: torch.Tensor,
                              h: torch.Tensor) -> torch.Tensor:
        length = deltaA.shape[1]
        ys = []
        if length > 1:
            for t in range(length):
                h = deltaA[:, t] * h + deltaBx[:, t]
                ys.append((h * C[:, t].unsqueeze(1)).sum(-1))
        else:
            ys.append((deltaBx[:, 0] * C[:, 0].unsqueeze(1)).sum(-1))
        return torch.stack(ys, 1)
    if "script-loop-guarded" in loops:
        scripted_guarded_loop = torch.jit.script(scripted_guarded_loop)

    def scripted_nested_loop(deltaA: torch.Tensor, deltaBx: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
        length, half = deltaA.shape[1], deltaA.shape[2] // 2
        outs = []
        for k in range(2):
            a = deltaA[:, :, k * half:(k + 1) * half]
            b = deltaBx[:, :, k * half:(k + 1) * half]
            h = torch.zeros_like(b[:, 0])
            ys = []
            for t in range(length):
                h = a[:, t] * h + b[:, t]
                ys.append((h * C[:, t].unsqueeze(1)).sum(-1))
            outs.append(torch.stack(ys, 1))
        return torch.cat(outs, -1)
    if "script-loop-nested" in loops:
        scripted_nested_loop = torch.jit.script(scripted_nested_loop)

    def scripted_loop_if_first(deltaA: torch.Tensor, deltaBx: torch.Tensor, C: torch.Tensor,
                               h: torch.Tensor) -> torch.Tensor:
        ys = []
        for t in range(deltaA.shape[1]):
            if t == 0:
                h = deltaBx[:, t]
            else:
                h = deltaA[:, t] * h + deltaBx[:, t]
            ys.append((h * C[:, t].unsqueeze(1)).sum(-1))
        return torch.stack(ys, 1)
    if "script-loop-if-first" in loops:
        scripted_loop_if_first = torch.jit.script(scripted_loop_if_first)

    def reset_loop(deltaA: torch.Tensor, deltaBx: torch.Tensor, C: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        length = deltaA.shape[1]
        ys = []
        for t in range(length):
            if t == length // 2:   # a segment boundary: the state restarts
                h = torch.zeros_like(h)
            h = deltaA[:, t] * h + deltaBx[:, t]
            ys.append((h * C[:, t].unsqueeze(1)).sum(-1))
        return torch.stack(ys, 1)
    scripted_reset_loop = torch.jit.script(reset_loop) if "script-loop-reset" in loops else reset_loop

    def scripted_if_directions(deltaA: torch.Tensor, deltaBx: torch.Tensor, C: torch.Tensor,
                               h0: torch.Tensor) -> torch.Tensor:
        length = deltaA.shape[1]
        y = torch.zeros_like(deltaA[:, :, :, 0])
        for k in range(2):
            h = h0
            if k == 0:
                ys = []
                for t in range(length):
                    h = deltaA[:, t] * h + deltaBx[:, t]
                    ys.append((h * C[:, t].unsqueeze(1)).sum(-1))
                y = y + torch.stack(ys, 1)
            else:
                ys = []
                for i in range(length):
                    t = length - 1 - i
                    h = deltaA[:, t] * h + deltaBx[:, t]
                    ys.append((h * C[:, t].unsqueeze(1)).sum(-1))
                y = y + torch.stack(ys, 1).flip(1)
        return y
    if "script-loop-if-directions" in loops:
        scripted_if_directions = torch.jit.script(scripted_if_directions)

    def masked_loop(deltaA: torch.Tensor, deltaBx: torch.Tensor, C: torch.Tensor, h: torch.Tensor, mask: torch.Tensor,
                    negated: bool) -> torch.Tensor:
        ys = []
        for t in range(deltaA.shape[1]):
            if negated:
                h = torch.where(~mask[:, t, None, None], h, deltaA[:, t] * h + deltaBx[:, t])
            else:
                h = torch.where(mask[:, t, None, None], deltaA[:, t] * h + deltaBx[:, t], h)
            ys.append(torch.einsum("bdn,bn->bd", h, C[:, t]))
        return torch.stack(ys, 1)
    scripted_masked_loop = torch.jit.script(masked_loop) if "script-loop-masked" in loops else masked_loop

    def partly_masked_loop(deltaA: torch.Tensor, deltaBx: torch.Tensor, C: torch.Tensor, h: torch.Tensor,
                           mask: torch.Tensor, after_prefix: bool) -> torch.Tensor:
        ys = []
        for t in range(deltaA.shape[1]):
            step = deltaA[:, t] * h + deltaBx[:, t]
            if (t >= 3) == after_prefix:   # the positions that may be padding
                h = torch.where(mask[:, t, None, None], step, h)
            else:
                h = step
            ys.append(torch.einsum("bdn,bn->bd", h, C[:, t]))
        return torch.stack(ys, 1)
    scripted_partly_masked_loop = (torch.jit.script(partly_masked_loop) if "script-loop-masked-after-prefix" in loops
                                   else partly_masked_loop)

    def float_masked_loop(deltaA: torch.Tensor, deltaBx: torch.Tensor, C: torch.Tensor, h: torch.Tensor,
                          mask: torch.Tensor, delta: bool) -> torch.Tensor:
        ys = []
        for t in range(deltaA.shape[1]):
            m = mask[:, t, None, None]
            if delta:
                h = h + m * (deltaA[:, t] * h + deltaBx[:, t] - h)
            else:
                h = m * (deltaA[:, t] * h + deltaBx[:, t]) + (1 - m) * h
            ys.append(torch.einsum("bdn,bn->bd", h, C[:, t]))
        return torch.stack(ys, 1)

    def written_loop(deltaA: torch.Tensor, deltaBx: torch.Tensor, C: torch.Tensor, h: torch.Tensor,
                     index_copy: bool) -> torch.Tensor:
        y = torch.zeros_like(deltaA[:, :, :, 0])
        for t in range(deltaA.shape[1]):
            h = deltaA[:, t] * h + deltaBx[:, t]
            y_t = torch.einsum("bdn,bn->bd", h, C[:, t])
            if index_copy:
                y = y.index_copy(1, torch.tensor([t]), y_t[:, None])
            else:
                y[:, t] = y_t
        return y
    scripted_written_loop = (torch.jit.script(written_loop) if {"script-loop-index-copy", "script-loop-assign"} & set(loops)
                             else written_loop)

    class UserS6(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.in_proj = torch.nn.Linear(d_model, 2 * d_inner)
            self.x_proj = torch.nn.ModuleList(torch.nn.Linear(d_inner, rank + 2 * state, bias=False)
                                              for _ in range(directions))
            self.dt_proj = torch.nn.ModuleList(torch.nn.Linear(rank, d_inner) for _ in range(directions))
            self.A_log = torch.nn.Parameter(torch.log(torch.arange(1, state + 1.0)).repeat(directions, d_inner, 1))
            self.D = torch.nn.Parameter(torch.ones(directions, d_inner))
            self.out_proj = torch.nn.Linear(d_inner, d_model)

        def ssm(self, x, direction: int):
            dt, B, C = self.x_proj[direction](x).split([rank, state, state], dim=-1)
            delta = F.softplus(self.dt_proj[direction](dt))               # (batch, L, d_inner)
            deltaA = torch.exp(delta.unsqueeze(-1) * -torch.exp(self.A_log[direction]))
            deltaBx = delta.unsqueeze(-1) * B.unsqueeze(2) * x.unsqueeze(-1)   # (batch, L, d_inner, N)
            h = x.new_zeros(x.shape[0], d_inner, state)
            loop = loops[direction]
            if loop == "stack":
                ys = []
                for t in range(x.shape[1]):
                    h = deltaA[:, t] * h + deltaBx[:, t]
                    ys.append(torch.einsum("bdn,bn->bd", h, C[:, t]))
                y = torch.stack(ys, dim=1)
            elif loop == "reversed-assign":
                y = torch.zeros_like(x)
                for t in reversed(range(x.shape[1])):
                    h = deltaA[:, t] * h + deltaBx[:, t]
                    y[:, t] = torch.einsum("bdn,bn->bd", h, C[:, t])
            elif loop == "addcmul":
                ys = []
                for t in range(x.shape[1]):
                    h = torch.addcmul(deltaBx[:, t], h, deltaA[:, t])
                    ys.append(torch.bmm(h, C[:, t].unsqueeze(-1)).squeeze(-1))
                y = torch.stack(ys, dim=1)
            elif loop == "assign-every-axis":
                y = torch.zeros_like(x)
                for t in range(x.shape[1]):
                    h = deltaA[:, t] * h + deltaBx[:, t]
                    y[:, t, :] = (h @ C[:, t].unsqueeze(-1)).squeeze(-1)
            elif loop == "split-keepdim":
                ys = []
                for a_t, b_t, c_t in zip(deltaA.split(1, 1), deltaBx.split(1, 1), C.split(1, 1)):
                    h = a_t.squeeze(1) * h + b_t.squeeze(1)
                    ys.append((h * c_t).sum(-1, keepdim=True))   # (batch, d_inner, 1)
                y = torch.cat(ys, -1).transpose(1, 2)
            elif loop == "keep-step-axis":
                h = h.unsqueeze(1)   # (batch, 1, d_inner, N)
                ys = []
                for t in range(x.shape[1]):
                    h = deltaA[:, t:t + 1] * h + deltaBx[:, t:t + 1]
                    ys.append((h * C[:, t:t + 1, None, :]).sum(-1))   # (batch, 1, d_inner)
                y = torch.cat(ys, 1)
            elif loop == "reversed-keep-step-axis":
                h = h.unsqueeze(1)
                ys = []
                for t in reversed(range(x.shape[1])):
                    h = deltaA[:, t:t + 1] * h + deltaBx[:, t:t + 1]
                    ys.append((h * C[:, t:t + 1, None, :]).sum(-1))
                y = torch.cat(ys[::-1], 1)
            elif loop == "reversed-stack":
                ys = []
                for t in reversed(range(x.shape[1])):
                    h = deltaA[:, t] * h + deltaBx[:, t]
                    ys.append(torch.einsum("bdn,bn->bd", h, C[:, t]))
                y = torch.stack(ys[::-1], dim=1)
            elif loop == "states-stack-last":
                hs = []
                for t in range(x.shape[1]):
                    h = deltaA[:, t] * h + deltaBx[:, t]
                    hs.append(h)
                y = torch.einsum("bdnl,bln->bld", torch.stack(hs, dim=-1), C)
            elif loop == "discretise-in-loop":
                A = -torch.exp(self.A_log[direction])   # (d_inner, N)
                ys = []
                for t in range(x.shape[1]):
                    dA = torch.exp(delta[:, t, :, None] * A)
                    dBx = delta[:, t, :, None] * B[:, t, None, :] * x[:, t, :, None]
                    h = dA * h + dBx
                    ys.append(torch.einsum("bdn,bn->bd", h, C[:, t]))
                y = torch.stack(ys, dim=1)
            elif loop in ("script-loop", "script-loop-reversed"):
                y = scripted_loop(deltaA, deltaBx, C, h, loop == "script-loop-reversed")
            elif loop in ("script-loop-states", "script-loop-states-reversed"):
                y, _ = scripted_states_loop(deltaA, deltaBx, C, h, loop.endswith("-reversed"), False)
            elif loop in ("script-loop-both", "script-loop-both-reversed"):
                y, states = scripted_states_loop(deltaA, deltaBx, C, h, loop.endswith("-reversed"), True)
                y = y + states.sum(-1)
            elif loop in ("script-loop-from-one", "script-loop-from-one-reversed"):
                y = scripted_loop_from_one(deltaA, deltaBx, C, loop.endswith("-reversed"))
            elif loop == "script-loop-guarded":
                y = scripted_guarded_loop(deltaA, deltaBx, C, h)
            elif loop == "script-loop-nested":
                y = scripted_nested_loop(deltaA, deltaBx, C)
            elif loop == "script-loop-if-first":
                y = scripted_loop_if_first(deltaA, deltaBx, C, h)
            elif loop == "reset":
                y = reset_loop(deltaA, deltaBx, C, h)
            elif loop == "script-loop-reset":
                y = scripted_reset_loop(deltaA, deltaBx, C, h)
            elif loop == "script-loop-if-directions":
                y = scripted_if_directions(deltaA, deltaBx, C, h)
            elif loop in ("masked", "masked-not", "script-loop-masked"):
                y = scripted_masked_loop(deltaA, deltaBx, C, h, x[:, :, 0] > 0, loop == "masked-not")
            elif loop == "masked-lengths":
                length = x.shape[1]
                lengths = torch.tensor([length, length - 3])[:x.shape[0]]
                y = masked_loop(deltaA, deltaBx, C, h, torch.arange(length)[None] < lengths[:, None], False)
            elif loop in ("masked-after-prefix", "masked-before-rest", "script-loop-masked-after-prefix"):
                y = scripted_partly_masked_loop(deltaA, deltaBx, C, h, x[:, :, 0] > 0, loop != "masked-before-rest")
            elif loop in ("masked-float", "masked-float-delta"):
                y = float_masked_loop(deltaA, deltaBx, C, h, (x[:, :, 0] > 0).to(x.dtype), loop == "masked-float-delta")
            elif loop == "masked-soft":
                y = float_masked_loop(deltaA, deltaBx, C, h, torch.sigmoid(x[:, :, 0]), False)
            elif loop == "masked-lengths-after-prefix":
                length = x.shape[1]
                lengths = torch.tensor([length, length - 3])[:x.shape[0]]
                y = partly_masked_loop(deltaA, deltaBx, C, h, torch.arange(length)[None] < lengths[:, None], True)
            elif loop in ("index-copy", "script-loop-index-copy", "script-loop-assign"):
                y = scripted_written_loop(deltaA, deltaBx, C, h, loop != "script-loop-assign")
            elif loop in ("scan-op", "scan-op-reversed"):
                from torch._higher_order_ops.scan import scan

                def step(h, xs):
                    a_t, b_t, c_t = xs
                    h = a_t * h + b_t
                    return h, (h * c_t[:, None, :]).sum(-1)
                _, y = scan(step, h, (deltaA, deltaBx, C), dim=1, reverse=loop == "scan-op-reversed")
            else:
                ys = []
                for a_t, b_t, c_t in zip(deltaA.unbind(1), deltaBx.unbind(1), C.unbind(1)):
                    h = a_t * h + b_t
                    ys.append((h * c_t[:, None, :]).sum(-1))
                y = torch.stack(ys, dim=1)
            return y + x * self.D[direction]

        def forward(self, u):
            x, z = self.in_proj(u).chunk(2, dim=-1)
            x = F.silu(x)
            return self.out_proj(sum(self.ssm(x, direction) for direction in range(directions)) * F.silu(z))

    sample = torch.randn(batch, length, d_model, generator=torch.Generator().manual_seed(seed))
    return UserS6().eval(), sample


def fork_channels(state: int, length: int, batch: int = 2, d_model: int = 8, seed: int = 0):
    """A 1-D Mamba block whose loop reads out like the fork's d_state > 1 code (grouped Conv over channels)."""
    import torch

    from vmamba_ref.mamba1d import build_mamba1d
    from vmamba_ref.scan import get_scan

    model = build_mamba1d(d_model, state, seed=seed).eval()
    model.scan_fn = get_scan("sequential", readout="conv-channels", index="gather")
    sample = torch.randn(batch, length, d_model, generator=torch.Generator().manual_seed(seed))
    return model, sample


EXPORTS = {e.name: e for e in [
    ExternalExport("hf-mamba-n16", "transformers", "MambaModel, hidden 16, d_state 16, 2 layers, L 12",
                   lambda: hf_mamba(16, 16, 2, 12), scans=2, steps=24),
    # Large decays: |A| (1..16) * sum(dt) reaches ~640 over 20 steps, as a randomly initialised
    # Mamba-130m-shaped model reaches ~1,000 over 32; the chunk24 and batched forms overflow on it.
    ExternalExport("hf-mamba-n16-dt2", "transformers", "MambaModel, hidden 16, d_state 16, 1 layer, L 40, dt ~2",
                   lambda: hf_mamba(16, 16, 1, 40, dt=2.0), scans=1, steps=40, overflows=("seed",)),
    ExternalExport("hf-mamba-n4-b2", "transformers", "MambaModel, hidden 8, d_state 4, 1 layer, L 7, batch 2",
                   lambda: hf_mamba(8, 4, 1, 7, batch=2), scans=1, steps=7),
    # session s19's probe of other transformers models whose slow path is Mamba's per-step loop
    ExternalExport("hf-falcon-mamba-n8", "transformers", "FalconMambaModel, hidden 8, d_state 8, 1 layer, L 8",
                   lambda: hf_hybrid("falcon-mamba", 8, 8, 1, 8), scans=1, steps=8),
    ExternalExport("hf-jamba-n8", "transformers", "JambaModel, hidden 16, d_state 8, 1 Mamba + 1 attention layer, L 8",
                   lambda: hf_hybrid("jamba", 16, 8, 2, 8), scans=1, steps=8),
    ExternalExport("hf-zamba-n4", "transformers", "ZambaModel, hidden 8, d_state 4, 1 Mamba layer of 2 heads, L 8",
                   lambda: hf_hybrid("zamba", 8, 4, 1, 8), scans=2, steps=16),
    ExternalExport("hf-recurrent-gemma", "transformers",
                   "RecurrentGemmaModel, hidden 8, 1 recurrent block, L 8, batch 2 (a ScatterND per step, shaped by "
                   "Shape(Gather(buffer)))", lambda: hf_recurrent_gemma(8, 1, 8, batch=2), scans=1, steps=8,
                   unrolled_by=("seed",)),
    ExternalExport("hf-recurrent-gemma-dynamo", "transformers",
                   "RecurrentGemmaModel, hidden 8, 1 recurrent block, L 8, dynamo exporter (a ScatterElements per step)",
                   lambda: hf_recurrent_gemma(8, 1, 8), scans=1, steps=8, exporter="dynamo", unrolled_by=("seed",)),
    ExternalExport("hf-recurrent-gemma-dynamo-dynamic-batch", "transformers",
                   "hf-recurrent-gemma-dynamo with a dynamic batch (dynamic_shapes): the RG-LRU's zeros buffer of a "
                   "symbolic batch; batch 2", lambda: hf_recurrent_gemma(8, 1, 8, batch=2), scans=1, steps=8,
                   exporter="dynamo", unrolled_by=("seed",), options={"dynamic_batch": True}),
    # session s24: the Mamba2 family's chunked SSD (no per-step loop: 0 scans; five Einsum contractions per layer,
    # einsum-to-matmul's for tpu and cpu; TorchScript writes permute(0, -2, -1, 1) as a negative Transpose perm)
    ExternalExport("hf-mamba2", "transformers", "Mamba2Model, hidden 16, d_state 8, 4 heads of 8, chunk 4, L 8 (chunked "
                   "SSD: no per-step loop; TorchScript's Transpose perm [0, -2, -1, 1])",
                   lambda: hf_mamba2("mamba2"), scans=0, steps=0),
    ExternalExport("hf-mamba2-dynamo", "transformers", "hf-mamba2 through the dynamo exporter",
                   lambda: hf_mamba2("mamba2"), scans=0, steps=0, exporter="dynamo"),
    ExternalExport("hf-zamba2", "transformers", "Zamba2Model, hidden 16, d_state 8, 1 Mamba2 layer of 4 heads, chunk 4, L 8",
                   lambda: hf_mamba2("zamba2"), scans=0, steps=0),
    ExternalExport("hf-zamba2-hybrid", "transformers",
                   "hf-zamba2 and a second, hybrid layer (the shared attention block, then a Mamba2 layer): TorchScript "
                   "writes F.pad's pads and a OneHot through shape arithmetic only data propagation sizes",
                   lambda: hf_mamba2("zamba2-hybrid"), scans=0, steps=0),
    ExternalExport("hf-bamba", "transformers", "BambaModel, hidden 16, d_state 8, 1 Mamba2 layer of 4 heads, chunk 4, L 8",
                   lambda: hf_mamba2("bamba"), scans=0, steps=0),
    ExternalExport("hf-nemotron-h", "transformers",
                   "NemotronHModel, hidden 16, d_state 8, 1 Mamba2 layer of 4 heads, chunk 4, L 8",
                   lambda: hf_mamba2("nemotron-h"), scans=0, steps=0),
    ExternalExport("hf-falcon-h1", "transformers",
                   "FalconH1Model, hidden 16, d_state 8, 1 layer (attention beside a Mamba2 mixer of 4 heads), chunk 4, L 8",
                   lambda: hf_mamba2("falcon-h1"), scans=0, steps=0),
    ExternalExport("hf-granite-moe-hybrid", "transformers",
                   "GraniteMoeHybridModel, hidden 16, d_state 8, 1 Mamba2 layer of 4 heads, chunk 4, L 8",
                   lambda: hf_mamba2("granite-moe-hybrid"), scans=0, steps=0),
    ExternalExport("mambapy-n16", "mambapy", "Mamba (pscan=False), d_model 8, d_state 16, 2 layers, L 10",
                   lambda: mambapy_mamba(8, 16, 2, 10), scans=2, steps=20),
    ExternalExport("fork-channels-n4", "vmamba_ref", "fork's channel-Conv readout, d_state 4, L 9, batch 2",
                   lambda: fork_channels(4, 9), scans=1, steps=9),
    ExternalExport("fork-channels-n16", "vmamba_ref", "fork's channel-Conv readout, d_state 16, L 9, batch 2",
                   lambda: fork_channels(16, 9), scans=1, steps=9),
    # session s21's probe: a backward loop was left unrolled ("decay a_i index jumps to 9 at step 0")
    ExternalExport("user-bidirectional-s6", "torch",
                   "a user's bidirectional S6 block, d_model 8, d_state 4, L 10, batch 2; the backward scan a "
                   "reversed(range(L)) loop writing y[:, t] (a ScatterND per step)",
                   lambda: user_s6(8, 4, 10), scans=2, steps=20),
    ExternalExport("user-s6-unbind", "torch",
                   "a user's S6 block, d_model 8, d_state 4, L 10, batch 2, looping over zip(deltaA.unbind(1), "
                   "deltaBx.unbind(1), C.unbind(1)) (a Split into 10 pieces per tensor)",
                   lambda: user_s6(8, 4, 10, loops=("unbind",)), scans=1, steps=10),
    ExternalExport("user-s6-assign-every-axis", "torch",
                   "a user's S6 block, d_model 8, d_state 4, L 10, batch 2, writing y[:, t, :] = (h @ C_t[..., None])[..., 0] "
                   "(a ScatterND per step over every element's (b, t, d))",
                   lambda: user_s6(8, 4, 10, loops=("assign-every-axis",)), scans=1, steps=10),
    ExternalExport("user-s6-addcmul", "torch",
                   "a user's S6 block, d_model 8, d_state 4, L 10, batch 2, stepping h = torch.addcmul(deltaBx_t, h, "
                   "deltaA_t) (TorchScript: the product times its value=1) with a bmm readout",
                   lambda: user_s6(8, 4, 10, loops=("addcmul",)), scans=1, steps=10),
    # session s27: the loop kept as a loop (an ONNX Loop or Scan), written out by unroll-loops
    ExternalExport("user-bidirectional-s6-script-loop", "torch",
                   "user-bidirectional-s6 with each direction's loop in a torch.jit.script function (an ONNX Loop each, "
                   "readouts appended to a sequence), the backward one stepping t = L - 1 - i and flipping the stack",
                   lambda: user_s6(8, 4, 10, loops=("script-loop", "script-loop-reversed")), scans=2, steps=20,
                   loops_kept_by=("seed",)),
    ExternalExport("user-bidirectional-s6-script-loop-dynamic-batch", "torch",
                   "user-bidirectional-s6-script-loop exported with a dynamic batch: each Loop's trip count Gather(Shape(x), 1), "
                   "the backward loop's length too", lambda: user_s6(8, 4, 10, loops=("script-loop", "script-loop-reversed")),
                   scans=2, steps=20, options={"dynamic_batch": True}, loops_kept_by=("seed",)),
    # session s28: a scripted loop that carries h and appends it too (`hs.append(h)`: a second sequence in the Loop)
    ExternalExport("user-bidirectional-s6-script-loop-states", "torch",
                   "user-bidirectional-s6 with each direction a torch.jit.script loop appending its states (hs.append(h), "
                   "h carried), read out after the loop by torch.einsum('bldn,bln->bld', hs, C)",
                   lambda: user_s6(8, 4, 10, loops=("script-loop-states", "script-loop-states-reversed")), scans=2,
                   steps=20, loops_kept_by=("seed",)),
    ExternalExport("user-bidirectional-s6-script-loop-states-and-readouts", "torch",
                   "user-bidirectional-s6 with each direction a torch.jit.script loop appending both its states and its "
                   "readouts (hs.append(h), ys.append(y)), both returned; the states summed over N added to the readouts",
                   lambda: user_s6(8, 4, 10, loops=("script-loop-both", "script-loop-both-reversed")), scans=2,
                   steps=20, loops_kept_by=("seed",)),
    # a scripted loop from the second position (h = deltaBx[:, 0], ys = [y_0], for t in range(1, length)): its trip count
    # Cast(Ceil(Div(..))) was neither a constant nor a static size before s28, the Loops kept
    ExternalExport("user-bidirectional-s6-script-loop-from-one", "torch",
                   "user-bidirectional-s6 with each direction a torch.jit.script loop from its second position: h = "
                   "deltaBx[:, 0], ys = [y_0], for t in range(1, length) (trip count Cast(Ceil(Div(Cast(10 - 1), 1))))",
                   lambda: user_s6(8, 4, 10, loops=("script-loop-from-one", "script-loop-from-one-reversed")), scans=2,
                   steps=20, loops_kept_by=("seed",)),
    ExternalExport("user-bidirectional-s6-script-loop-from-one-dynamic-batch", "torch",
                   "user-bidirectional-s6-script-loop-from-one exported with a dynamic batch: each trip count computed "
                   "from Gather(Shape(x), 1), the backward direction's first state deltaBx[:, length - 1] (before its "
                   "loop) too",
                   lambda: user_s6(8, 4, 10, loops=("script-loop-from-one", "script-loop-from-one-reversed")), scans=2,
                   steps=20, options={"dynamic_batch": True}, loops_kept_by=("seed",)),
    # session s29: an If of a cond computed from a static size around the Loop (kept with a dynamic batch), and nested
    # Loops; before s29 the If and the outer Loop were left ("its body holds a nested subgraph (Loop ..)"), 0 scans
    ExternalExport("user-s6-script-loop-guarded-dynamic-batch", "torch",
                   "a user's S6 block, d_model 8, d_state 4, L 10, batch 2 (dynamic), its loop a torch.jit.script loop "
                   "inside `if length > 1:` (an If of Cast(Greater(Gather(Shape(deltaA), 1), 1)) around the Loop)",
                   lambda: user_s6(8, 4, 10, loops=("script-loop-guarded",)), scans=1, steps=10,
                   options={"dynamic_batch": True}, loops_kept_by=("seed",)),
    ExternalExport("user-s6-script-loop-nested", "torch",
                   "a user's S6 block, d_model 8, d_state 4, L 10, batch 2, its loop a torch.jit.script `for k in "
                   "range(2):` over the halves of d_inner around `for t in range(length):` (nested ONNX Loops)",
                   lambda: user_s6(8, 4, 10, loops=("script-loop-nested",)), scans=2, steps=20,
                   loops_kept_by=("seed",)),
    ExternalExport("user-s6-script-loop-nested-dynamic-batch", "torch",
                   "user-s6-script-loop-nested exported with a dynamic batch (the inner trip count Gather(Shape(x), 1) "
                   "read in the outer body)", lambda: user_s6(8, 4, 10, loops=("script-loop-nested",)), scans=2,
                   steps=20, options={"dynamic_batch": True}, loops_kept_by=("seed",)),
    # session s30: the first step written inside the loop, an If in the Loop's body; before s30 the Loop was left ("its
    # body holds a nested subgraph (If ..)"), 0 scans
    ExternalExport("user-s6-script-loop-if-first", "torch",
                   "a user's S6 block, d_model 8, d_state 4, L 10, batch 2, its loop a torch.jit.script `for t in "
                   "range(length):` that writes its first step in the loop, `if t == 0: h = deltaBx[:, t]` else the "
                   "recurrence (an If of Equal(t, 0) in the Loop's body)",
                   lambda: user_s6(8, 4, 10, loops=("script-loop-if-first",)), scans=1, steps=10,
                   loops_kept_by=("seed",)),
    ExternalExport("user-s6-script-loop-if-first-dynamic-batch", "torch",
                   "user-s6-script-loop-if-first exported with a dynamic batch (the trip count Gather(Shape(x), 1))",
                   lambda: user_s6(8, 4, 10, loops=("script-loop-if-first",)), scans=1, steps=10,
                   options={"dynamic_batch": True}, loops_kept_by=("seed",)),
    # session s32: a state that restarts inside the loop (segment boundaries); before s32 the two chains it leaves share
    # one stack of readouts and neither was re-rolled ("stacks 10 tensors; expected exactly the 5 step outputs")
    ExternalExport("user-s6-reset", "torch",
                   "a user's S6 block, d_model 8, d_state 4, L 10, batch 2, its loop restarting the state at the "
                   "middle position, `if t == L // 2: h = torch.zeros_like(h)` (two chains, one stack of readouts)",
                   lambda: user_s6(8, 4, 10, loops=("reset",)), scans=2, steps=10),
    ExternalExport("user-s6-script-loop-reset", "torch",
                   "user-s6-reset's loop in a torch.jit.script function (an If of Equal(t, L // 2) in the Loop's body)",
                   lambda: user_s6(8, 4, 10, loops=("script-loop-reset",)), scans=2, steps=10,
                   loops_kept_by=("seed",)),
    ExternalExport("user-s6-script-loop-if-directions", "torch",
                   "a user's S6 block, d_model 8, d_state 4, L 10, batch 2, both scan directions in one "
                   "torch.jit.script loop, `for k in range(2): if k == 0:` forward `else:` backward (a Loop in each "
                   "branch of an If in a Loop's body)", lambda: user_s6(8, 4, 10, loops=("script-loop-if-directions",)), scans=2,
                   steps=20, loops_kept_by=("seed",)),
    # session s33 (gen21): a masked step, h = torch.where(m_t, a_t h + b_t, h) (padding masks): "0 scans found" before s33,
    # no reason
    ExternalExport("user-s6-masked", "torch",
                   "a user's S6 block, d_model 8, d_state 4, L 10, batch 2, its loop a masked step, h = "
                   "torch.where(mask[:, t, None, None], deltaA[:, t] * h + deltaBx[:, t], h), the mask computed from the "
                   "input (x[:, :, 0] > 0)", lambda: user_s6(8, 4, 10, loops=("masked",)), scans=1, steps=10),
    ExternalExport("user-s6-masked-not", "torch",
                   "user-s6-masked written torch.where(~mask[:, t, None, None], h, deltaA[:, t] * h + deltaBx[:, t]) (a "
                   "Not, the step in the Where's else branch)", lambda: user_s6(8, 4, 10, loops=("masked-not",)), scans=1,
                   steps=10),
    ExternalExport("user-s6-script-loop-masked", "torch",
                   "user-s6-masked's loop in a torch.jit.script function (a Where in the Loop's body)",
                   lambda: user_s6(8, 4, 10, loops=("script-loop-masked",)), scans=1, steps=10, loops_kept_by=("seed",)),
    ExternalExport("user-s6-masked-dynamo", "torch", "user-s6-masked through the dynamo exporter",
                   lambda: user_s6(8, 4, 10, loops=("masked",)), scans=1, steps=10, exporter="dynamo"),
    ExternalExport("user-s6-masked-lengths", "torch",
                   "user-s6-masked with the mask of lengths fixed at export, arange(L)[None] < tensor([L, L - 3])[:, None] "
                   "(TorchScript folds it: one bool Constant per step)",
                   lambda: user_s6(8, 4, 10, loops=("masked-lengths",)), scans=1, steps=10),
    # session s34 (gen22): chains mixing masked and plain steps (the mask on some positions only); before s34 only their
    # masked runs (or their plain runs) re-rolled
    ExternalExport("user-s6-masked-after-prefix", "torch",
                   "user-s6-masked whose first 3 positions (a prefix never padded) take the plain step: step = "
                   "deltaA[:, t] * h + deltaBx[:, t]; h = step if t < 3 else torch.where(mask[:, t, None, None], step, h)",
                   lambda: user_s6(8, 4, 10, loops=("masked-after-prefix",)), scans=1, steps=10),
    ExternalExport("user-s6-masked-before-rest", "torch",
                   "user-s6-masked-after-prefix the other way round (left padding of at most 3 positions): torch.where "
                   "for t < 3, the plain step after", lambda: user_s6(8, 4, 10, loops=("masked-before-rest",)), scans=1,
                   steps=10),
    ExternalExport("user-s6-script-loop-masked-after-prefix", "torch",
                   "user-s6-masked-after-prefix's loop in a torch.jit.script function (an If of t >= 3 in the Loop's "
                   "body, a Where in one branch)", lambda: user_s6(8, 4, 10, loops=("script-loop-masked-after-prefix",)),
                   scans=1, steps=10, loops_kept_by=("seed",)),
    ExternalExport("user-s6-masked-after-prefix-dynamo", "torch", "user-s6-masked-after-prefix through the dynamo exporter",
                   lambda: user_s6(8, 4, 10, loops=("masked-after-prefix",)), scans=1, steps=10, exporter="dynamo"),
    ExternalExport("user-s6-masked-lengths-after-prefix", "torch",
                   "user-s6-masked-after-prefix with user-s6-masked-lengths' mask fixed at export (one bool Constant per "
                   "masked step)", lambda: user_s6(8, 4, 10, loops=("masked-lengths-after-prefix",)), scans=1, steps=10),
    # float masks (transformers' padding multiply): "0 scans found" before s34, no reason
    ExternalExport("user-s6-masked-float", "torch",
                   "user-s6-masked with a float mask, m = mask.to(x.dtype)[:, t, None, None]; h = m * (deltaA[:, t] * h + "
                   "deltaBx[:, t]) + (1 - m) * h (a Cast of a bool: read as torch.where)",
                   lambda: user_s6(8, 4, 10, loops=("masked-float",)), scans=1, steps=10),
    ExternalExport("user-s6-masked-float-delta", "torch",
                   "user-s6-masked-float written h = h + m * (deltaA[:, t] * h + deltaBx[:, t] - h)",
                   lambda: user_s6(8, 4, 10, loops=("masked-float-delta",)), scans=1, steps=10),
    ExternalExport("user-s6-masked-float-dynamo", "torch", "user-s6-masked-float through the dynamo exporter",
                   lambda: user_s6(8, 4, 10, loops=("masked-float",)), scans=1, steps=10, exporter="dynamo"),
    ExternalExport("user-s6-masked-soft", "torch",
                   "user-s6-masked-float with a soft mask, m = torch.sigmoid(x[:, :, 0]) (the linear step (m a - (m - 1)) h "
                   "+ m b; seed's chunk24 sums log a_i, not known to be > 0 there: named)",
                   lambda: user_s6(8, 4, 10, loops=("masked-soft",)), scans=1, steps=10, unrolled_by=("seed",)),
    # readouts written by index_copy: TorchScript's ScatterElements indices computed from the buffer's shape were no
    # buffer write before s33 (0 scans); the scripted y[:, t] = y_t (a ScatterND in the Loop's body) re-rolled already
    ExternalExport("user-s6-index-copy", "torch",
                   "a user's S6 block, d_model 8, d_state 4, L 10, batch 2, each readout written y = y.index_copy(1, "
                   "torch.tensor([t]), y_t[:, None]) into a zeros buffer (a ScatterElements per step, its indices "
                   "Expand(t, a shape computed from Shape(y)))", lambda: user_s6(8, 4, 10, loops=("index-copy",)),
                   scans=1, steps=10),
    ExternalExport("user-s6-script-loop-index-copy", "torch",
                   "user-s6-index-copy's loop in a torch.jit.script function (a ScatterElements in the Loop's body)",
                   lambda: user_s6(8, 4, 10, loops=("script-loop-index-copy",)), scans=1, steps=10,
                   loops_kept_by=("seed",)),
    ExternalExport("user-s6-script-loop-assign", "torch",
                   "a user's S6 block, d_model 8, d_state 4, L 10, batch 2, a torch.jit.script loop writing y[:, t] = y_t "
                   "(a ScatterND in the Loop's body)", lambda: user_s6(8, 4, 10, loops=("script-loop-assign",)), scans=1,
                   steps=10, loops_kept_by=("seed",)),
    ExternalExport("user-bidirectional-s6-scan-op-dynamo", "torch",
                   "user-bidirectional-s6 with each direction as torch's scan higher-order op (reverse=True backward), "
                   "through the dynamo exporter (an ONNX Scan each)",
                   lambda: user_s6(8, 4, 10, loops=("scan-op", "scan-op-reversed")), scans=2, steps=20,
                   exporter="dynamo", loops_kept_by=("seed",)),
    # session s22: export options users give
    ExternalExport("user-bidirectional-s6-no-folding", "torch",
                   "user-bidirectional-s6 exported with do_constant_folding=False (the first write's update expanded to "
                   "Shape(a constant), the later ones to Shapes of the buffer)",
                   lambda: user_s6(8, 4, 10), scans=2, steps=20, options={"do_constant_folding": False}),
    ExternalExport("hf-mamba-n4-b2-dynamic-batch", "transformers",
                   "hf-mamba-n4-b2 exported with a dynamic batch (dynamic_axes): its views' Reshape targets computed "
                   "from Shapes", lambda: hf_mamba(8, 4, 1, 7, batch=2), scans=1, steps=7,
                   options={"dynamic_batch": True}),
    ExternalExport("user-s6-split-keepdim", "torch",
                   "a user's S6 block, d_model 8, d_state 4, L 10, batch 2, looping over zip(deltaA.split(1, 1), ..) "
                   "with keepdim readouts (h * c).sum(-1, keepdim=True) joined by torch.cat(ys, -1)",
                   lambda: user_s6(8, 4, 10, loops=("split-keepdim",)), scans=1, steps=10),
    ExternalExport("user-s6-split-keepdim-dynamo", "torch", "user-s6-split-keepdim through the dynamo exporter",
                   lambda: user_s6(8, 4, 10, loops=("split-keepdim",)), scans=1, steps=10, exporter="dynamo"),
    ExternalExport("user-s6-keep-step-axis", "torch",
                   "a user's S6 block, d_model 8, d_state 4, L 10, batch 2, stepping h = deltaA[:, t:t+1] * h + "
                   "deltaBx[:, t:t+1] (h (batch, 1, d_inner, N): Slices that keep the step axis), readouts torch.cat-ed "
                   "along it", lambda: user_s6(8, 4, 10, loops=("keep-step-axis",)), scans=1, steps=10),
    ExternalExport("user-s6-keep-step-axis-dynamo", "torch", "user-s6-keep-step-axis through the dynamo exporter",
                   lambda: user_s6(8, 4, 10, loops=("keep-step-axis",)), scans=1, steps=10, exporter="dynamo"),
    ExternalExport("user-bidirectional-s6-dynamo", "torch", "user-bidirectional-s6 through the dynamo exporter",
                   lambda: user_s6(8, 4, 10), scans=2, steps=20, exporter="dynamo"),
    ExternalExport("user-bidirectional-s6-dynamo-dynamic-batch", "torch",
                   "user-bidirectional-s6 through the dynamo exporter with a dynamic batch (dynamic_shapes): the "
                   "backward scan's writes ScatterElements into a zeros buffer of a symbolic batch",
                   lambda: user_s6(8, 4, 10), scans=2, steps=20, exporter="dynamo", options={"dynamic_batch": True}),
    # session s23: a dynamic batch through TorchScript, a backward loop keeping the step axis
    ExternalExport("user-bidirectional-s6-dynamic-batch", "torch",
                   "user-bidirectional-s6 with a dynamic batch (dynamic_axes): the backward scan's y[:, t] = .. a ScatterND "
                   "whose index tuples are built from Range(Shape(buffer)[0])", lambda: user_s6(8, 4, 10), scans=2,
                   steps=20, options={"dynamic_batch": True}),
    ExternalExport("user-s6-reversed-keep-step-axis-dynamic-batch", "torch",
                   "a user's S6 block, d_model 8, d_state 4, L 10, batch 2, stepping h = deltaA[:, t:t+1] * h + "
                   "deltaBx[:, t:t+1] for t in reversed(range(L)), readouts torch.cat(ys[::-1], 1); dynamic batch",
                   lambda: user_s6(8, 4, 10, loops=("reversed-keep-step-axis",)), scans=1, steps=10,
                   options={"dynamic_batch": True}),
    ExternalExport("user-s6-reversed-keep-step-axis-dynamo-dynamic-batch", "torch",
                   "user-s6-reversed-keep-step-axis-dynamic-batch through the dynamo exporter",
                   lambda: user_s6(8, 4, 10, loops=("reversed-keep-step-axis",)), scans=1, steps=10, exporter="dynamo",
                   options={"dynamic_batch": True}),
    ExternalExport("hf-recurrent-gemma-dynamic-batch", "transformers",
                   "hf-recurrent-gemma with a dynamic batch (dynamic_axes): a ScatterND per step whose index tuples are "
                   "built from Range(Shape(buffer)[0]), the buffer zeros_like the causal Conv's output cut to the "
                   "sequence length", lambda: hf_recurrent_gemma(8, 1, 8, batch=2), scans=1, steps=8,
                   unrolled_by=("seed",), options={"dynamic_batch": True}),
    ExternalExport("user-s6-reversed-keep-step-axis-dynamic-batch-no-folding", "torch",
                   "user-s6-reversed-keep-step-axis-dynamic-batch exported with do_constant_folding=False (each Slice "
                   "bound Unsqueeze(Constant t))", lambda: user_s6(8, 4, 10, loops=("reversed-keep-step-axis",)),
                   scans=1, steps=10, options={"dynamic_batch": True, "do_constant_folding": False}),
    ExternalExport("user-s6-assign-every-axis-dynamic-batch", "torch",
                   "user-s6-assign-every-axis with a dynamic batch (dynamic_axes): the ScatterND's index tuples (b, t, d) "
                   "built from a Range per axis", lambda: user_s6(8, 4, 10, loops=("assign-every-axis",)), scans=1,
                   steps=10, options={"dynamic_batch": True}),
    ExternalExport("user-s6-reversed-stack", "torch",
                   "a user's S6 block, d_model 8, d_state 4, L 10, batch 2, for t in reversed(range(L)), readouts "
                   "torch.stack(ys[::-1], 1)", lambda: user_s6(8, 4, 10, loops=("reversed-stack",)), scans=1, steps=10),
    ExternalExport("user-s6-states-stack-last", "torch",
                   "a user's S6 block, d_model 8, d_state 4, L 10, batch 2, the states stacked last (torch.stack(hs, -1)) "
                   "and read out after the loop by torch.einsum('bdnl,bln->bld', hs, C)",
                   lambda: user_s6(8, 4, 10, loops=("states-stack-last",)), scans=1, steps=10),
    ExternalExport("user-s6-states-stack-last-dynamo", "torch", "user-s6-states-stack-last through the dynamo exporter",
                   lambda: user_s6(8, 4, 10, loops=("states-stack-last",)), scans=1, steps=10, exporter="dynamo"),
    ExternalExport("user-s6-discretise-in-loop", "torch",
                   "a user's S6 block, d_model 8, d_state 4, L 10, batch 2, discretising inside the loop: dA = "
                   "torch.exp(delta[:, t, :, None] * A), dBx = delta[:, t, :, None] * B[:, t, None, :] * x[:, t, :, None]",
                   lambda: user_s6(8, 4, 10, loops=("discretise-in-loop",)), scans=1, steps=10),
    ExternalExport("user-s6-discretise-in-loop-dynamo", "torch", "user-s6-discretise-in-loop through the dynamo exporter",
                   lambda: user_s6(8, 4, 10, loops=("discretise-in-loop",)), scans=1, steps=10, exporter="dynamo"),
    ExternalExport("hf-mamba-n4-b2-dynamo", "transformers", "hf-mamba-n4-b2 through the dynamo exporter",
                   lambda: hf_mamba(8, 4, 1, 7, batch=2), scans=1, steps=7, exporter="dynamo"),
    ExternalExport("mambapy-n16-dynamo", "mambapy", "mambapy-n16 through the dynamo exporter",
                   lambda: mambapy_mamba(8, 16, 2, 10), scans=2, steps=20, exporter="dynamo"),
    # ONNX Runtime rounds the float16 graph otherwise than PyTorch: the naive export itself is rel L2
    # ~8e-5 from the library's output (the compiled one ~6e-8 from the naive).
    ExternalExport("hf-mamba-n4-b2-f16", "transformers", "hf-mamba-n4-b2 as model.half()",
                   lambda: hf_mamba(8, 4, 1, 7, batch=2), scans=1, steps=7, dtype="float16", tolerance=1e-4),
    ExternalExport("hf-mamba-n4-b2-f64", "transformers", "hf-mamba-n4-b2 as model.double()",
                   lambda: hf_mamba(8, 4, 1, 7, batch=2), scans=1, steps=7, dtype="float64",
                   runs_in_onnxruntime=False),
    # session s35 (gen23): transformers' linear-attention models, left unrolled with a reason (scans 0); s36 (gen24):
    # RWKV's num and den chains re-rolled (its running maximum a max-plus scan), seed's chunk24 refusing them by name
    ExternalExport("hf-rwkv", "transformers",
                   "RwkvModel, hidden 16, 2 layers, L 8: rwkv_linear_attention_cpu, num/den states rescaled by a running "
                   "maximum", lambda: hf_linear_attention("rwkv"), scans=4, steps=28, unrolled_by=("seed",)),
    ExternalExport("hf-rwkv-dynamo", "transformers", "hf-rwkv through the dynamo exporter",
                   lambda: hf_linear_attention("rwkv"), scans=4, steps=28, exporter="dynamo", unrolled_by=("seed",)),
    ExternalExport("hf-xlstm", "transformers",
                   "xLSTMModel, hidden 16, 1 layer of 2 heads, L 8 (below its smallest chunk, 16): the mLSTM's per-step "
                   "loop, a matrix state with an exponential input gate stabilised by a running maximum",
                   lambda: hf_linear_attention("xlstm"), scans=0, steps=0),
    ExternalExport("hf-xlstm-dynamo", "transformers", "hf-xlstm through the dynamo exporter",
                   lambda: hf_linear_attention("xlstm"), scans=0, steps=0, exporter="dynamo"),
    ExternalExport("hf-minimax", "transformers",
                   "MiniMaxModel, hidden 16, 1 lightning-attention layer of 2 heads, block 4, L 32: a loop over 8 blocks "
                   "carrying a (head_dim, head_dim) state times a per-head decay", lambda: hf_linear_attention(
                       "minimax", length=32), scans=0, steps=0),
    ExternalExport("hf-qwen3-next-dynamo", "transformers",
                   "Qwen3NextModel, hidden 16, 1 linear-attention layer, L 8, dynamo exporter (TorchScript has no "
                   "linalg_solve_triangular): torch_chunk_gated_delta_rule, one chunk of 64", lambda: hf_linear_attention(
                       "qwen3-next"), scans=0, steps=0, exporter="dynamo"),
    # session s36 (gen25): vision Mamba blocks whose scans visit the pixels in other orders (tools/vision_scans.py);
    # each re-rolled as it came, every scan, the order a Gather, Transpose or strided Slice outside the chain
    ExternalExport("vision-plainmamba-zigzag-n4", "torch",
                   "PlainMamba-style block, 4 x 4 plane, d_inner 8, d_state 4, batch 2: four zig-zag (snake) orders, "
                   "rows or columns alternately reversed, each also run backwards, as constant index Gathers of the "
                   "flattened plane, gathered back by the inverse permutation",
                   lambda: vision_mamba("zigzag", state=4), scans=4, steps=64),
    ExternalExport("vision-plainmamba-zigzag-n4-dynamo", "torch",
                   "vision-plainmamba-zigzag-n4 through the dynamo exporter (the inverse permutation's argsort a TopK "
                   "of a constant, kept in the graph)", lambda: vision_mamba("zigzag", state=4), scans=4, steps=64,
                   exporter="dynamo"),
    ExternalExport("vision-localmamba-windows-n1", "torch",
                   "LocalMamba-style block, 4 x 4 plane, d_inner 8, d_state 1, batch 2: the global row-major order and "
                   "2 x 2 windows (view + permute + reshape), each also flipped", lambda: vision_mamba("windows"),
                   scans=4, steps=64),
    ExternalExport("vision-localmamba-windows-n1-dynamic-batch", "torch",
                   "vision-localmamba-windows-n1 with a dynamic batch (dynamic_axes)", lambda: vision_mamba("windows"),
                   scans=4, steps=64, options={"dynamic_batch": True}),
    ExternalExport("vision-efficientvmamba-atrous-n1", "torch",
                   "EfficientVMamba-style block, 6 x 6 plane, d_inner 8, d_state 1, batch 2: 4 stride-2 sub-planes "
                   "(x[:, :, i::2, j::2]) of 9 steps each, scanned row- or column-major, forwards or backwards, written "
                   "back by strided assignment (ScatterND)", lambda: vision_mamba("atrous", height=6, width=6),
                   scans=4, steps=36),
    ExternalExport("vision-vim-middle-cls-n16", "torch",
                   "Vim-style model, 8 x 8 image in 2 x 2 patches, a class token in the middle (17 tokens), one "
                   "bidirectional Mamba layer (d_inner 8, d_state 16, dt rank 2, a causal conv1d per direction, the "
                   "backward one on the flipped sequence, flipped back), the middle token's head, batch 2",
                   lambda: vision_mamba("vim", state=16, height=8, width=8), scans=2, steps=34),
    ExternalExport("vision-vim-middle-cls-n16-dynamic-batch", "torch",
                   "vision-vim-middle-cls-n16 with a dynamic batch (dynamic_axes)",
                   lambda: vision_mamba("vim", state=16, height=8, width=8), scans=2, steps=34,
                   options={"dynamic_batch": True}),
    ExternalExport("vision-mambavision-mixer-n4", "torch",
                   "MambaVision-style mixer over a 4 x 4 plane's tokens, d_inner 8, d_state 4, batch 2: a selective "
                   "scan on half the channels, a conv1d + SiLU branch on the other half, concatenated",
                   lambda: vision_mamba("mambavision", state=4), scans=1, steps=16),
]}


# Export options a user may give (ExternalExport.options): `dynamic_batch` (TorchScript `dynamic_axes`, dynamo
# `dynamic_shapes`: the input's and output's axis 0 symbolic) and `do_constant_folding` (TorchScript; True unless
# given).
EXPORT_OPTIONS = frozenset({"dynamic_batch", "do_constant_folding"})


def export_module(module, sample, path: str | Path, opset: int = 17, exporter: str = "torchscript",
                  dtype: str = "float32", options: dict | None = None) -> tuple[Path, Path]:
    """Export of module(sample) to `path` (TorchScript, or dynamo at opset 18), and the module's own output
    to `<stem>.ref.npz`; `dtype`: module and float sample converted first; `options`: EXPORT_OPTIONS."""
    import torch

    options = dict(options or {})
    unknown = set(options) - EXPORT_OPTIONS
    if unknown:
        raise ValueError(f"unknown export options {sorted(unknown)} (known: {', '.join(sorted(EXPORT_OPTIONS))})")
    extra = {}
    if options.get("dynamic_batch"):
        if exporter == "dynamo":
            extra["dynamic_shapes"] = ({0: torch.export.Dim("batch")},)
        else:
            extra["dynamic_axes"] = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}

    from vmamba_ref.export import ref_path_for
    from passes.files import atomic_targets

    path = Path(path)
    if dtype != "float32":
        module = module.to(getattr(torch, dtype))
        sample = sample.to(getattr(torch, dtype)) if sample.is_floating_point() else sample
    if exporter == "dynamo":
        opset = max(opset, 18)   # the dynamo exporter writes opset 18 and up
    with torch.no_grad():
        expected = module(sample).numpy()
    with atomic_targets(path, ref_path_for(path), suffixes=(".onnx.tmp", ".npz.tmp")) as (tmp_onnx, tmp_npz):
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (sample,), str(tmp_onnx), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              opset_version=opset, do_constant_folding=options.get("do_constant_folding", True),
                              dynamo=exporter == "dynamo", **extra)
        with open(tmp_npz, "wb") as f:
            np.savez(f, **{INPUT_NAME: sample.numpy(), OUTPUT_NAME: expected})
    return path, ref_path_for(path)


def export(entry: ExternalExport, path: str | Path, opset: int = 17) -> tuple[Path, Path]:
    """Export `entry` to `path` and the library's own output to `<stem>.ref.npz`."""
    module, sample = entry.build()
    return export_module(module, sample, path, opset, entry.exporter, entry.dtype, entry.options)


def check(entry: ExternalExport, folder: Path, pipelines=("seed", "cpu", "tpu")) -> int:
    """Export, then compile with each pipeline (verified against the library's output); 0 when all pass."""
    from pipelines import CompileError, VerificationFailed, compile_model

    naive, _ = export(entry, folder / f"{entry.name}.onnx")
    status = 0
    for pipeline in pipelines:
        print(f"== {entry.name} ({entry.codebase} {entry.version}) --pipeline {pipeline}", flush=True)
        try:
            result = compile_model(naive, pipeline, output=folder / f"{entry.name}.{pipeline}.onnx",
                                   tolerance=entry.tolerance, verify="end" if entry.runs_in_onnxruntime else "none")
        except CompileError as error:
            if pipeline in entry.overflows and isinstance(error, VerificationFailed):
                print(f"expected (its scan form overflows here by design): {error}", flush=True)
                continue
            print(f"error: {error}", flush=True)
            status = status or error.exit_code
            continue
        checked = (f"rel L2 {result.verification['rel_l2']:.3g}" if result.verification
                   else "not verified (ONNX Runtime cannot run it)")
        unrolled = " (its scan form refuses these decays: left unrolled, by design)" if pipeline in entry.unrolled_by else ""
        print(f"{result.nodes_before:,} -> {result.nodes_after:,} nodes, {checked}{unrolled}", flush=True)
    return status


def main(argv=None) -> int:
    ap = OneLineArgumentParser(prog="python -m tools.external_exports", description=__doc__.split("\n\n")[0])
    ap.add_argument("name", nargs="?", choices=sorted(EXPORTS))
    ap.add_argument("-o", "--output", type=Path, help="where to write the export (and its .ref.npz)")
    ap.add_argument("--check", action="store_true", help="export to a temporary folder and compile with every pipeline")
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args(argv)
    if args.list or args.name is None:
        for entry in EXPORTS.values():
            print(f"{entry.name:20s} {entry.codebase} {entry.version}: {entry.description}")
        return 0
    entry = EXPORTS[args.name]
    if args.check:
        with tempfile.TemporaryDirectory() as folder:
            return check(entry, Path(folder))
    if args.output is None:
        ap.error("give -o OUTPUT or --check")
    from passes.files import check_destination
    from passes.one_line import one_line, printable
    from vmamba_ref.export import ref_path_for

    try:   # before building the model (a folder or /dev/null at -o was a traceback after it)
        check_destination(args.output)
        check_destination(ref_path_for(args.output), "reference output")
        naive, ref = export(entry, args.output)
    except OSError as error:   # DestinationError included: the folder may change during the export
        sys.stderr.write(f"error: {one_line(error)}\n")
        return 2
    print(f"wrote {printable(naive)} and {printable(ref)}")
    return 0


if __name__ == "__main__":
    from passes.interrupts import run_command_line
    sys.exit(run_command_line(main))
