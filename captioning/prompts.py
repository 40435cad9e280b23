"""Named, versioned prompt presets, and the rendering of a question into a model's chat format.

The DiscoVLA authors' prompt is not public. The trainer keeps the first 30 BPE tokens of a caption,
so the presets ask for one short sentence. A preset's text never changes once released: a new wording
is a new name (``...-v2``). Any other text is accepted as a custom prompt and identified by its
sha256; both are recorded in the caption set's provenance.

The question is wrapped with the model's own chat template (``processor.apply_chat_template``), one
image first, e.g. for ``llava-v1.6-mistral``: ``[INST] <image>\\n{question} [/INST]``. Both engines send
the same rendered string.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

PRESETS: dict[str, str] = {
    "frame-caption-v1": "Describe this image in one short sentence.",
    "frame-caption-action-v1": "In one short sentence, describe what the people or objects in this image are doing.",
}
_PRESET_NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*-v\d+$")


@dataclass(frozen=True)
class Prompt:
    name: str  # the preset name, or "custom"
    text: str  # the question asked about each frame

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


def resolve_prompt(prompt: str) -> Prompt:
    """A preset by name, or ``prompt`` itself as a custom question.

    A string shaped like a preset name (``word-word-vN``) that is not one is refused, so a typo in a
    preset name does not silently become the question.
    """
    if prompt in PRESETS:
        return Prompt(prompt, PRESETS[prompt])
    text = prompt.strip()
    if not text:
        raise ValueError(f"empty prompt; pass a preset name {sorted(PRESETS)} or a question")
    if _PRESET_NAME.match(text):
        raise ValueError(
            f"unknown prompt preset {text!r}; presets: {sorted(PRESETS)} (or pass a whole question)"
        )
    return Prompt("custom", text)


def chat_messages(question: str) -> list[dict]:
    """One user turn: the image, then the question (the order LLaVA-NeXT was trained on)."""
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]


def render_prompt(processor, question: str, where: str = "model") -> str:
    """The model's chat template applied to :func:`chat_messages`, ready for generation."""
    if not getattr(processor, "chat_template", None):
        raise ValueError(
            f"{where}: the processor has no chat template; a LLaVA-NeXT checkpoint ships one in "
            "chat_template.jinja / processor_config.json (llava-hf/* models do)"
        )
    return processor.apply_chat_template(chat_messages(question), add_generation_prompt=True, tokenize=False)


def chat_template_sha256(processor) -> str | None:
    template = getattr(processor, "chat_template", None)
    if template is None:
        return None
    if not isinstance(template, str):  # some versions keep {name: template}
        template = repr(sorted(dict(template).items()))
    return hashlib.sha256(template.encode("utf-8")).hexdigest()
