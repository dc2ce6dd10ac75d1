"""The fast tokenizer, the chat template and nanochat's conversation layout."""
