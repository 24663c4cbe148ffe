"""Cards for announced comparators whose weights are not public: listed, not loadable.

``dermino backbones`` shows them so a reader knows the slot exists; ``create`` refuses them
with the card's note. When the weights appear, the entry moves to its library's file with a
constructor, a key-layout test and its preprocessing.
"""

from __future__ import annotations

from dermino.models.baselines.common import Card, add_card

add_card(Card(
    name="dermfm_zero", family="DermFM-Zero", library="open_clip", arch="not published",
    hub_id="redlessone/DermFM-Zero (announced)", download="https://huggingface.co/redlessone/DermFM-Zero",
    files=(), licence="unknown", paper="Yan et al. (DermFM-Zero)", status="unreleased",
    note="weights and open_clip config not public when this slot was written; the hub page advertises "
         "open_clip loading, so the entry will be an OpenCLIPBaseline with the hub config once it can be read",
))
