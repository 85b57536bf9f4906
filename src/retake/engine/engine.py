"""Chunked prefill with per-chunk KV compression (docs/architecture.md, "Protocol"), batch size 1.

1. encode the video in bounded batches of grid steps, show the method the plan (``begin``);
2. prefill the prefix (system prompt, user header, vision start) uncompressed: with fast
   paths inside the first chunk's forward; a two-pass method's scoring pass then runs;
3. per chunk of ``chunk_frames`` frames: run ``[chunk ; guide]`` through the model, chunk
   tokens at their own positions, the guide right after the chunk (its ids shifted so its
   first temporal id is the chunk's max id + 1); every layer attends over its own
   (compressed) cache plus the causal part of the input; then the method picks, per
   layer, the chunk tokens to keep and the guide's entries are dropped (on a hybrid model
   the guide runs as a second forward and the recurrent states are put back after it);
4. prefill the suffix at its original positions;
5. decode greedily, positions continuing from max position + 1.

The video's visual embeddings ``[N_v, hidden]`` are computed before prefill and kept until
it ends (methods allocate budgets from them); vision activations are bounded by
``vision_batch_steps``. Everything else held is the cache plus one chunk's activations.
An adapter may return per-token extras with the embeddings (``VideoFeatures``, e.g.
Qwen3-VL's DeepStack features): each chunk's slice of them, cut like its embeddings, goes
back to the adapter with that chunk (``forward_embeds(..., video_extras=...)``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..config import EngineConfig, QuestionMode
from ..methods.base import ChunkSpan, LayerKeep, LayerView, Method, ScoringGroup, VideoPlan
from ..models.base import Prompt, VideoFeatures, VideoInputs, VideoLMAdapter
from .attention import RowLimit, StopForward
from . import profile
from .cache import CompressibleCache
from .positions import ReforgedPositions


QUESTION_MODES = tuple(m.value for m in QuestionMode)


@dataclass
class EngineOutput:
    tokens: list[int]
    first_logits: torch.Tensor  # [vocab] next-token logits after the suffix, fp32 on CPU
    video_tokens: int
    text_tokens: int
    kept_video_tokens_per_layer: list[int]
    # entries per KV head after prefill (the mean over a layer's heads where they keep different
    # numbers: kv_tokens_per_layer_max_head has the fullest head's)
    kv_tokens_per_layer: list[float]
    kv_tokens_per_layer_final: list[float]  # after decoding
    kv_cache_bytes: int  # after prefill, the entries held (per head; no padding, no spare room)
    keep_ratio: float
    vision_seconds: float
    prefill_seconds: float  # vision encoding included (none when the features were given)
    decode_seconds: float
    peak_memory_bytes: int | None  # accelerator peak during the run, summed over the model's devices; None on CPU
    cache: CompressibleCache | None = None  # the final cache, when run(..., return_cache=True)
    budget_text_tokens: int | None = None  # the text the budget left room for (question mode unknown: a reserve)
    video_held_max_per_layer: list[int] | None = None  # most video entries a layer held after any chunk
    peak_kv_cache_bytes: int | None = None  # the cache's largest size while the video is prefilled (a chunk and guide in it)
    cache_reused: bool = False  # answered over a compressed video state an earlier question made
    guide: str = "none"  # what the chunks were shown: question | proxy | none
    kv_tokens_per_layer_max_head: list[int] | None = None  # entries of each layer's fullest KV head after prefill
    state_bytes: int = 0  # a hybrid model's linear-attention states (fixed size, not compressible)


@dataclass
class VideoState:
    """A video prefilled and compressed, no question asked yet (:meth:`Engine.prefill_video`):
    what :meth:`Engine.answer` needs to answer any question on it. ``snapshot``: the cache as
    the video left it, restored before every answer."""

    cache: CompressibleCache
    snapshot: object
    prefix_ids: torch.Tensor
    video_positions: torch.Tensor  # [R, video_end]: the prefix's and the video's ids
    video_start: int
    video_end: int
    kept: list[int]
    held_max: list[int]
    peak_cache_bytes: int
    keep_ratio: float
    text_tokens: int
    vision_seconds: float
    prefill_seconds: float  # prefix + video (+ vision when encoded here)
    reforge: ReforgedPositions | None
    like: torch.Tensor  # a tensor on the model's device (reforged rotations are made there)
    method: str
    guide: str
    accelerators: list
    answers: int = 0

    @property
    def nbytes(self) -> int:
        return self.cache.nbytes()


class _StepContext:
    """Passed to the attention function of every layer as ``retake_ctx``.

    positions: ``[R, n+g]`` ids of the input, or ``{layer: ids}`` when positions are reforged.
    rope: ``rope(ids) -> (cos, sin)``, evaluated lazily once per distinct ids tensor.
    rotations: ``{layer: (cos, sin) or None}`` applied to the layer's queries (reforging).
    """

    def __init__(self, method: Method | None = None, chunk: ChunkSpan | None = None, n: int = 0, g: int = 0,
                 positions=None, rope=None, rotations: dict | None = None, group: ScoringGroup | None = None,
                 stop_after: int | None = None, video_start: int = 0, lead: int = 0, kv_index: dict | None = None):
        self.method, self.chunk, self.n, self.g = method, chunk, n, g
        self.video_start = video_start
        self.lead = lead  # input rows before the chunk (the prefix, run in the first chunk's forward)
        self.positions, self._rope, self._cs = positions, rope, {}
        self.rotations = rotations
        self.group = group  # a scoring pass's group (two-pass methods)
        self.stop_after = stop_after  # the last layer this forward must run (scoring pass)
        self.kv_index = kv_index  # hybrid models: the model's layer index -> the index among KV layers
        # hybrid models: the chunk and the guide run as two forwards ("chunk", then "guide"); the
        # chunk's queries wait here for the guide's, so a method sees each layer once, both joined
        self.phase: str | None = None
        self.pending: dict = {}

    def rope(self, ids: torch.Tensor, device: torch.device | None = None):
        """cos/sin of ``ids``, on ``device`` if given (layers may sit on different devices)."""
        if id(ids) not in self._cs:
            self._cs[id(ids)] = self._rope(ids)
        cos, sin = self._cs[id(ids)]
        return (cos, sin) if device is None else (cos.to(device), sin.to(device))

    def observe(self, layer: int, query, key, value, scaling) -> None:
        if self.method is None or not self.method.observes:
            return
        ids = self.positions[layer] if isinstance(self.positions, dict) else self.positions
        if self.lead:  # the method sees the chunk and the guide, the prefix is in the cache before them
            query = query[:, :, self.lead :]
        if self.phase == "chunk":
            self.pending[layer] = query
            return
        if self.phase == "guide":
            query = torch.cat([self.pending.pop(layer), query], dim=2)
        view = LayerView(
            layer=layer, chunk=self.chunk, query=query[0], key=key[0], value=value[0],
            num_chunk=self.n, num_guide=self.g, scaling=scaling, positions=ids, rope=lambda: self.rope(ids, query.device),
            group=self.group, video_start=self.video_start, heads=getattr(key, "retake_heads", None),
        )
        self.method.observe(view)


PLAIN = _StepContext()


def chunk_spans(step_token_offsets: list[int], steps_per_chunk: int) -> list[ChunkSpan]:
    n_steps = len(step_token_offsets) - 1
    spans = []
    for i, a in enumerate(range(0, n_steps, steps_per_chunk)):
        b = min(n_steps, a + steps_per_chunk)
        spans.append(ChunkSpan(i, a, b, step_token_offsets[a], step_token_offsets[b]))
    return spans


def keep_ratio(max_context: int, num_text: int, num_video: int) -> float:
    """Global video keep ratio r = min(1, (C - n_text) / N_v) (docs/architecture.md, "Budget")."""
    room = max_context - num_text
    if room < 1:
        raise ValueError(f"max_context={max_context} leaves no room for video: the text alone is {num_text} tokens")
    return min(1.0, room / max(1, num_video))


def apply_updates(x: torch.Tensor, updates: tuple[torch.Tensor, torch.Tensor], start: int, end: int) -> torch.Tensor:
    """``x`` (the span's tokens ``[start, end)``) with the rows of ``updates = (index, embeds)``
    that fall in that range replaced (a copy; ``x`` is not modified)."""
    index, embeds = updates
    a, b = (int(i) for i in torch.searchsorted(index, torch.tensor([start, end])))
    if a == b:
        return x
    x = x.clone()
    x[(index[a:b] - start).to(x.device)] = embeds[a:b].to(x.device, x.dtype)
    return x


@dataclass
class _Prefill:
    """One video's prefill in progress: what :meth:`Engine.prefill_video`'s steps share."""

    method: Method
    plan: VideoPlan
    cache: CompressibleCache
    features: torch.Tensor  # [N_v, hidden] the video's input embeddings
    extras: dict  # per-token extras cut like the embeddings (Qwen3-VL's DeepStack)
    ids: torch.Tensor  # the context prompt's ids and positions
    pos: torch.Tensor
    vs: int  # the video's span in the prompt
    ve: int
    hybrid: bool
    kv_index: dict | None
    merge_prefix: bool  # the prefix still to run, in the first fed chunk's forward
    vision_seconds: float
    kept: list  # video entries per layer so far
    held_max: list  # the most video entries a layer held after a chunk's compression
    peak_bytes: int = 0  # the cache's largest size, chunk and guide entries in it
    guide_ids: torch.Tensor | None = None
    guide_pos: torch.Tensor | None = None
    use_guide: bool = False
    guide_emb: torch.Tensor | None = None
    g: int = 0  # guide tokens fed with each chunk
    reforge: ReforgedPositions | None = None
    limit: RowLimit | None = None


class Engine:
    def __init__(self, adapter: VideoLMAdapter, config: EngineConfig | None = None):
        self.adapter = adapter
        self.config = config or EngineConfig()
        if self.config.reforge_positions and getattr(adapter, "position_rule", "trained") != "trained" \
                and getattr(adapter, "position_rule_differs", False):
            raise ValueError("engine.reforge_positions needs model.position_rule=trained: reforging continues the text "
                             "after the video's last kept id, which the transformers rule does not place there")

    def _row_limit(self) -> RowLimit | None:
        """The hooks that skip the guide's rows in the last layer's MLP (installed once per model)."""
        mlp = self.adapter.last_mlp()
        if mlp is None:
            return None
        if not hasattr(mlp, "_retake_rows"):
            mlp._retake_rows = RowLimit(mlp)
        return mlp._retake_rows

    def _accelerators(self) -> list[torch.device]:
        """The CUDA devices the model sits on (several under a multi-device ``device_map``)."""
        return sorted({p.device for p in self.adapter.model.parameters() if p.device.type == "cuda"}, key=str)

    def _sync(self):
        for d in self._accelerators():
            torch.cuda.synchronize(d)

    @torch.no_grad()
    def encode(self, video: VideoInputs):
        """The vision encoder's output for ``video`` (a tensor or ``VideoFeatures``), in
        batches of ``vision_batch_steps`` grid steps, and the seconds it took. ``run(...,
        features=...)`` takes it back, so that questions on the same video encode it once."""
        t = time.perf_counter()
        kw = {"out_device": "cpu"} if self.config.offload_features else {}
        features = self.adapter.encode_video(video, batch_steps=self.config.vision_batch_steps, **kw)
        self._sync()
        return features, time.perf_counter() - t

    def _scoring_pass(self, method: Method, plan: VideoPlan, features, extras, pos, vs: int, cache,
                      guide_ids, guide_pos, kv_index: dict | None = None) -> None:
        """Run each of the method's scoring groups as ``[group ; guide]`` over the prefix alone,
        at the group tokens' own positions and the guide right after them (as for a chunk),
        showing the method every layer up to ``scoring_layers``; the group's cache entries are
        dropped after it (the cache holds the prefix again)."""
        ad = self.adapter
        L = ad.num_layers
        stop = method.scoring_layers(L) - 1
        if not 0 <= stop < L:
            raise ValueError(f"method {method.name!r}: scoring_layers must be in [1, {L}], got {stop + 1}")
        stop_after = None if method.scoring_logits or stop == L - 1 else stop
        guide_emb = ad.embed(guide_ids) if guide_ids.numel() else None
        states = cache.save_states()  # (hybrid models) a group leaves nothing in the recurrent states
        for group in method.scoring_groups(plan):
            idx = group.tokens
            if idx.numel() == 0:
                continue
            x = features[idx.to(features.device)]
            if plan.input_updates is not None:
                raise RuntimeError("a scoring pass reads the video's own embeddings: set input_updates in end_scoring")
            p = pos[:, vs + idx]
            ex = {k: v[idx.to(v.device)] for k, v in extras.items()}
            x = x.to(ad.device, non_blocking=True).unsqueeze(0)
            n, g = int(idx.numel()), int(guide_ids.numel())
            if guide_emb is not None:
                p_guide = guide_pos + (int(p.max()) + 1 - int(guide_pos[0, 0]))
                x = torch.cat([x, guide_emb], dim=1)
                p = torch.cat([p, p_guide], dim=1)
            ctx = _StepContext(method, None, n, g, positions=p, rope=lambda q, x=x: ad.rope(q, x), group=group,
                               stop_after=stop_after, kv_index=kv_index)
            logits = None
            try:
                h = ad.forward_embeds(x, p, cache, retake_ctx=ctx, **({"video_extras": ex} if ex else {}))
                if method.scoring_logits:
                    logits = ad.logits(h[0, -1]).float().cpu()
            except StopForward:
                pass
            for layer in range(cache.num_kv_layers):
                if cache.layer_length(layer) > vs:
                    cache.truncate(layer, vs)
            cache.load_states(states)
            if not method.score_group(group, logits):
                break
        method.end_scoring()

    def _chunk_then_guide(self, x, p, rows: int, cache: CompressibleCache, ctx: "_StepContext", extras: dict) -> None:
        """A hybrid model's chunk forward: the first ``rows`` input rows (prefix and chunk) alone,
        then the guide over them, the linear-attention states put back after it, so the guide
        leaves no trace in them (exact: nothing of the chunk depends on the guide). The method
        sees each attention layer once, the chunk's and the guide's queries joined."""
        ad = self.adapter
        ctx.phase = "chunk"
        ad.forward_embeds(x[:, :rows], p[:, :rows], cache, retake_ctx=ctx, **({"video_extras": extras} if extras else {}))
        states = cache.save_states()
        ctx.phase, ctx.lead = "guide", 0
        ad.forward_embeds(x[:, rows:], p[:, rows:], cache, retake_ctx=ctx)
        cache.load_states(states)
        ctx.phase = None

    def repetition_penalty(self) -> float:
        """``engine.repetition_penalty``, or the checkpoint's generation config's when null."""
        p = self.config.repetition_penalty
        if p is None:
            gen = getattr(self.adapter.model, "generation_config", None)
            p = getattr(gen, "repetition_penalty", None) or 1.0
        return float(p)

    def needs_proxy(self, method: Method) -> bool:
        """Whether a run of ``method`` needs the proxy prompt (the prompt built with an empty
        question): in question mode ``unknown`` (the budget's text and every guided method's
        guide), and for a guided method that reads the proxy even when the question is known."""
        return self.config.question_mode == "unknown" or bool(method.declared("uses_guide") and method.proxy_guide)

    def guide_for(self, method: Method, prompt: Prompt, proxy: Prompt | None, mode: str) -> tuple[str, Prompt | None]:
        """Which guide ``method`` is shown in ``mode`` (``aware`` / ``unknown``): ``("question",
        prompt)``, ``("proxy", proxy)`` (the chat template's tokens after the video, no question)
        or ``("none", None)``."""
        if not method.declared("uses_guide"):  # an instance may have switched it off in begin (idle)
            return "none", None
        if method.proxy_guide or mode == "unknown":
            if proxy is None:
                raise ValueError(f"method {method.name!r} in question mode {mode!r} needs the proxy prompt "
                                 "(the prompt built with an empty question)")
            return "proxy", proxy
        return "question", prompt

    def budget_text_tokens(self, prompt: Prompt, proxy: Prompt | None, mode: str) -> int:
        """The text tokens the budget leaves room for: the prompt's own (``aware``), or the
        template's without a question plus ``question_tokens`` (``unknown``: the question is not
        known while the video is compressed)."""
        if mode == "aware":
            return prompt.num_text_tokens
        if proxy is None:
            raise ValueError("question mode 'unknown' needs the proxy prompt (the prompt built with an empty question)")
        return proxy.num_text_tokens + self.config.question_tokens

    @torch.no_grad()
    def run(self, video: VideoInputs, prompt: Prompt, method: Method, return_cache: bool = False,
            features=None, proxy: Prompt | None = None) -> EngineOutput:
        """Prefill ``prompt`` with ``method`` compressing the video, then decode. ``features``:
        the output of :meth:`encode` for this ``video`` on this adapter, computed before (then
        no vision time is spent or reported here); None encodes it now. ``proxy``: the prompt
        built with an empty question (the guide of methods that read a proxy, and of every
        guided method in question mode ``unknown``).

        The same as :meth:`prefill_video` then :meth:`answer`; in question mode ``unknown`` the
        state does not depend on the question, so a caller may keep it for the video's other
        questions (``docs/architecture.md``)."""
        mode = self.config.question_mode
        if proxy is None and self.needs_proxy(method):
            # no system prompt: a prompt built with one needs its own proxy (answer() checks)
            proxy = self.adapter.build_prompt("", video)
        kind, guide = self.guide_for(method, prompt, proxy, mode)
        context = proxy if mode == "unknown" else prompt  # nothing of the question reaches the video's state
        state = self.prefill_video(video, context, method, features=features, guide=guide,
                                   text_tokens=self.budget_text_tokens(prompt, proxy, mode), guide_kind=kind)
        return self.answer(state, prompt, return_cache=return_cache)

    @torch.no_grad()
    def prefill_video(self, video: VideoInputs, context: Prompt, method: Method, features=None,
                      guide: Prompt | None = None, text_tokens: int | None = None,
                      guide_kind: str | None = None) -> "VideoState":
        """Steps 1-3: the prefix and the compressed video, no suffix. ``context``: a prompt on
        this video (its prefix and video span are used, nothing after); ``guide``: the prompt
        whose tokens after the video are the guide (None: no guide, whatever the method
        asks); ``text_tokens``: the text the budget leaves room for (default
        ``context.num_text_tokens``)."""
        accelerators = self._accelerators()
        for d in accelerators:
            torch.cuda.reset_peak_memory_stats(d)
        t0 = time.perf_counter()
        run = self._start(video, context, method, features, text_tokens)  # 1-2: vision, the plan, begin
        if not run.merge_prefix and run.vs > 0:  # 2a
            self._prefix(run)
        self._set_guide(run, guide)
        if method.scoring_pass:  # 2b. its KV is discarded, it sets plan.input_keep
            with profile.part("scoring_pass"):
                self._scoring_pass(method, run.plan, run.features, run.extras, run.pos, run.vs, run.cache,
                                   run.guide_ids, run.guide_pos, run.kv_index)
        self._start_chunks(run)
        for chunk in run.plan.chunks:  # 3
            fed = self._feed_chunk(run, chunk)
            if fed is not None:
                self._compress_chunk(run, chunk, *fed)
        if run.merge_prefix:  # no chunk was fed (every token dropped before prefill)
            self._prefix(run)
        self._sync()
        cache, ids, pos, vs, ve = run.cache, run.ids, run.pos, run.vs, run.ve
        return VideoState(
            cache=cache, snapshot=cache.snapshot(), prefix_ids=ids[:vs].clone(), video_positions=pos[:, :ve].clone(),
            video_start=vs, video_end=ve, kept=run.kept, held_max=run.held_max,
            peak_cache_bytes=max(run.peak_bytes, cache.nbytes()), keep_ratio=run.plan.keep_ratio,
            text_tokens=run.plan.num_text_tokens, vision_seconds=run.vision_seconds,
            prefill_seconds=time.perf_counter() - t0, reforge=run.reforge, like=run.features[:1], method=method.name,
            guide=guide_kind or ("none" if not run.use_guide else "given"), accelerators=accelerators,
        )

    def _start(self, video: VideoInputs, context: Prompt, method: Method, features, text_tokens: int | None) -> "_Prefill":
        """Checks, the cache, (1) the video's features, (2) the plan shown to the method (``begin``
        decides what the method does with this video: whether it scores at all, needs a scoring
        pass or the guide)."""
        ad, cfg = self.adapter, self.config
        if cfg.chunk_frames % video.frames_per_step:
            raise ValueError(f"chunk_frames={cfg.chunk_frames} is not a multiple of {video.frames_per_step} frames per grid step")
        vs, ve = context.video_start, context.video_end
        n_text = context.num_text_tokens if text_tokens is None else int(text_tokens)
        n_video = ve - vs
        if cfg.question_mode == "unknown" and cfg.max_context - n_text < 1:
            raise ValueError(f"max_context={cfg.max_context} leaves no room for video: question mode 'unknown' reserves "
                             f"{n_text} text tokens, of them engine.question_tokens={cfg.question_tokens} for the "
                             "question; lower question_tokens or raise max_context")
        r = keep_ratio(cfg.max_context, n_text, n_video)
        cache = CompressibleCache(ad.layer_types)
        hybrid = cache.kv_ids is not None  # linear-attention layers beside the attention layers
        if hybrid and cfg.reforge_positions:
            raise ValueError("position reforging is not supported on a hybrid model (linear-attention layers): "
                             "set engine.reforge_positions=false")
        vision_seconds = 0.0
        if features is None:
            with profile.part("vision"):
                features, vision_seconds = self.encode(video)
        extras = {}
        if isinstance(features, VideoFeatures):
            features, extras = features.embeds, features.extras
        if features.shape[0] != n_video:
            raise ValueError(f"features hold {features.shape[0]} video tokens, the prompt's video span {n_video}")
        chunks = chunk_spans(video.step_token_offsets, cfg.chunk_frames // video.frames_per_step)
        plan = VideoPlan(
            num_layers=ad.num_layers, chunks=chunks, keep_ratio=r, max_context=cfg.max_context,
            num_video_tokens=n_video, num_text_tokens=n_text, tokens_per_step=video.tokens_per_step,
            step_token_offsets=video.step_token_offsets, features=features, visual_mask=video.visual_mask,
            frames_per_step=video.frames_per_step, token_grid=video.token_grid,
        )
        with profile.part("begin"):
            method.begin(plan)
        # the prefix runs in the first chunk's forward (one pass of the weights fewer), unless a
        # scoring pass needs it in the cache first, positions are reforged per layer, or the
        # adapter places per-token extras by row (Qwen3-VL's DeepStack)
        merge_prefix = cfg.fast_paths and vs > 0 and not method.scoring_pass and not cfg.reforge_positions \
            and not extras
        return _Prefill(method=method, plan=plan, cache=cache, features=features, extras=extras,
                        ids=context.input_ids, pos=context.position_ids, vs=vs, ve=ve, hybrid=hybrid,
                        kv_index={d: i for i, d in enumerate(cache.kv_ids)} if hybrid else None,
                        merge_prefix=merge_prefix, vision_seconds=vision_seconds,
                        kept=[0] * ad.num_layers, held_max=[0] * ad.num_layers)

    def _prefix(self, run: "_Prefill") -> None:
        """The system prompt, user header and vision start, uncompressed, in a forward of their own."""
        with profile.part("prefix"):
            self.adapter.forward_embeds(self.adapter.embed(run.ids[: run.vs]), run.pos[:, : run.vs], run.cache,
                                        retake_ctx=PLAIN)

    def _set_guide(self, run: "_Prefill", guide: Prompt | None) -> None:
        """The guide: ``guide``'s tokens after its video (the last ``max_guide_tokens`` of them)."""
        if guide is not None:
            gids, gpos = guide.input_ids, guide.position_ids
            g0 = guide.video_end if self.config.max_guide_tokens is None \
                else max(guide.video_end, gids.shape[0] - self.config.max_guide_tokens)
            run.guide_ids, run.guide_pos = gids[g0:], gpos[:, g0:]
        else:
            run.guide_ids, run.guide_pos = run.ids[:0], run.pos[:, :0]

    def _start_chunks(self, run: "_Prefill") -> None:
        """What every chunk's forward shares: the guide's embeddings, position reforging, the
        guide rows' MLP skip."""
        ad, cfg = self.adapter, self.config
        run.use_guide = run.method.uses_guide and run.guide_ids.numel() > 0
        run.guide_emb = ad.embed(run.guide_ids) if run.use_guide else None
        run.g = int(run.guide_ids.numel()) if run.use_guide else 0
        pos, vs = run.pos, run.vs
        run.reforge = ReforgedPositions(ad.num_layers, pos.shape[0], int(pos[:, :vs].max()) if vs else -1, ad.rope) \
            if cfg.reforge_positions else None
        run.limit = self._row_limit() if cfg.fast_paths and run.g and not run.hybrid else None

    def _feed_chunk(self, run: "_Prefill", chunk: ChunkSpan):
        """Run ``[chunk ; guide]`` (with the prefix ahead of the first chunk on the fast path)
        through the model over the cache; the method observes every layer. Returns ``(n fed
        tokens, each layer's length before the chunk, the chunk's ids per layer, the input)``,
        or None when every token of the chunk was dropped before prefill."""
        ad, plan, pos, vs = self.adapter, run.plan, run.pos, run.vs
        x = run.features[chunk.token_start : chunk.token_end]
        p = pos[:, vs + chunk.token_start : vs + chunk.token_end]
        ex = {k: v[chunk.token_start : chunk.token_end] for k, v in run.extras.items()}
        if plan.input_updates is not None:  # merged tokens fed with their merged embeddings
            x = apply_updates(x, plan.input_updates, chunk.token_start, chunk.token_end)
        if plan.input_keep is not None:  # tokens the method dropped before prefill
            m = plan.input_keep[chunk.token_start : chunk.token_end]
            x, p = x[m.to(x.device)], p[:, m.cpu()]
            ex = {k: v[m.to(v.device)] for k, v in ex.items()}
        n, g = int(x.shape[0]), run.g
        if n == 0:
            return None
        x = x.to(ad.device, non_blocking=True).unsqueeze(0)  # (offload_features: from the CPU)
        p_video, p_guide = p, None
        if run.use_guide:  # the guide right after the chunk: its first temporal id is the chunk's max + 1
            p_guide = run.guide_pos + (int(p.max()) + 1 - int(run.guide_pos[0, 0]))
            x = torch.cat([x, run.guide_emb], dim=1)
            p = torch.cat([p, p_guide], dim=1)
        cache = run.cache
        before = [cache.layer_length(layer) for layer in range(ad.num_layers)]
        layer_ids, rotations = p, None
        if run.reforge is not None:
            layer_ids, rotations = run.reforge.chunk(p_video, p_guide, x)
        lead = 0
        x_in, p_in = x, p
        if run.merge_prefix:  # [prefix ; chunk ; guide]: causal, so the same as the prefix first
            lead, run.merge_prefix = vs, False
            x_in = torch.cat([ad.embed(run.ids[:vs]), x], dim=1)
            p_in = torch.cat([pos[:, :vs], p], dim=1)
        ctx = _StepContext(run.method, chunk, n, g, positions=layer_ids, rope=lambda q, x=x: ad.rope(q, x),
                           rotations=rotations, video_start=vs, lead=lead, kv_index=run.kv_index)
        cache.input_rotation = rotations
        limit = run.limit
        if limit is not None and g:
            limit.rows = lead + n  # the guide's rows skip the last layer's MLP
        try:
            with profile.part("chunks"):
                if run.hybrid and g:  # the guide must leave no trace in the recurrent states: two forwards
                    self._chunk_then_guide(x_in, p_in, lead + n, cache, ctx, ex)
                else:
                    ad.forward_embeds(x_in, p_in, cache, retake_ctx=ctx, **({"video_extras": ex} if ex else {}))
        finally:
            if limit is not None:
                limit.rows = None
        cache.input_rotation = None
        if lead:
            before = [b + lead for b in before]
        run.peak_bytes = max(run.peak_bytes, cache.nbytes())
        return n, before, layer_ids, x

    def _compress_chunk(self, run: "_Prefill", chunk: ChunkSpan, n: int, before: list[int], layer_ids, x) -> None:
        """The method's selection for the chunk, applied per layer: the guide's entries go, the
        kept chunk entries stay (reforged when positions are)."""
        ad, method, cache, reforge = self.adapter, run.method, run.cache, run.reforge
        pos, vs, ve, n_video = run.pos, run.vs, run.ve, run.plan.num_video_tokens
        with profile.part("select"):
            selection = method.select(chunk)
        if len(selection) != ad.num_layers:
            raise RuntimeError(f"method {method.name!r} returned {len(selection)} selections for {ad.num_layers} layers")
        with profile.part("compaction"):
            for layer, keep in enumerate(selection):
                cache.truncate(layer, before[layer] + n)  # the guide's entries go
                if keep is not None and not isinstance(keep, LayerKeep):
                    keep = LayerKeep(keep)
                whole = keep is not None and keep.scope == "video"
                if reforge is not None and keep is not None and (whole or keep.per_head):
                    what = "re-selects over the whole video" if whole else "keeps a different set per KV head"
                    raise ValueError(f"method {method.name!r} {what}, which position reforging does not "
                                     "support: set engine.reforge_positions=false (or head_selection=shared)")
                if keep is not None:
                    cache.keep(layer, vs if whole else before[layer], keep)
                run.kept[layer] = keep.num_entries if whole else run.kept[layer] + (n if keep is None else keep.num_entries)
                run.held_max[layer] = max(run.held_max[layer], cache.layer_length(layer) - vs)
                if reforge is not None:
                    span = (int(pos[0, vs + chunk.token_start]),
                            int(pos[0, vs + chunk.token_end]) if chunk.token_end < n_video else int(pos[0, ve - 1]) + 1)
                    rot = reforge.compress(layer, layer_ids[layer][:, :n], None if keep is None else keep.index, span, x)
                    if rot is not None:
                        cache.rotate(layer, before[layer], rot[0].shape[0], rot)

    @torch.no_grad()
    def answer(self, state: "VideoState", prompt: Prompt, return_cache: bool = False) -> EngineOutput:
        """Steps 4-5 over ``state``: the suffix of ``prompt`` (a question on the state's video:
        the same prefix and video span) and greedy decoding. The state's cache is restored
        first, so no question sees another's tokens; the first answer of a state reports the
        video's prefill in its ``prefill_seconds`` too (the later ones: the suffix only)."""
        ad, cfg = self.adapter, self.config
        ids, pos = prompt.input_ids, prompt.position_ids
        vs, ve = prompt.video_start, prompt.video_end
        if (vs, ve) != (state.video_start, state.video_end) or not torch.equal(ids[:vs], state.prefix_ids) \
                or not torch.equal(pos[:, :ve], state.video_positions):
            raise ValueError("the prompt's prefix or video span differ from the compressed video's: a state "
                             "answers questions on its own video, system prompt and sampling (Engine.run: pass "
                             "proxy=, the prompt built with an empty question and the same system prompt)")
        first = state.answers == 0
        if not first:
            for d in state.accelerators:
                torch.cuda.reset_peak_memory_stats(d)
        cache = state.cache
        cache.restore(state.snapshot)
        t0 = time.perf_counter()

        # 4. suffix (and decoding: at per-layer ids when positions were reforged)
        reforge = state.reforge
        text_ctx = PLAIN
        if reforge is not None and ids.shape[0] > ve:
            text_ctx = _StepContext(rotations=reforge.text(int(pos[0, ve]), state.like))
        cache.input_rotation = text_ctx.rotations
        with profile.part("suffix"):
            h = ad.forward_embeds(ad.embed(ids[ve:]), pos[:, ve:], cache, retake_ctx=text_ctx)
            first_logits = ad.logits(h[0, -1]).float()
        self._sync()
        prefill_seconds = time.perf_counter() - t0 + (state.prefill_seconds if first else 0.0)
        kv_prefill = cache.held_per_layer()
        kv_max_head = [cache.held_max(layer) for layer in range(cache.num_kv_layers)]
        kv_bytes = cache.nbytes()

        # 5. greedy decode
        td = time.perf_counter()
        tokens: list[int] = []
        eos = set(ad.eos_token_ids)
        next_pos = int(pos.max()) + 1
        logits = first_logits
        rows = pos.shape[0]
        penalty = self.repetition_penalty()
        seen = torch.zeros(first_logits.shape[-1], dtype=torch.bool, device=first_logits.device) if penalty != 1 else None
        if seen is not None:
            seen[ids[ids < seen.shape[0]].to(seen.device)] = True
        with profile.part("decode"):
            for _ in range(cfg.max_new_tokens):
                if seen is not None:  # transformers' RepetitionPenaltyLogitsProcessor
                    logits = logits.clone()
                    x = logits[seen]
                    logits[seen] = torch.where(x > 0, x / penalty, x * penalty)
                tok = int(logits.argmax())
                if seen is not None:
                    seen[tok] = True
                tokens.append(tok)
                if tok in eos or len(tokens) == cfg.max_new_tokens:
                    break
                p = torch.full((rows, 1), next_pos, dtype=torch.long)
                h = ad.forward_embeds(ad.embed(torch.tensor([tok])), p, cache, retake_ctx=text_ctx)
                logits = ad.logits(h[0, -1]).float()
                next_pos += 1
        cache.input_rotation = None
        self._sync()
        decode_seconds = time.perf_counter() - td
        state.answers += 1
        acc = state.accelerators
        return EngineOutput(
            tokens=tokens,
            first_logits=first_logits.cpu(),
            video_tokens=ve - vs,
            text_tokens=prompt.num_text_tokens,
            kept_video_tokens_per_layer=list(state.kept),
            kv_tokens_per_layer=kv_prefill,
            kv_tokens_per_layer_final=cache.held_per_layer(),
            kv_tokens_per_layer_max_head=kv_max_head,
            state_bytes=cache.state_nbytes(),
            kv_cache_bytes=kv_bytes,
            keep_ratio=state.keep_ratio,
            vision_seconds=state.vision_seconds if first else 0.0,
            prefill_seconds=prefill_seconds,
            decode_seconds=decode_seconds,
            peak_memory_bytes=sum(int(torch.cuda.max_memory_allocated(d)) for d in acc) if acc else None,
            cache=cache if return_cache else None,
            budget_text_tokens=state.text_tokens,
            video_held_max_per_layer=list(state.held_max),
            peak_kv_cache_bytes=state.peak_cache_bytes,
            cache_reused=not first,
            guide=state.guide,
        )
