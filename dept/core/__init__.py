"""The model: CLIP loading, prompts, the two encoders, DePT's head and mixin, the Dassl trainer,
its optimizer, the config keys and how a config is built, which settings identify a run, the
method records and the registry. Imports only ``dept.util`` (and torch, clip, Dassl)."""
