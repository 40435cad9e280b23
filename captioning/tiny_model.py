"""A tiny random LLaVA-NeXT built locally: real architecture, random weights, no download.

Tests, the demo and the benchmark need a captioner that loads through the real code paths
(``from_pretrained`` on a directory, the processor's chat template, vLLM's model loader) without any
network. :func:`save_tiny_llava_next` writes such a model directory::

    from captioning.tiny_model import save_tiny_llava_next
    model_dir = save_tiny_llava_next("/tmp/tiny-llava")       # ~2 MB, ~1 s
    # python -m pipelines.caption ... --model /tmp/tiny-llava

What it holds, and why each choice:
- a BPE tokenizer trained on the fly with ``tokenizers`` on a small scene vocabulary (so the random
  model's output is word salad made of real words), with ``<s>``, ``</s>``, ``<unk>``, ``<pad>`` and
  the ``<image>`` placeholder as special tokens;
- ``LlavaNextImageProcessor`` and ``LlavaNextProcessor`` built from arguments (56-px tiles, anyres
  pinpoints that are multiples of 56) and a chat template in the ``llava-v1.6-mistral`` shape
  (``[INST] <image>\\n{question} [/INST]``);
- a config whose attention head size is 64 in both towers (vLLM's CPU attention kernels accept 64;
  16 fails);
- weights saved under the names of the published ``llava-hf`` checkpoints
  (``vision_tower.vision_model.*``, ``language_model.model.*``, ``language_model.lm_head.*``,
  ``multi_modal_projector.*``, ``image_newline``), which both transformers and vLLM load.
The captions are meaningless; only the plumbing is real.
"""

from __future__ import annotations

import json
import logging
import string
from pathlib import Path

logger = logging.getLogger(__name__)

IMAGE_TOKEN = "<image>"
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", IMAGE_TOKEN]  # ids 0..4 in this order
TILE = 56  # vision tower input size (px); LLaVA-NeXT's real one is 336
PATCH = 14  # 4x4 patches per tile -> 16 image features per tile
HEAD_DIM = 64  # vLLM's CPU attention accepts 32/64/80/96/112/128+, not 16
VOCAB_SIZE = 512

# A mistral-style LLaVA-NeXT chat template: images first, then the text, in one [INST] block.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' }}"
    "{% for c in message['content'] if c['type'] == 'image' %}{{ '<image>\n' }}{% endfor %}"
    "{% for c in message['content'] if c['type'] == 'text' %}{{ c['text'] }}{% endfor %}"
    "{{ ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{% for c in message['content'] if c['type'] == 'text' %}{{ ' ' + c['text'] + '</s>' }}{% endfor %}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported') }}{% endif %}"
    "{% endfor %}"
)

_WORDS = (
    "a an the of in on at with and to from by near under over behind next is are was "
    "man woman person people child boy girl dog cat car bus bicycle street road room kitchen table chair "
    "window door tree grass water sky field building city house ball game player team stage crowd screen "
    "video image picture scene frame camera shot view close up small large red blue green white black "
    "standing sitting walking running riding playing talking holding looking cooking driving dancing "
    "singing showing wearing smiling reading writing music guitar phone computer food plate cup hand face "
    "shirt hat light dark bright indoor outdoor day night sun snow rain beach mountain river boat train "
    "describe this in one short sentence what happens shows there two three some group background front "
    "INST"
).split()


def tiny_llava_next_config(vocab_size: int = VOCAB_SIZE):
    """A ``LlavaNextConfig`` with a 2-layer CLIP vision tower and a 2-layer Llama text model."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaNextConfig

    vision = CLIPVisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=64 // HEAD_DIM,
        image_size=TILE,
        patch_size=PATCH,
        projection_dim=64,
    )
    text = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=128 // HEAD_DIM,
        num_key_value_heads=128 // HEAD_DIM,
        head_dim=HEAD_DIM,
        max_position_embeddings=4096,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
        tie_word_embeddings=False,
    )
    return LlavaNextConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=SPECIAL_TOKENS.index(IMAGE_TOKEN),
        image_grid_pinpoints=[[TILE, 2 * TILE], [2 * TILE, TILE], [2 * TILE, 2 * TILE]],
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        image_seq_length=(TILE // PATCH) ** 2,
        tie_word_embeddings=False,
    )


def build_tiny_tokenizer(vocab_size: int = VOCAB_SIZE):
    """A fast BPE tokenizer (Metaspace, like Mistral's) trained here on :data:`_WORDS`; adds ``<s>``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        show_progress=False,
        initial_alphabet=list(string.printable),  # any ASCII prompt tokenizes without <unk>
    )
    corpus = [" ".join(_WORDS[i:] + _WORDS[:i]) for i in range(0, len(_WORDS), 7)] + ["[INST] [/INST]"]
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": IMAGE_TOKEN},
        padding_side="left",
        model_max_length=4096,
    )


def build_tiny_processor():
    """``LlavaNextProcessor`` (tokenizer above + a 56-px anyres image processor) with the chat template."""
    from transformers import LlavaNextImageProcessor, LlavaNextProcessor

    image_processor = LlavaNextImageProcessor(
        size={"shortest_edge": TILE},
        crop_size={"height": TILE, "width": TILE},
        image_grid_pinpoints=[[TILE, 2 * TILE], [2 * TILE, TILE], [2 * TILE, 2 * TILE]],
    )
    return LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=build_tiny_tokenizer(),
        patch_size=PATCH,
        vision_feature_select_strategy="default",
        chat_template=CHAT_TEMPLATE,
        image_token=IMAGE_TOKEN,
        num_additional_image_tokens=1,  # CLIP's CLS token, dropped by the "default" strategy
    )


def build_tiny_llava_next(seed: int = 0):
    """``(model, processor)``: a random ``LlavaNextForConditionalGeneration`` in eval mode, fp32."""
    import torch
    from transformers import LlavaNextForConditionalGeneration

    processor = build_tiny_processor()
    config = tiny_llava_next_config(vocab_size=len(processor.tokenizer))
    torch.manual_seed(seed)
    model = LlavaNextForConditionalGeneration(config).eval()
    model.generation_config.update(bos_token_id=1, eos_token_id=2, pad_token_id=3, do_sample=False)
    return model, processor


def save_tiny_llava_next(out_dir: str | Path, seed: int = 0) -> Path:
    """Build the tiny model and save model + processor to ``out_dir`` (loadable by path); returns it."""
    out = Path(out_dir)
    model, processor = build_tiny_llava_next(seed)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    _rename_to_hub_layout(out)
    logger.info("tiny LLaVA-NeXT (seed %d) saved to %s", seed, out)
    return out


def _hub_name(key: str) -> str:
    """A saved weight name -> the published llava-hf checkpoint name (names already in that form stay).

    transformers 5.x saves most weights under hub names but the vision tower as ``vision_tower.*``;
    in-memory names (``model.*``) are mapped too, so the rename does not depend on the save format.
    """
    for prefix, hub in (
        ("vision_tower.vision_model.", "vision_tower.vision_model."),
        ("model.vision_tower.vision_model.", "vision_tower.vision_model."),
        ("model.vision_tower.", "vision_tower.vision_model."),
        ("vision_tower.", "vision_tower.vision_model."),
        ("model.language_model.", "language_model.model."),
        ("lm_head.", "language_model.lm_head."),
        ("model.multi_modal_projector.", "multi_modal_projector."),
        ("model.image_newline", "image_newline"),
        ("language_model.", "language_model."),
        ("multi_modal_projector.", "multi_modal_projector."),
        ("image_newline", "image_newline"),
    ):
        if key.startswith(prefix):
            return hub + key[len(prefix) :]
    raise ValueError(f"unexpected weight name {key!r} in the tiny LLaVA-NeXT checkpoint")


def _rename_to_hub_layout(out: Path) -> None:
    """Rewrite ``model.safetensors`` with hub names (vLLM's loader expects ``vision_tower.vision_model.*``)."""
    from safetensors.torch import load_file, save_file

    files = sorted(out.glob("*.safetensors"))
    if len(files) != 1:
        raise RuntimeError(f"{out}: expected one .safetensors file for the tiny model, found {files}")
    tensors = load_file(files[0])
    save_file({_hub_name(k): v.contiguous() for k, v in tensors.items()}, files[0], metadata={"format": "pt"})
    index = out / "model.safetensors.index.json"
    if index.exists():  # not written for a single small file; kept consistent if a version writes one
        data = json.loads(index.read_text())
        data["weight_map"] = {_hub_name(k): v for k, v in data["weight_map"].items()}
        index.write_text(json.dumps(data, indent=2))
