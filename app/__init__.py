"""ovchat: an OpenAI-compatible server for OpenVINO exports of causal LMs."""

__version__ = "0.1.0"
