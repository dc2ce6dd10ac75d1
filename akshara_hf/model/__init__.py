"""The Akshara model: the two files that ship to the Hub as remote code (they import only torch and transformers)."""
