"""Recipe parsing, Muon + AdamW and nanochat's schedules, the TRL trainer, the recipe runner and run facts."""
