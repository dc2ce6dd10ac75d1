"""A tiny nanochat-format tokenizer directory (tokenizer.pkl + token_bytes.pt) for tests, built in ~0.1 s.

Trained with `akshara_hf.tokenization.tokenizer.train_tokenizer` on the built-in Telugu/English lines below, so it has real
Telugu merges (partial UTF-8 tokens included) and the 9 special tokens at ids vocab_size-9 .. vocab_size-1.
Deterministic: the same vocab_size gives the same ranks in every process. The corpus supports vocab_size up to
845 (580 merges); more raises AksharaError.
"""

from pathlib import Path

TELUGU = (
    "తెలుగు ఒక ద్రావిడ భాష. ఇది ఆంధ్రప్రదేశ్ మరియు తెలంగాణ రాష్ట్రాల అధికార భాష.",
    "నమస్కారం! మీరు ఎలా ఉన్నారు? నేను బాగున్నాను, ధన్యవాదాలు.",
    "హైదరాబాద్ తెలంగాణ రాజధాని. విజయవాడ కృష్ణా నది ఒడ్డున ఉంది.",
    "ఈ రోజు వాతావరణం చాలా బాగుంది. సాయంత్రం వర్షం పడవచ్చు.",
    "పిల్లలు పాఠశాలకు వెళ్ళారు. ఉపాధ్యాయుడు పాఠం చెప్పాడు.",
    "కంప్యూటర్\u200cలో తెలుగు అక్షరాలు రాయడం ఇప్పుడు సులభం.",
    "రైతులు పొలంలో వరి నాటారు. ఈ సంవత్సరం పంట బాగా పండింది.",
    "మా ఊరిలో ఒక పెద్ద చెరువు ఉంది. అక్కడ చాలా పక్షులు వస్తాయి.",
    "సినిమా చూడటానికి మేము థియేటర్\u200cకి వెళ్ళాము.",
    "గణితంలో ౧౨౩ మరియు 456 రెండూ సంఖ్యలే.",
    "వేమన పద్యాలు తెలుగు సాహిత్యంలో ప్రసిద్ధి చెందాయి.",
    "క్ష త్ర జ్ఞ శ్రీ అనే సంయుక్తాక్షరాలు తెలుగులో ఉన్నాయి.",
)
ENGLISH = (
    "The quick brown fox jumps over the lazy dog.",
    "I'm sure you're right, but we'll see what they've done.",
    "Tokenizers split text into pieces before byte-pair merges.",
    "Numbers like 2048, 65536 and 3.14159 appear in model configs.",
    "She said: \"Don't forget the meeting at 10:30 tomorrow!\"",
    "Python code: print(sum(range(10))) returns 45.",
    "Hyderabad is the capital of Telangana; Amaravati is in Andhra Pradesh.",
    "Small models learn quickly, but large models generalise better.",
    "Emoji such as 🙂 and 👩‍💻 take several bytes each.",
    "Tabs\tand  double  spaces\nand new lines are whitespace too.",
)


def corpus() -> list[str]:
    """Every Telugu line paired with every English line, plus a counter: varied enough for a few hundred merges."""
    return [f"{te} {en} {i}" for i, (te, en) in enumerate((te, en) for te in TELUGU for en in ENGLISH)] + list(TELUGU)


def make_nanochat_tokenizer_dir(path, vocab_size: int = 300) -> Path:
    """Write nanochat's tokenizer files (tokenizer.pkl, token_bytes.pt) for a tiny trained tokenizer into `path`."""
    from akshara_hf.tokenization.tokenizer import save_nanochat_tokenizer, train_tokenizer

    return save_nanochat_tokenizer(train_tokenizer(corpus(), vocab_size), path)
