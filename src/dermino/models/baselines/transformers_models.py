"""Hugging Face transformers comparators: MedSigLIP-448 (Google Health AI Developer Foundations).

MedSigLIP is a SigLIP model (``transformers.SiglipModel``): a 400M-parameter So400m vision
tower at 448 px and a text tower of the same width. Its hub checkpoint is the model's own
``state_dict`` (``vision_model.*``, ``text_model.*``, ``logit_scale``, ``logit_bias``), so it
loads with every key placed. The image embedding its zero-shot scores is the attention-
pooled head output (``pooler_output``), which is also ``cls`` here (SigLIP has no class token).
Its tokenizer is a Hugging Face download (SentencePiece), not in an installed package: no
text tower offline.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from dermino.models.baselines.common import Card, load_plain, no_masks, register_baseline, tokens_to_map
from dermino.models.preprocess import HALF, Preprocess

# google/medsiglip-448: So400m SigLIP shapes (hidden 1152, 27 layers, 16 heads, MLP 4304, patch 14)
MEDSIGLIP_VISION = {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27,
                    "num_attention_heads": 16, "patch_size": 14, "image_size": 448}
MEDSIGLIP_TEXT = {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27,
                  "num_attention_heads": 16, "vocab_size": 32000, "max_position_embeddings": 64,
                  "projection_size": 1152}
# transformers SiglipImageProcessor (as configured on the hub): resize to 448 x 448 ignoring the
# aspect ratio, bicubic, rescale 1/255, normalise with mean = std = 0.5
MEDSIGLIP_PREPROCESS = Preprocess(448, 448, "squash", "bicubic", HALF, HALF, "proj",
                                  "transformers SiglipImageProcessor(size=448x448) of google/medsiglip-448")


class HFSiglipBaseline(nn.Module):
    """A transformers ``SiglipModel`` behind the dermino backbone API."""

    def __init__(self, preprocess: Preprocess, vision: dict, text: dict):
        super().__init__()
        from transformers import SiglipConfig, SiglipModel

        cfg = SiglipConfig(vision_config=vision, text_config=text)
        self.model = SiglipModel(cfg)
        self.preprocess = preprocess
        self.mean, self.std = preprocess.mean, preprocess.std
        self.embed_dim = int(cfg.vision_config.hidden_size)
        self.patch_size = int(cfg.vision_config.patch_size)
        self.name = "medsiglip_448"
        self.text_tower = None

    def _vision(self, x: Tensor, hidden: bool = False):
        return self.model.vision_model(pixel_values=x, output_hidden_states=hidden,
                                       interpolate_pos_encoding=x.shape[-1] != self.model.config.vision_config.image_size)

    def forward_features(self, x: Tensor, masks: Tensor | None = None) -> dict[str, Tensor]:
        no_masks(masks, self.name)
        out = self._vision(x)
        return {"cls": out.pooler_output, "patch": out.last_hidden_state, "proj": out.pooler_output}

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x)["cls"]

    def get_intermediate_layers(self, x: Tensor, indices: Sequence[int]) -> list[Tensor]:
        """Outputs of encoder layers (hidden_states[1:]) as (B, C, h, w) maps."""
        states = self._vision(x, hidden=True).hidden_states[1:]
        h, w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        return [tokens_to_map(states[i], h, w) for i in indices]

    def load_checkpoint(self, sd: dict[str, Tensor]) -> tuple[list, list, list]:
        return load_plain(self.model, sd, ())


@register_baseline(Card(
    name="medsiglip_448", family="MedSigLIP", library="transformers", arch="SiglipModel (So400m/14, 448 px)",
    hub_id="google/medsiglip-448", download="https://huggingface.co/google/medsiglip-448",
    files=("model.safetensors",), licence="Health AI Developer Foundations terms (gated)",
    paper="Sellergren et al. 2025, MedGemma technical report", text_tower=False,
    preprocess=MEDSIGLIP_PREPROCESS,
    text_note="the SigLIP SentencePiece tokenizer is a (gated) Hugging Face download, not in an installed "
              "package: the text tower is built and loaded, but cannot encode text offline",
    note="config written from the model card's So400m shapes; a mismatching hub file fails loudly "
         "(shape / missing / unexpected keys), never silently",
), tiny={"vision": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
                    "image_size": 28},
         "text": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
                  "projection_size": 64}})
def medsiglip_448(vision: dict | None = None, text: dict | None = None) -> HFSiglipBaseline:
    return HFSiglipBaseline(MEDSIGLIP_PREPROCESS, {**MEDSIGLIP_VISION, **(vision or {})},
                            {**MEDSIGLIP_TEXT, **(text or {})})
