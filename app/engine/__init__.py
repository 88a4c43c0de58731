"""Inference engines. Nothing here imports FastAPI: engines take token ids and sampling
parameters and stream token ids back."""
