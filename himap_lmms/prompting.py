"""The paper's prompt format (vicuna_v1), shared by the tiny models and the lmms-eval adapter."""

from transformers import PreTrainedTokenizerBase

SYSTEM_PROMPT = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)

# "<s><system> USER: <content> ASSISTANT:" with string message contents, as in the paper's prompt (docs/method.md).
VICUNA_CHAT_TEMPLATE = (
    "{{ bos_token }}" + SYSTEM_PROMPT + "{% for message in messages %}"
    "{% if message['role'] == 'user' %} USER: {{ message['content'] }}"
    "{% else %} ASSISTANT: {{ message['content'] }}{{ eos_token }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %} ASSISTANT:{% endif %}"
)

IMAGE_TOKEN = "<image>"


def with_image_tokens(content: str, num_images: int) -> str:
    """Put one ``<image>`` placeholder per image before the text, unless the text already places them."""
    if num_images == 0 or IMAGE_TOKEN in content:
        return content
    return " ".join([IMAGE_TOKEN] * num_images) + "\n" + content


def chat_prompt(
    tokenizer: PreTrainedTokenizerBase, content: str, num_images: int, chat_template: str | None = None
) -> str:
    """One user turn (image placeholders first) ending in the generation prompt: what the adapter, the scripts
    and the testbed's training all feed the model. ``chat_template=None`` uses the tokenizer's own."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": with_image_tokens(content, num_images)}],
        chat_template=chat_template,
        tokenize=False,
        add_generation_prompt=True,
    )


def content_parts_prompt(
    tokenizer: PreTrainedTokenizerBase, content: str, num_images: int, chat_template: str | None = None
) -> str:
    """:func:`chat_prompt` with the user turn as content parts (one image part per image, then the text), the
    message format of chat-class models: LLaVA-OneVision's and Qwen's ChatML templates render an image part as their
    own placeholder and may not render a string content at all. Text that already places ``<image>`` gets no parts."""
    images = 0 if IMAGE_TOKEN in content else num_images
    parts = [{"type": "image"}] * images + [{"type": "text", "text": content}]
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": parts}], chat_template=chat_template, tokenize=False, add_generation_prompt=True
    )
