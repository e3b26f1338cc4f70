"""Serving the model and landing what it sees: the OpenAI-compatible API and the interaction events."""
