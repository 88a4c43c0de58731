"""Chat templates ovchat knows by heart. Kept apart from the rendering code so that model
builders can ship the very template the renderer is tested against."""

# Phi-3-mini-4k-instruct's template as published with the current model revision (the one
# that keeps system messages; an earlier revision silently dropped them).
PHI3_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}"
    "{{'<|system|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'user' %}"
    "{{'<|user|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'assistant' %}"
    "{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)

# Phi-3's added tokens, in the order (and so with the id offsets) of the real tokenizer,
# which numbers them from 32000.
PHI3_ADDED_TOKENS = (
    "<|endoftext|>",
    "<|assistant|>",
    "<|placeholder1|>",
    "<|placeholder2|>",
    "<|placeholder3|>",
    "<|placeholder4|>",
    "<|system|>",
    "<|end|>",
    "<|placeholder5|>",
    "<|placeholder6|>",
    "<|user|>",
)
PHI3_EOS_TOKENS = ("<|endoftext|>", "<|assistant|>", "<|end|>")
