"""``vigos serve``: an OpenAI-compatible server of the vLLM rollout API subset, on the Hugging Face model."""
