"""The Telugu task prompts of the Akshara mixture, copied byte for byte from the mid-training write-up
(docs/akshara-runs.md, from the authors' mid-training write-up), so rebuilt data matches the published runs.

Kept verbatim even where odd: the fourth paraphrase prompt ends in "." and therefore renders as ".:".
"""

# TeSum and XL-Sum: user message = f"{prompt}:\n\n{text}".
SUMMARY_PROMPTS: tuple[str, ...] = (
    "కింది వ్యాసాన్ని సంక్షిప్తంగా సారాంశం చెప్పండి",
    "ఈ వ్యాసం యొక్క సారాంశం రాయండి",
    "కింది వ్యాసాన్ని సంగ్రహించండి",
    "వ్యాసం యొక్క ముఖ్యాంశాలను సంక్షిప్తంగా రాయండి",
    "ఈ వ్యాసాన్ని సంక్షిప్తంగా సారాంశం చెయ్యండి",
)

# IndicParaphrase: user message = f"{prompt}:\n\n{input}".
PARAPHRASE_PROMPTS: tuple[str, ...] = (
    "ఈ వాక్యాన్ని వేరే పదాలతో మళ్లీ రాయండి",
    "ఈ వాక్యాన్ని మరొక విధంగా వ్యక్తపరచండి",
    "ఈ వాక్యానికి సమానమైన అర్థం కలిగిన వేరే వాక్యం రాయండి",
    "ఈ వాక్యాన్ని పునర్వ్యాఖ్యానించండి.",
    "ఈ వాక్యాన్ని వేరే పదాలతో అదే అర్థంతో రాయండి",
    "ఈ వాక్యాన్ని మరొక రూపంలో వ్యక్తపరచండి",
    "ఈ వాక్యానికి సమానార్థక వాక్యం రాయండి",
    "ఈ వాక్యాన్ని వేరే విధంగా రూపొందించండి",
    "ఈ వాక్యాన్ని మరొక శైలిలో రాయండి",
    "ఈ వాక్యాన్ని పునర్వివరణ చేయండి",
)
