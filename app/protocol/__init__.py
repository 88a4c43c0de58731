"""Wire models, one module per API dialect: what each API accepts and returns, as its
reference defines it. Fields are ordered as the reference orders them, so a reader can hold
a module against it. Rules that need no server state are pydantic validators here; rules
that need the served model or the engine live in the dialect's validator (app/dialects).

- `openai_common`: what OpenAI's chat and text completions share (errors, usage, the
  sampling fields, models list).
- `openai_chat`, `openai_completions`: the two OpenAI endpoints.
- `vllm`: vLLM's /tokenize and /detokenize.
- `ovchat`: ovchat's own routes (health)."""
