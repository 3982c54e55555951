"""Sampling completions: Hugging Face generate, the lean sampler, a vLLM server, colocated vLLM."""
