"""vLLM's /tokenize and /detokenize: what the server would feed the model, and back."""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.protocol.openai_chat import ChatMessage, ToolChoice, ToolDefinition
from app.protocol.openai_common import TokenId, rule_error


class TokenizeRequest(BaseModel):
    """Either a prompt or chat messages."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str | None = None
    prompt: str | None = None
    messages: Annotated[list[ChatMessage], Field(min_length=1)] | None = None
    add_special_tokens: bool = False
    add_generation_prompt: bool = True
    # With messages: the tools a chat request would offer (and, ovchat's, how), since they
    # are described in the prompt.
    tools: list[ToolDefinition] | None = None
    tool_choice: ToolChoice | None = None

    @model_validator(mode="after")
    def _one_input(self) -> Self:
        if (self.prompt is None) == (self.messages is None):
            raise rule_error("Give exactly one of prompt and messages.", "prompt")
        if self.messages is None and (self.tools or self.tool_choice):
            raise rule_error("tools go with messages.", "tools")
        names = {tool.function.name for tool in self.tools or []}
        choice = self.tool_choice
        if not isinstance(choice, str | None) and choice.function.name not in names:
            raise rule_error("tool_choice names a function that is not in tools.", "tool_choice")
        return self


class TokenizeResponse(BaseModel):
    count: int
    max_model_len: int
    tokens: list[int]


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    model: str | None = None
    tokens: list[TokenId]


class DetokenizeResponse(BaseModel):
    prompt: str
