"""Frozen image encoder -> projector -> causal LM with LoRA (the paper's report-generation setup).

Why this split: the encoder and the LM stay frozen (bit-identical), so the only things learnt
are a small projector that maps image features to the LM's input width and low-rank adapters
(peft LoRA) inside the LM. The image becomes ``K`` "image tokens" placed before the prompt:
the class token plus the patch tokens average-pooled to a ``g x g`` grid (``K = 1 + g*g``),
or nothing at all (``image_tokens='none'``: the LM alone, the baseline that shows what the
image adds). Training masks the loss to the caption tokens.

Saved runs hold the projector, the LoRA weights and the encoder (safetensors) plus a JSON
config naming the LM, so a reload rebuilds the same captioner from files that are data only.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from dermino.config import AtLeast1, Checked

log = logging.getLogger(__name__)

IMAGE_TOKENS = ("none", "cls", "patch", "cls+patch")
PROJECTORS = ("linear", "mlp")
DEFAULT_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


@dataclass
class CaptionerSpec(Checked):
    """Everything needed to rebuild a captioner (saved as captioner.json)."""

    encoder: str = "dermino_vit_small_14"
    encoder_overrides: dict = field(default_factory=dict)
    encoder_weights: str | None = None  # where the frozen encoder came from (informative on reload)
    lm: str = "smollm2-135m-instruct"
    projector: Literal["linear", "mlp"] = "mlp"
    image_tokens: Literal["none", "cls", "patch", "cls+patch"] = "cls+patch"
    patch_grid: Annotated[int, AtLeast1] = 4
    prompt: str = "Describe the skin lesion in this dermoscopic image."
    chat_template: bool = False  # wrap the prompt in the LM's chat template
    lora_r: Annotated[int, AtLeast1] = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_targets: list[str] = field(default_factory=lambda: list(DEFAULT_LORA_TARGETS))
    max_length: int = 0  # image + prompt + caption tokens; 0 = the LM's context length


class Projector(nn.Module):
    """Image feature width -> LM width: one linear layer, or Linear-GELU-Linear."""

    def __init__(self, in_dim: int, out_dim: int, kind: str = "mlp"):
        super().__init__()
        if kind == "linear":
            self.net = nn.Linear(in_dim, out_dim)
        elif kind == "mlp":
            self.net = nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))
        else:
            raise ValueError(f"projector must be one of {PROJECTORS}, got {kind!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def image_features(encoder: nn.Module, x: torch.Tensor, image_tokens: str, grid: int) -> torch.Tensor:
    """``(B, K, D)`` frozen features: class token and/or patch tokens pooled to ``grid x grid``."""
    out = encoder.forward_features(x)
    if isinstance(out, torch.Tensor):
        out = {"cls": out, "patch": None}
    parts = []
    if image_tokens in ("cls", "cls+patch"):
        parts.append(out["cls"][:, None])
    if image_tokens in ("patch", "cls+patch"):
        patch = out.get("patch")
        if patch is None:
            raise ValueError("image_tokens needs patch tokens but the encoder returns one vector")
        b, n, d = patch.shape
        gh = x.shape[-2] // encoder.patch_size
        gw = n // gh
        fmap = patch.transpose(1, 2).reshape(b, d, gh, gw)
        pooled = F.adaptive_avg_pool2d(fmap, (grid, grid))
        parts.append(pooled.flatten(2).transpose(1, 2))
    return torch.cat(parts, dim=1)


class Captioner(nn.Module):
    """Frozen encoder + trainable projector + LM (frozen base weights, trainable LoRA)."""

    def __init__(self, encoder: nn.Module | None, lm: nn.Module, tokenizer, spec: CaptionerSpec):
        super().__init__()
        from peft import LoraConfig, get_peft_model

        spec.validate()
        self.spec = spec
        self.tokenizer = tokenizer
        self.encoder = encoder
        if encoder is not None:
            encoder.requires_grad_(False)
            encoder.eval()
        names = {n.rsplit(".", 1)[-1] for n, _ in lm.named_modules()}
        targets = [t for t in spec.lora_targets if t in names] or "all-linear"
        if targets == "all-linear":
            log.warning("none of the LoRA targets %s exist in this LM: adapting all linear layers", spec.lora_targets)
        cfg = LoraConfig(r=spec.lora_r, lora_alpha=spec.lora_alpha, lora_dropout=spec.lora_dropout,
                         target_modules=targets, task_type="CAUSAL_LM", bias="none")
        self.lm = get_peft_model(lm, cfg)
        width = lm.get_input_embeddings().embedding_dim
        self.uses_image = spec.image_tokens != "none"
        self.projector = None
        if self.uses_image:
            if encoder is None:
                raise ValueError(f"image_tokens={spec.image_tokens!r} needs an encoder")
            self.projector = Projector(int(encoder.embed_dim), width, spec.projector)
        self._warned: set[str] = set()

    # ----------------------------------------------------------- inputs
    def train(self, mode: bool = True) -> Captioner:
        super().train(mode)
        if self.encoder is not None:
            self.encoder.eval()  # frozen: no dropout / drop-path noise ever
        return self

    @property
    def device(self) -> torch.device:
        return next(self.lm.parameters()).device

    @property
    def n_image_tokens(self) -> int:
        s = self.spec
        return {"none": 0, "cls": 1, "patch": s.patch_grid**2, "cls+patch": 1 + s.patch_grid**2}[s.image_tokens]

    def context_length(self) -> int:
        cfg = self.lm.get_base_model().config
        native = int(getattr(cfg, "max_position_embeddings", 0) or 2048)
        return min(native, self.spec.max_length) if self.spec.max_length else native

    def _warn_once(self, key: str, msg: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(msg, stacklevel=3)
            log.warning(msg)

    def prompt_ids(self, reserve: int = 0, text: str | None = None) -> list[int]:
        """Token ids of the prompt (``text``, e.g. a question, else the spec's), cut (with a warning)
        so image + prompt + ``reserve`` fit the context."""
        tok = self.tokenizer
        text = self.spec.prompt if text is None else text
        if self.spec.chat_template and getattr(tok, "chat_template", None):
            chat = tok.apply_chat_template([{"role": "user", "content": text}],
                                           tokenize=False, add_generation_prompt=True)
            ids = tok(chat, add_special_tokens=False)["input_ids"]
        else:
            ids = tok(text + "\n", add_special_tokens=True)["input_ids"]
        room = self.context_length() - self.n_image_tokens - reserve
        if room < 1:
            raise ValueError(
                f"context of {self.context_length()} tokens cannot hold {self.n_image_tokens} image tokens "
                f"and {reserve} caption tokens"
            )
        if len(ids) > room:
            self._warn_once("prompt", f"prompt of {len(ids)} tokens is longer than the {room} left in the "
                            f"model's context: cut to its last {room} tokens")
            ids = ids[-room:]
        return ids

    def _prompt_batch(self, batch: int, prompts: Sequence[str] | None, reserve: int) -> list[list[int]]:
        if prompts is None:
            return [self.prompt_ids(reserve=reserve)] * batch
        if len(prompts) != batch:
            raise ValueError(f"{len(prompts)} prompts for a batch of {batch}")
        return [self.prompt_ids(reserve=reserve, text=p) for p in prompts]

    def encode_images(self, x: torch.Tensor) -> torch.Tensor:
        """Frozen encoder features (no gradient), ready for ``forward(features=...)``."""
        if not self.uses_image:
            return torch.zeros(x.shape[0], 0, 1)
        with torch.no_grad():
            return image_features(self.encoder, x, self.spec.image_tokens, self.spec.patch_grid)

    def _prefix(self, features: torch.Tensor | None, prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(embeddings, attention mask)`` of ``[padding, image tokens, prompt]`` per row.

        Prompts of different lengths (questions) are left-padded, so every row's text starts right
        after the shared prefix length; with one prompt for all rows there is no padding at all.
        """
        emb = self.lm.get_input_embeddings()
        width = max(len(p) for p in prompts)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, width - len(p):] = torch.tensor(p)
            mask[i, width - len(p):] = 1
        text = emb(ids.to(self.device))
        mask = mask.to(self.device)
        if not self.uses_image:
            return text, mask
        img = self.projector(features.to(self.device, dtype=self.projector_dtype)).to(text.dtype)
        ones = torch.ones(img.shape[1], dtype=torch.long, device=self.device)
        rows, masks = [], []
        for i, p in enumerate(prompts):  # image tokens sit right before each row's prompt, after its padding
            n_pad = width - len(p)
            rows.append(torch.cat([text[i, :n_pad], img[i], text[i, n_pad:]]))
            masks.append(torch.cat([mask[i, :n_pad], ones, mask[i, n_pad:]]))
        return torch.stack(rows), torch.stack(masks)

    @property
    def projector_dtype(self) -> torch.dtype:
        return next(self.projector.parameters()).dtype if self.projector is not None else torch.float32

    # ----------------------------------------------------------- training
    def forward(self, features: torch.Tensor | None, captions: list[str], max_caption_tokens: int = 128,
                prompts: Sequence[str] | None = None) -> torch.Tensor:
        """Mean cross-entropy of the caption tokens (image and prompt positions are not scored).

        ``prompts``: one per row (a question, its answer as the caption), else the spec's prompt."""
        tok = self.tokenizer
        eos = tok.eos_token_id
        reserve = min(max_caption_tokens, 32)
        prompt_rows = self._prompt_batch(len(captions), prompts, reserve)
        room = self.context_length() - self.n_image_tokens - max(len(p) for p in prompt_rows)
        cap_ids = []
        for text in captions:
            ids = tok(" " + text.strip(), add_special_tokens=False)["input_ids"] + [eos]
            limit = min(max_caption_tokens, room)
            if len(ids) > limit:
                self._warn_once("caption", f"caption of {len(ids)} tokens cut to {limit} (max_caption_tokens / context)")
                ids = ids[:limit]
            cap_ids.append(ids)
        b = len(captions)
        longest = max(len(c) for c in cap_ids)
        pad = tok.pad_token_id if tok.pad_token_id is not None else eos
        ids = torch.full((b, longest), pad, dtype=torch.long)
        labels = torch.full((b, longest), -100, dtype=torch.long)
        mask = torch.zeros((b, longest), dtype=torch.long)
        for i, c in enumerate(cap_ids):
            ids[i, : len(c)] = torch.tensor(c)
            labels[i, : len(c)] = torch.tensor(c)
            mask[i, : len(c)] = 1
        ids, labels, mask = ids.to(self.device), labels.to(self.device), mask.to(self.device)
        prefix, prefix_mask = self._prefix(features, prompt_rows)
        embeds = torch.cat([prefix, self.lm.get_input_embeddings()(ids)], dim=1)
        k = prefix.shape[1]
        full_mask = torch.cat([prefix_mask, mask], dim=1)
        full_labels = torch.cat([torch.full((b, k), -100, dtype=torch.long, device=self.device), labels], dim=1)
        kwargs = {}
        if (prefix_mask == 0).any():  # left padding: positions count real tokens only, as generate() does
            kwargs["position_ids"] = (full_mask.cumsum(1) - 1).clamp(min=0)
        out = self.lm(inputs_embeds=embeds, attention_mask=full_mask, labels=full_labels, **kwargs)
        return out.loss

    def trainable_parameters(self) -> dict[str, list[nn.Parameter]]:
        """Parameter groups: the projector and the LoRA adapters (nothing else is trainable)."""
        lora = [p for n, p in self.lm.named_parameters() if "lora_" in n]
        for n, p in self.lm.named_parameters():
            p.requires_grad_("lora_" in n)
        proj = list(self.projector.parameters()) if self.projector is not None else []
        return {"projector": proj, "lora": lora}

    # ----------------------------------------------------------- generation
    @torch.no_grad()
    def generate(self, features: torch.Tensor | None, batch: int | None = None, max_new_tokens: int = 64,
                 num_beams: int = 1, prompts: Sequence[str] | None = None) -> list[str]:
        """Greedy (``num_beams=1``) or beam-search captions (or, with ``prompts``, answers) for a batch."""
        b = features.shape[0] if features is not None else int(batch or (len(prompts) if prompts else 1))
        prompt_rows = self._prompt_batch(b, prompts, max_new_tokens)
        room = self.context_length() - self.n_image_tokens - max(len(p) for p in prompt_rows)
        if max_new_tokens > room:
            self._warn_once("new_tokens", f"max_new_tokens {max_new_tokens} cut to {room} to fit the context")
            max_new_tokens = room
        was = self.training
        self.eval()
        try:
            prefix, mask = self._prefix(features, prompt_rows)
            tok = self.tokenizer
            out = self.lm.generate(
                inputs_embeds=prefix, attention_mask=mask, max_new_tokens=max_new_tokens, num_beams=num_beams,
                do_sample=False, eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
                early_stopping=num_beams > 1, temperature=None, top_p=None, top_k=None,
            )
        finally:
            self.train(was)
        return [t.strip() for t in tok.batch_decode(out, skip_special_tokens=True)]

    # ----------------------------------------------------------- save / load
    def trained_state(self) -> dict[str, torch.Tensor]:
        from peft import get_peft_model_state_dict

        state = {f"lora.{k}": v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(self.lm).items()}
        if self.projector is not None:
            state.update({f"projector.{k}": v.detach().cpu().contiguous() for k, v in self.projector.state_dict().items()})
        return state

    def save(self, out_dir: str | Path, extra: dict | None = None) -> Path:
        """``captioner.safetensors`` (projector + LoRA), ``encoder.safetensors``, ``captioner.json``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        _save_tensors(self.trained_state(), out / "captioner.safetensors")
        if self.encoder is not None:
            enc = {k: v.detach().cpu().contiguous() for k, v in self.encoder.state_dict().items()}
            _save_tensors(enc, out / "encoder.safetensors")
        meta = {"spec": asdict(self.spec), **(extra or {})}
        tmp = out / "captioner.json.tmp"
        tmp.write_text(json.dumps(meta, indent=2, default=str))
        tmp.replace(out / "captioner.json")
        return out

    def load_trained_state(self, state: dict[str, torch.Tensor]) -> None:
        from peft import set_peft_model_state_dict

        lora = {k[5:]: v for k, v in state.items() if k.startswith("lora.")}
        result = set_peft_model_state_dict(self.lm, lora)
        unexpected = getattr(result, "unexpected_keys", [])
        if unexpected:
            raise ValueError(f"LoRA weights do not fit this LM: unexpected {unexpected[:5]}")
        if self.projector is not None:
            proj = {k[10:]: v for k, v in state.items() if k.startswith("projector.")}
            if not proj:
                raise ValueError("saved captioner has no projector weights but this spec uses the image")
            self.projector.load_state_dict(proj)


def _save_tensors(state: dict[str, torch.Tensor], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp))
    tmp.replace(path)


def build_captioner(spec: CaptionerSpec, lm=None, tokenizer=None, encoder: nn.Module | None = None,
                    encoder_weights: str | None = None, lm_dtype: torch.dtype = torch.float32) -> Captioner:
    """A fresh captioner; ``lm``/``tokenizer``/``encoder`` may be given (else built from the spec)."""
    from dermino.caption.lm import load_lm
    from dermino.models import create

    if lm is None or tokenizer is None:
        lm, tokenizer = load_lm(spec.lm, dtype=lm_dtype)
    if encoder is None and spec.image_tokens != "none":
        encoder = create(spec.encoder, weights=encoder_weights, **spec.encoder_overrides)
    if encoder is not None and hasattr(encoder, "spec") and hasattr(encoder.spec, "img_size"):
        # a checkpoint may set the position grid: record it so a reload builds the same shapes
        spec.encoder_overrides = {**spec.encoder_overrides, "img_size": int(encoder.spec.img_size)}
    spec.encoder_weights = str(encoder_weights) if encoder_weights else spec.encoder_weights
    return Captioner(encoder if spec.image_tokens != "none" else None, lm, tokenizer, spec)


def load_captioner(run_dir: str | Path, lm=None, tokenizer=None, device: str = "cpu") -> Captioner:
    """Rebuild a saved captioner (from ``Captioner.save``) in eval mode."""
    from dermino.caption.lm import load_lm
    from dermino.config import from_dict
    from dermino.models import create

    run = Path(run_dir)
    meta_path = run / "captioner.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{run}: no captioner.json (is it a 'dermino caption train' output?)")
    meta = json.loads(meta_path.read_text())
    spec = from_dict(CaptionerSpec, meta["spec"], where=str(meta_path))
    dev = torch.device(device)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    if lm is None or tokenizer is None:
        lm, tokenizer = load_lm(spec.lm, dtype=dtype)
    encoder = None
    if spec.image_tokens != "none":
        enc_path = run / "encoder.safetensors"
        if not enc_path.is_file():
            raise FileNotFoundError(f"{run}: encoder.safetensors missing")
        encoder = create(spec.encoder, **spec.encoder_overrides)
        encoder.load_state_dict(load_file(str(enc_path)))
    cap = Captioner(encoder, lm, tokenizer, spec)
    cap.load_trained_state(load_file(str(run / "captioner.safetensors")))
    return cap.to(dev).eval()
