"""The method interface: what the engine tells a compression method and asks of it.

The engine calls, per video:

1. ``begin(plan)`` once before prefill, with the chunk layout, the global keep ratio and
   the video's visual embeddings (for temporal allocation / frame redundancy); a method that
   prunes before the language model sets ``plan.input_keep`` (and ``plan.input_updates`` for
   merged tokens) here;
   a *two-pass* method (``scoring_pass``) is then shown a scoring pass: for each of its
   ``scoring_groups(plan)`` the engine runs ``[group ; guide]`` over the prefix alone (nothing
   of other groups, all of it discarded after), calls ``observe(view)`` with ``view.group`` set
   in every layer up to ``scoring_layers`` (the rest of the forward is skipped unless
   ``scoring_logits``), then ``score_group(group, logits)`` (returning False ends the scoring
   pass early); then ``end_scoring()``, which sets ``plan.input_keep`` for the answer pass;
2. for each chunk, while the chunk (plus the guide, if ``uses_guide``) passes the model,
   ``observe(view)`` in every layer: ``view`` exposes that layer's post-RoPE queries and
   keys of the current input and helpers for the usual scores;
3. after the chunk has passed all layers, ``select(chunk)``: per layer, what to keep of the
   chunk: ``None`` (everything), a sorted index tensor of chunk tokens, or a
   :class:`LayerKeep` (an index plus merged replacement KV and/or extra KV entries, for
   methods that merge or recycle evicted tokens). The engine then drops the guide's entries
   and compresses the cache.

A method declares ``question_aware`` (whether anything it computes reads the question): in
question mode ``unknown`` the engine shows every guided method the *proxy* guide instead (the
chat template's tokens after the video, built with an empty question), and the compressed
video then serves all of its questions (``Engine.prefill_video`` / ``Engine.answer``).

A method never calls the engine and knows no model family.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, ClassVar

import torch


@dataclass(frozen=True)
class ChunkSpan:
    """Chunk ``index`` covers grid steps ``[step_start, step_end)``, i.e. video tokens
    ``[token_start, token_end)`` (offsets inside the video span)."""

    index: int
    step_start: int
    step_end: int
    token_start: int
    token_end: int

    @property
    def num_tokens(self) -> int:
        return self.token_end - self.token_start


@dataclass
class VideoPlan:
    """What a method knows before prefill.

    features: input embeddings of the video span ``[N_v, hidden]`` (LLM space, after the
        merger); where the family interleaves text with the grid tokens (Qwen3-VL's
        timestamps), those tokens' text embeddings are in place and ``visual_mask`` says which
        tokens are visual. Every span token, text or not, may be dropped like any other.
    step_token_offsets: ``[num_steps + 1]`` token offset of each grid step.
    tokens_per_step: grid (visual) tokens per step.
    keep_ratio: global video keep ratio r = min(1, (max_context - text) / N_v) (docs/architecture.md, "Budget").
    input_keep: set by a method in ``begin`` (or ``end_scoring``) to drop video tokens before
        prefill: bool ``[N_v]``; dropped tokens are never fed, kept ones keep their positions,
        and a chunk's ``select`` indices then refer to its fed tokens only
        (``ChunkSpan.num_tokens`` stays the chunk's full size; ``LayerView.num_chunk`` is what
        was fed).
    input_updates: ``(index [m] sorted span offsets, embeds [m, hidden])``: the input
        embeddings those tokens are fed with instead of their own (merged tokens); ``features``
        itself is never modified (it may be shared by the questions of a video).
    visual_mask: bool ``[N_v]``, True at grid tokens, for families with interleaved text;
        None: a step's grid tokens are its first ``tokens_per_step`` tokens.
    frames_per_step: video frames per grid step (2 for Qwen's temporal patches, 1 for LLaVA).
    token_grid: ``(rows, cols)`` of a step's grid tokens (``grid_index`` row p is row-major).
    """

    num_layers: int
    chunks: list[ChunkSpan]
    keep_ratio: float
    max_context: int
    num_video_tokens: int
    num_text_tokens: int
    tokens_per_step: int
    step_token_offsets: list[int]
    features: torch.Tensor
    input_keep: torch.Tensor | None = None
    visual_mask: torch.Tensor | None = None
    input_updates: tuple[torch.Tensor, torch.Tensor] | None = None
    frames_per_step: int = 1
    token_grid: tuple[int, int] | None = None  # (rows, cols) of a step's grid tokens, row-major

    def fed(self, chunk: ChunkSpan) -> int:
        """Tokens of ``chunk`` that are fed to the model."""
        if self.input_keep is None:
            return chunk.num_tokens
        return int(self.input_keep[chunk.token_start : chunk.token_end].sum())

    def grid_index(self) -> torch.Tensor:
        """Span offsets of every step's grid tokens, ``[num_steps, tokens_per_step]`` (row-major
        over the merged frame grid): token p of step t is ``features[grid_index()[t, p]]``."""
        off = self.step_token_offsets
        if self.visual_mask is None:
            return torch.tensor(off[:-1])[:, None] + torch.arange(self.tokens_per_step)
        return self.visual_mask.nonzero().squeeze(1).reshape(len(off) - 1, self.tokens_per_step)

    def step_features(self, block: int = 64) -> torch.Tensor:
        """Mean grid token of every step, ``[num_steps, hidden]`` fp32: interleaved text
        (Qwen3-VL's timestamps) and LLaVA's trailing newline token are not frame content and
        are left out. Computed ``block`` steps at a time (no fp32 copy of the whole video)."""
        idx = self.grid_index().to(self.features.device)
        out = torch.empty(idx.shape[0], self.features.shape[-1], dtype=torch.float32, device=self.features.device)
        for a in range(0, idx.shape[0], block):
            out[a : a + block] = self.features[idx[a : a + block]].float().mean(1)
        return out

    def token_distances(self, block: int = 64) -> torch.Tensor:
        """``d [num_steps, tokens_per_step]`` on CPU: ``1 - cos`` of each grid token with the
        same grid position one step earlier (``d[0] = 1``), ``block`` steps at a time."""
        idx = self.grid_index().to(self.features.device)
        d = torch.ones(idx.shape, dtype=torch.float32)
        for a in range(1, idx.shape[0], block):
            d[a : a + block] = adjacent_distances(self.features[idx[a - 1 : a + block]]).cpu()
        return d


def adjacent_distances(x: torch.Tensor) -> torch.Tensor:
    """``1 - cos(x[t], x[t-1])`` for t >= 1 along dim 0, cosine over the last dim:
    ``[T, ..., D] -> [T - 1, ...]``."""
    return 1 - torch.nn.functional.cosine_similarity(x[1:].float(), x[:-1].float(), dim=-1)


@dataclass(frozen=True)
class ScoringGroup:
    """One group of a two-pass method's scoring pass: ``index`` and the span offsets of its
    tokens ``[n]`` (ascending; any subset of the video, e.g. every G-th grid step)."""

    index: int
    tokens: torch.Tensor

    @property
    def num_tokens(self) -> int:
        return int(self.tokens.numel())


def step_groups(plan: "VideoPlan", steps_per_group: int, strided: bool = False) -> list[ScoringGroup]:
    """Scoring groups of whole grid steps: ``G = ceil(steps / steps_per_group)`` groups of
    consecutive steps, or (``strided``) group g = steps g, g + G, g + 2G, ... (every group then
    spans the whole video). A step's tokens are all of its span tokens."""
    off = plan.step_token_offsets
    n_steps = len(off) - 1
    G = max(1, -(-n_steps // max(1, steps_per_group)))
    if strided:
        members = [list(range(g, n_steps, G)) for g in range(G)]
    else:
        members = [list(range(a, min(n_steps, a + steps_per_group))) for a in range(0, n_steps, steps_per_group)]
    groups = []
    for g, steps in enumerate(members):
        idx = torch.cat([torch.arange(off[s], off[s + 1]) for s in steps]) if steps else torch.zeros(0, dtype=torch.long)
        groups.append(ScoringGroup(g, idx))
    return groups


@dataclass
class LayerView:
    """One layer's view of the current input (chunk tokens, then guide tokens).

    query: ``[H, n + g, d]`` post-RoPE queries of the input.
    key, value: ``[H_kv, k, d]`` the layer's whole cache including the input (last n + g).
    positions: ``[R, n + g]`` position ids of the input (chunk tokens, then the shifted guide).
    rope(): cos, sin ``[n + g, d]``, the rotation applied to the input's queries and keys.
    heads: ``(head_lengths, ragged_end)`` when the layer keeps a different set per KV head
        (``engine.cache``): head h holds entries ``[0, head_lengths[h])`` of the first
        ``ragged_end``, the rest of those rows is padding. The attention helpers below hide the
        padding; a method reading ``key`` directly must too (:meth:`key_mask`).
    """

    layer: int
    chunk: ChunkSpan
    query: torch.Tensor
    key: torch.Tensor
    value: torch.Tensor
    num_chunk: int
    num_guide: int
    scaling: float
    positions: torch.Tensor
    rope: Callable[[], tuple[torch.Tensor, torch.Tensor]]
    group: ScoringGroup | None = None  # set in a two-pass method's scoring pass (``chunk`` is None then)
    video_start: int = 0  # cache entries before the video (the prefix); the video's follow them
    heads: tuple[list[int], int] | None = None

    def key_mask(self) -> torch.Tensor | None:
        """bool ``[H_kv, K]``: True where a KV head holds the entry (None: every head holds all)."""
        if self.heads is None:
            return None
        lengths, end = self.heads
        j = torch.arange(self.key.shape[1], device=self.key.device)
        return (j[None, :] < torch.tensor(lengths, device=self.key.device)[:, None]) | (j[None, :] >= end)

    def _hide_padding(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits [H, q, K]`` over the whole cache with a ragged layer's padding at -inf."""
        mask = self.key_mask()
        if mask is not None and logits.shape[-1] == mask.shape[1]:
            H_kv = mask.shape[0]
            logits.view(H_kv, -1, logits.shape[-1]).masked_fill_(~mask[:, None, :], float("-inf"))
        return logits

    def head_video_keys(self, head: int) -> torch.Tensor:
        """``[m_h + n, d]``: the video entries KV head ``head`` held before this chunk, then the chunk's."""
        return self._head_video(self.key, head)

    def head_video_values(self, head: int) -> torch.Tensor:
        return self._head_video(self.value, head)

    def _head_video(self, x: torch.Tensor, head: int) -> torch.Tensor:
        held = self.heads[0][head] if self.heads is not None else self.cache_len
        return torch.cat([x[head, self.video_start : held], x[head, self.cache_len : self.cache_len + self.num_chunk]])

    @property
    def num_video_held(self) -> int:
        """Video entries the layer held before this chunk (what earlier chunks left)."""
        return self.cache_len - self.video_start

    @property
    def video_keys(self) -> torch.Tensor:
        """``[H_kv, m + n, d]``: the video entries held before this chunk, then the chunk's
        (every head the same entries; per head: :meth:`head_video_keys`)."""
        self._dense("video_keys")
        return self.key[:, self.video_start : self.cache_len + self.num_chunk]

    @property
    def video_values(self) -> torch.Tensor:
        self._dense("video_values")
        return self.value[:, self.video_start : self.cache_len + self.num_chunk]

    def _dense(self, what: str) -> None:
        if self.heads is not None:
            raise RuntimeError(f"{what}: this layer keeps a different set per KV head; read head_video_keys(h)")

    @property
    def cache_len(self) -> int:
        """Entries held before this chunk."""
        return self.key.shape[-2] - self.num_chunk - self.num_guide

    @property
    def chunk_keys(self) -> torch.Tensor:
        return self.key[:, self.cache_len : self.cache_len + self.num_chunk]

    @property
    def chunk_values(self) -> torch.Tensor:
        return self.value[:, self.cache_len : self.cache_len + self.num_chunk]

    @property
    def chunk_queries(self) -> torch.Tensor:
        return self.query[:, : self.num_chunk]

    @property
    def guide_queries(self) -> torch.Tensor:
        return self.query[:, self.num_chunk :]

    def logits(self, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """``q k^T * scaling`` in fp32 (fp64 for fp64 inputs), grouped-query aware without repeating the keys: a KV
        head's ``rep`` query heads are stacked along the queries (query head h reads KV head
        ``h // rep``, ``repeat_interleave``'s order). queries ``[H, q, d]``, keys
        ``[H_kv, k, d]`` -> ``[H, q, k]``."""
        H, nq, d = queries.shape
        H_kv, nk = keys.shape[0], keys.shape[1]
        dt = torch.promote_types(queries.dtype, torch.float32)  # fp32 (fp64 inputs stay fp64: the tests' oracles)
        x = torch.matmul(queries.to(dt).reshape(H_kv, (H // H_kv) * nq, d), keys.to(dt).transpose(-1, -2))
        return x.mul_(self.scaling).view(H, nq, nk)

    def attention(self, queries: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """softmax(q k^T * scaling) over the given keys, grouped-query aware, fp32.
        queries ``[H, q, d]``, keys ``[H_kv, k, d]`` -> ``[H, q, k]``; ``mask`` (bool
        ``[q, k]``, True = visible) hides keys before the softmax."""
        logits = self._hide_padding(self.logits(queries, keys))
        if mask is not None:
            logits.masked_fill_(~mask, float("-inf"))
        return torch.softmax(logits, dim=-1)

    def causal_attention(self, start: int, stop: int, queries: torch.Tensor | None = None, keys: torch.Tensor | None = None) -> torch.Tensor:
        """Attention of queries ``[start, stop)`` of ``queries`` (default the input's) over
        ``keys`` (default the layer's whole cache), aligned at the bottom right as the model
        computes it: query i of q sees key j iff ``j <= k - q + i``. Only the keys from
        ``k - q + start`` on can be hidden, so only those columns are masked. ``[H, b, k]``."""
        queries = self.query if queries is None else queries
        keys = self.key if keys is None else keys
        nq, nk = queries.shape[1], keys.shape[1]
        x = self._hide_padding(self.logits(queries[:, start:stop], keys))
        lo = max(0, nk - nq + start)
        if lo < nk:
            i = torch.arange(start, stop, device=x.device)[:, None]
            j = torch.arange(lo, nk, device=x.device)[None, :]
            x[..., lo:].masked_fill_(j > nk - nq + i, float("-inf"))
        return torch.softmax(x, dim=-1)

    def received_attention(self, queries: torch.Tensor, keys: torch.Tensor, causal: bool = False, block: int = 128) -> torch.Tensor:
        """Attention each key receives, summed over the queries, per head: ``[H, k]``.
        Softmax over ``keys``; ``causal`` aligns the queries with the last keys (query i of q
        sees key j iff ``j <= k - q + i``). Accumulated over blocks of ``block`` queries so
        no ``[H, q, k]`` tensor is held (blocks of ~128 queries also keep it in cache: faster
        than one block of all queries on CPU, ``docs/performance.md``)."""
        nq, nk = queries.shape[1], keys.shape[1]
        dt = torch.promote_types(queries.dtype, torch.float32)
        out = torch.zeros(queries.shape[0], nk, device=queries.device, dtype=dt)
        keys = keys.to(dt)  # once, not per block
        for a in range(0, nq, block):
            b = min(nq, a + block)
            if causal:
                out += self.causal_attention(a, b, queries, keys).sum(1)
            else:
                out += self.attention(queries[:, a:b], keys).sum(1)
        return out

    def guide_attention(self) -> torch.Tensor:
        """Guide queries -> chunk keys, softmax over the chunk's keys only: ``[H, g, n]``."""
        if self.num_guide == 0:
            raise RuntimeError("this method needs the guide (uses_guide=True) but none was given")
        return self.attention(self.guide_queries, self.chunk_keys)


@dataclass
class LayerKeep:
    """What one layer keeps of a chunk.

    index: sorted chunk-token indices ``[k]`` (relative to the chunk's fed tokens), one set for
        all KV heads; or ``[H_kv, k]``, one sorted row per KV head (per-head eviction), of which
        head h uses its first ``head_counts[h]`` entries when ``head_counts`` is given (heads
        keeping different numbers: Ada-KV); build it with :meth:`per_heads`.
    head_counts: ``[H_kv]`` entries of each row of a per-head ``index`` that count (None: all).
    keys, values: optional ``[H_kv, k, d]`` replacing the kept entries (e.g. LOOK-M's merged
        pairs); keys are post-RoPE, like the cache's.
    extra_keys, extra_values: optional ``[H_kv, e, d]`` entries appended after the kept ones
        (e.g. SparseVLM's recycled clusters). They count in the budget.
    scope: ``"chunk"`` (the index refers to the chunk's fed tokens) or ``"video"`` (to the
        layer's video entries: those held before the chunk, then the chunk's; a streaming
        method re-selecting under a memory cap; per head: that head's own). Position reforging
        supports ``"chunk"`` with one set for all heads only.
    """

    index: torch.Tensor
    keys: torch.Tensor | None = None
    values: torch.Tensor | None = None
    extra_keys: torch.Tensor | None = None
    extra_values: torch.Tensor | None = None
    scope: str = "chunk"
    head_counts: list[int] | None = None

    def __post_init__(self):
        if self.scope not in ("chunk", "video"):
            raise ValueError(f"LayerKeep: scope must be 'chunk' or 'video', got {self.scope!r}")
        if (self.keys is None) != (self.values is None) or (self.extra_keys is None) != (self.extra_values is None):
            raise ValueError("LayerKeep: keys/values and extra_keys/extra_values come in pairs")
        if self.index.dim() not in (1, 2):
            raise ValueError(f"LayerKeep: index must be [k] or [H_kv, k], got shape {tuple(self.index.shape)}")
        if self.head_counts is not None:
            if self.index.dim() != 2 or len(self.head_counts) != self.index.shape[0]:
                raise ValueError("LayerKeep: head_counts needs a per-head index with one row per count")
            if self.keys is not None:
                raise ValueError("LayerKeep: replacement KV needs every head to keep the same number of tokens")
        k = int(self.index.shape[-1])
        if self.keys is not None and (self.keys.shape[-2] != k or self.values.shape[-2] != k):
            raise ValueError(f"LayerKeep: replacement KV holds {self.keys.shape[-2]} entries for {k} kept tokens")

    @classmethod
    def per_heads(cls, indices: list[torch.Tensor], **kw) -> "LayerKeep":
        """One sorted index per KV head, any lengths: padded into ``[H_kv, max k]``."""
        counts = [int(i.numel()) for i in indices]
        width = max(counts) if counts else 0
        index = torch.zeros(len(indices), width, dtype=torch.long)
        for h, i in enumerate(indices):
            index[h, : counts[h]] = i
        return cls(index, head_counts=None if len(set(counts)) <= 1 else counts, **kw)

    @property
    def per_head(self) -> bool:
        return self.index.dim() == 2

    def head_index(self, head: int, num_heads: int) -> torch.Tensor:
        """The sorted indices KV head ``head`` keeps ``[k_h]``."""
        if not self.per_head:
            return self.index
        if self.index.shape[0] != num_heads:
            raise ValueError(f"LayerKeep: a per-head index of {self.index.shape[0]} rows for {num_heads} KV heads")
        row = self.index[head]
        return row if self.head_counts is None else row[: self.head_counts[head]]

    def counts(self) -> list[int]:
        """Kept tokens per row (one row for a shared index)."""
        if not self.per_head:
            return [int(self.index.numel())]
        if self.head_counts is not None:
            return list(self.head_counts)
        return [int(self.index.shape[1])] * int(self.index.shape[0])

    @property
    def num_extra(self) -> int:
        return 0 if self.extra_keys is None else int(self.extra_keys.shape[-2])

    @property
    def num_entries(self) -> float | int:
        """Cache entries this chunk leaves in the layer, per KV head (the mean over heads when
        heads keep different numbers)."""
        c = self.counts()
        kept = c[0] if len(set(c)) == 1 else sum(c) / len(c)
        return kept + self.num_extra


@dataclass(frozen=True)
class InputFit:
    """What a method sees before the video is encoded, to refit the input to the budget
    (:meth:`Method.fit_input`): the video as sampled, the budget and the family's token rule."""

    max_context: int
    budget_text: int  # text tokens the budget leaves room for
    num_frames: int
    frame_size: tuple[int, int]  # (height, width) as sampled
    original_size: tuple[int, int] | None  # (height, width) of the file
    max_long_side: int  # the sampling's
    num_steps: int  # grid steps (frames / frames_per_step)
    frames_per_step: int
    tokens_per_step: int  # visual tokens of a step
    max_step_tokens: int  # a step's tokens with the text a family interleaves per step
    size_factor: int  # pixels per token side (Qwen: 28)
    tokens_follow_resolution: bool  # whether smaller frames give fewer tokens (not LLaVA-OneVision)


@dataclass(frozen=True)
class Refit:
    """A method's request to sample the video again: fewer frames over the same timeline, or
    smaller frames (``max_long_side``); None keeps the sampling's."""

    max_frames: int | None = None
    max_long_side: int | None = None


@dataclass
class Method:
    """Base class: a compression method is a dataclass of its hyper-parameters, validated
    in ``__post_init__`` (bad values raise ValueError naming the valid range)."""

    name: ClassVar[str] = "base"
    uses_guide: ClassVar[bool] = True  # append the guide (question) to every chunk
    # whether the method reads the question (through the guide) while it compresses; a method
    # that does not can compress a video once for all its questions (question mode "unknown")
    question_aware: ClassVar[bool] = True
    # the guide is the proxy (the chat template's tokens after the video, no question) even
    # when the question is known (StreamMem)
    proxy_guide: ClassVar[bool] = False
    observes: ClassVar[bool] = True  # receive observe() calls
    # two-pass methods (see the module doc); a method may switch these in begin()
    scoring_pass: ClassVar[bool] = False
    scoring_logits: ClassVar[bool] = False  # the scoring pass runs every layer and gives the last logits

    def fit_input(self, fit: InputFit) -> Refit | None:
        """Before the video is encoded: sample it again to fit the budget (``uniform``: fewer
        frames; ``downsample``: smaller frames), or None (default: the input as sampled). The
        pipeline samples once more at most, and builds the prompt again for the new input."""
        return None

    def begin(self, plan: VideoPlan) -> None:
        self.plan = plan

    def declared(self, name: str):
        """The class's declaration of a switch (``uses_guide``, ``observes``), whatever ``begin``
        set on the instance for the last video: what the engine reads before ``begin``."""
        return getattr(type(self), name)

    # -- two-pass methods ---------------------------------------------------------------------
    def scoring_groups(self, plan: VideoPlan) -> list[ScoringGroup]:
        """The groups of the scoring pass (default: the chunks)."""
        return [ScoringGroup(c.index, torch.arange(c.token_start, c.token_end)) for c in plan.chunks]

    def scoring_layers(self, num_layers: int) -> int:
        """How many layers the scoring pass must run (default all); the rest is skipped."""
        return num_layers

    def score_group(self, group: ScoringGroup, logits: torch.Tensor | None) -> bool:
        """After a group's scoring forward (``logits``: ``[vocab]`` fp32 next-token logits at the
        guide's end, with ``scoring_logits``). False ends the scoring pass (remaining groups are
        not scored)."""
        return True

    def end_scoring(self) -> None:
        """After the scoring pass: set ``plan.input_keep`` for the answer pass."""

    def __post_init__(self) -> None:
        """Validate hyper-parameters (subclasses extend)."""

    def observe(self, view: LayerView) -> None:
        pass

    def select(self, chunk: ChunkSpan) -> list[torch.Tensor | None]:
        raise NotImplementedError


def topk_sorted(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` largest scores, in ascending (original) order."""
    k = max(0, min(int(k), scores.shape[-1]))
    return scores.topk(k, dim=-1).indices.sort(dim=-1).values


def budget_tokens(ratio: float, n: int) -> int:
    """``round(ratio * n)`` kept tokens, at least 1 and at most n."""
    return min(n, max(1, int(math.floor(ratio * n + 0.5))))
