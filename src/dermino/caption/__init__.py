"""Image captioning: frozen dermino encoder -> projector -> causal LM with LoRA (peft)."""
