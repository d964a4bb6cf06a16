"""The synthetic preference world: code-generated prompts and responses with an exact oracle
(``docs/user_guide.md``, "The synthetic preference world").

It is the embedded default of the quickstart and of the tests: a closed vocabulary (see
:func:`vocabulary`), deterministic by seed, and small enough for a 2-layer reward model to learn on
CPU. Text is generated in the canonical form of the word-level tokenizer: lower case, one space
between tokens, punctuation split off (``"tell me about rivers ."``), so decoding a tokenized sample
gives the sample back.

Tokens are ``re.findall(r"\\w+|[^\\w\\s]", text.lower())``, so the oracle ignores case and spacing
around punctuation and is defined for any text, including the empty string and garbage.

Dimensions (``DIMENSIONS``) and the exact meaning of each level:

``verbosity`` 0..3, from the number of sentences ``n`` of the response. A sentence is a run of tokens
    holding at least one word and ending at ``.``, ``!``, ``?`` or at the end of the text.
    Level 0: ``n <= 1``; 1: ``n`` in 2..3; 2: ``n`` in 4..5; 3: ``n >= 6``.
    Generated responses have 1 / 2-3 / 4-5 / 6-7 sentences.
``formality`` 0..2, from the occurrences ``F`` of formal markers (moreover, furthermore, notably) and
    ``C`` of casual markers (yeah, basically, honestly). Level 0 (casual): no marker at all, or
    ``F / (F + C) < 1/3``; 1 (mixed): ``1/3 <= F / (F + C) <= 2/3``; 2 (formal): ``F / (F + C) > 2/3``.
    Generated responses hold 0-2 casual and no formal markers / 1-2 of each, as many of both / 1-2
    formal and no casual markers, as sentence openers (``"moreover , ..."``).
``helpfulness`` 0..3, from the number ``k`` of distinct keywords of the prompt's topic that the
    response mentions (each topic has six, see ``TOPICS``). Level 0: ``k = 0``; 1: ``k = 1``;
    2: ``k`` in 2..4; 3: ``k >= 5``. Generated responses mention 0 / 1 / 3 / 6 of them, so each
    sits in the middle of its bucket. The topic is the first topic word of the prompt after its
    ``<name level>`` prefix is stripped; a prompt without a topic word gives level 0. Keywords of
    other topics do not count. By default generated responses only mention keywords of their own
    topic; ``distractor_rate`` adds one off-topic keyword to that share of responses, which makes the
    head much harder (the 2-layer quickstart model then has to learn 240 keyword-topic associations
    and stays near 0.83 accuracy on this head).

The three levels of a generated response are drawn uniformly and independently, so no dimension
predicts another. ``LEVEL_NAMES`` gives a short readable name of every level.
"""

from __future__ import annotations

import contextlib
import random
import re

from moslim_pl.errors import MoslimError
from moslim_pl.prefix import PrefixError, strip_prefix
from moslim_pl.schema import Dimension

DIMENSIONS: tuple[Dimension, ...] = (
    Dimension("verbosity", low=0, high=3, default=1),
    Dimension("formality", low=0, high=2, default=2),
    Dimension("helpfulness", low=0, high=3, default=3),
)

LEVEL_NAMES: dict[str, tuple[str, ...]] = {
    "verbosity": ("0-1 sentences", "2-3 sentences", "4-5 sentences", "6+ sentences"),
    "formality": ("casual", "mixed", "formal"),
    "helpfulness": ("no topic keyword", "1 topic keyword", "2-4 topic keywords", "5+ topic keywords"),
}

# Each topic is one word and owns six keywords used nowhere else, so the oracle counts them without
# ambiguity and a response cannot raise its helpfulness with another topic's words.
TOPICS: dict[str, tuple[str, ...]] = {
    "rivers": ("delta", "estuary", "tributary", "floodplain", "meander", "rapids"),
    "volcanoes": ("magma", "lava", "crater", "eruption", "ash", "caldera"),
    "oceans": ("tides", "salinity", "coral", "currents", "abyss", "plankton"),
    "forests": ("canopy", "timber", "undergrowth", "moss", "ferns", "bark"),
    "deserts": ("dunes", "cactus", "oasis", "mirage", "drought", "sandstorm"),
    "mountains": ("summit", "altitude", "ridge", "avalanche", "slopes", "peaks"),
    "planets": ("orbit", "gravity", "moons", "rings", "atmosphere", "asteroids"),
    "stars": ("fusion", "supernova", "constellation", "nebula", "brightness", "dwarf"),
    "bees": ("pollen", "hive", "nectar", "queen", "drones", "honey"),
    "birds": ("feathers", "migration", "nests", "beaks", "wings", "eggs"),
    "whales": ("krill", "blubber", "pods", "baleen", "breaching", "flukes"),
    "computers": ("processor", "memory", "software", "keyboard", "circuits", "algorithms"),
    "bicycles": ("pedals", "chain", "gears", "saddle", "spokes", "handlebars"),
    "trains": ("locomotive", "rails", "station", "carriages", "timetable", "signals"),
    "bread": ("yeast", "flour", "dough", "crust", "kneading", "oven"),
    "coffee": ("beans", "caffeine", "roast", "espresso", "grinder", "crema"),
    "tea": ("leaves", "steeping", "infusion", "kettle", "teapot", "oolong"),
    "music": ("melody", "rhythm", "harmony", "tempo", "chords", "lyrics"),
    "painting": ("canvas", "brush", "pigment", "easel", "watercolor", "portrait"),
    "chess": ("bishop", "checkmate", "gambit", "pawn", "knight", "castling"),
    "football": ("goal", "referee", "penalty", "striker", "offside", "stadium"),
    "gardens": ("soil", "compost", "seeds", "pruning", "weeds", "watering"),
    "weather": ("humidity", "pressure", "forecast", "rainfall", "thunder", "frost"),
    "earthquakes": ("faults", "tremor", "seismograph", "epicenter", "aftershock", "magnitude"),
    "batteries": ("lithium", "voltage", "electrolyte", "anode", "cathode", "charging"),
    "bridges": ("arch", "suspension", "girder", "cables", "pillars", "span"),
    "castles": ("moat", "rampart", "turret", "drawbridge", "dungeon", "battlements"),
    "libraries": ("catalog", "shelves", "archive", "librarian", "borrowing", "manuscripts"),
    "vaccines": ("antigen", "immunity", "booster", "antibodies", "dose", "trials"),
    "dinosaurs": ("fossils", "jurassic", "extinction", "raptors", "herbivores", "paleontology"),
    "rainbows": ("refraction", "prism", "spectrum", "sunlight", "raindrops", "violet"),
    "cheese": ("curd", "rennet", "aging", "cheddar", "milk", "brie"),
    "photography": ("aperture", "shutter", "exposure", "lens", "tripod", "focus"),
    "clouds": ("vapor", "cumulus", "droplets", "cirrus", "condensation", "overcast"),
    "robots": ("sensors", "actuators", "servo", "gripper", "autonomy", "programming"),
    "submarines": ("sonar", "ballast", "periscope", "hull", "torpedo", "diving"),
    "pyramids": ("pharaoh", "limestone", "tomb", "sphinx", "burial", "hieroglyphs"),
    "tornadoes": ("vortex", "funnel", "supercell", "debris", "twister", "shelter"),
    "islands": ("lagoon", "reef", "archipelago", "shoreline", "palms", "ferry"),
    "spiders": ("silk", "web", "venom", "arachnids", "fangs", "molting"),
}

# Few markers, each frequent: a small reward model learns them from a few thousand rows.
FORMAL_MARKERS: tuple[str, ...] = ("moreover", "furthermore", "notably")
CASUAL_MARKERS: tuple[str, ...] = ("yeah", "basically", "honestly")

_PROMPT_TEMPLATES = (
    "tell me about {t} .",
    "explain {t} .",
    "what should i know about {t} ?",
    "describe {t} .",
    "give me an overview of {t} .",
    "write a short note on {t} .",
    "can you tell me about {t} ?",
    "i want to learn about {t} .",
)

# Neutral sentences: no marker, no keyword, so they only add length.
_FILLER_TEMPLATES = (
    "people often ask about {t}",
    "there is a lot to say about {t}",
    "many people find {t} interesting",
    "this is a good question",
    "it helps to start with the basics",
    "the details can vary from place to place",
    "experts have studied {t} for a long time",
    "it is worth looking at a few examples",
    "the topic of {t} comes up in many books",
    "some parts are simple and some are not",
    "you can learn more about {t} over time",
    "here is a short summary",
    "one idea leads to the next",
    "the story of {t} is still being written",
    "a good guide can make {t} easier to follow",
    "each case is a little different",
)

# Sentences carrying a list of keywords ("a", "a and b", "a , b and c").
_KEYWORD_TEMPLATES = (
    "it comes down to {k}",
    "it is closely linked to {k}",
    "think about {k} first",
    "a big part of it is {k}",
    "{k} matter here",
    "the main points are {k}",
)

_SENTENCE_COUNTS = {0: (1,), 1: (2, 3), 2: (4, 5), 3: (6, 7)}
# Counts 2, 4 and 5 are never generated: the gaps keep a small model from having to tell n from n + 1.
_KEYWORD_COUNTS = {0: 0, 1: 1, 2: 3, 3: 6}
_SENTENCE_END = frozenset(".!?")
_TOKEN = re.compile(r"\w+|[^\w\s]")
_KEYWORD_TOPIC = {k: t for t, ks in TOPICS.items() for k in ks}
_FORMAL = frozenset(FORMAL_MARKERS)
_CASUAL = frozenset(CASUAL_MARKERS)


def tokenize(text: str) -> list[str]:
    """Split text the way the tiny word-level tokenizer does: lower-cased words and punctuation marks."""
    return _TOKEN.findall(text.lower())


def _rng(purpose: str, seed: int) -> random.Random:
    # A separate stream per purpose keeps prompts unchanged when the row sampler changes.
    return random.Random(f"moslim-synthetic:{purpose}:{seed}")


def count_sentences(text: str) -> int:
    """Runs of tokens holding a word and ending at ``.``, ``!``, ``?`` or the end of the text."""
    count, open_sentence = 0, False
    for token in tokenize(text):
        if token in _SENTENCE_END:
            count += open_sentence
            open_sentence = False
        elif token[0].isalnum() or token[0] == "_":
            open_sentence = True
    return count + open_sentence


def topic_of(prompt: str) -> str | None:
    """The first topic word of the prompt (its prefix stripped), or ``None``."""
    # A malformed prefix is just text: its words are no topic words.
    with contextlib.suppress(PrefixError):
        prompt = strip_prefix(prompt, DIMENSIONS)
    return next((t for t in tokenize(prompt) if t in TOPICS), None)


def oracle(prompt: str, response: str) -> dict[str, int]:
    """The true level of every dimension of ``response`` to ``prompt`` (see the module docstring)."""
    tokens = tokenize(response)
    n = count_sentences(response)
    verbosity = 0 if n <= 1 else 1 if n <= 3 else 2 if n <= 5 else 3
    formal = sum(t in _FORMAL for t in tokens)
    casual = sum(t in _CASUAL for t in tokens)
    total = formal + casual
    # Integer comparisons of formal / total with 1/3 and 2/3, so the thresholds are exact.
    if total == 0 or 3 * formal < total:
        formality = 0
    elif 3 * formal > 2 * total:
        formality = 2
    else:
        formality = 1
    topic = topic_of(prompt)
    mentioned = len(set(tokens).intersection(TOPICS[topic])) if topic else 0
    helpfulness = 0 if mentioned == 0 else 1 if mentioned == 1 else 2 if mentioned <= 4 else 3
    return {"verbosity": verbosity, "formality": formality, "helpfulness": helpfulness}


def vocabulary(prefix_tokens: bool = True) -> list[str]:
    """Every token of generated prompts and responses, sorted.

    With ``prefix_tokens`` the tokens of ``<name level>`` tags (``<``, ``>``, the dimension names and
    the level digits) are included, so a policy's tokenizer built from this list can read prefixes.
    """
    texts = [*_PROMPT_TEMPLATES, *_FILLER_TEMPLATES, *_KEYWORD_TEMPLATES, ", and ."]
    words = [*TOPICS, *_KEYWORD_TOPIC, *FORMAL_MARKERS, *CASUAL_MARKERS]
    tokens = {t for text in texts for t in tokenize(text.format(t="", k=""))} | set(words)
    if prefix_tokens:
        tokens |= {"<", ">"} | {d.name for d in DIMENSIONS}
        tokens |= {str(level) for d in DIMENSIONS for level in range(d.min_level, d.max_level + 1)}
    return sorted(tokens)


def generate_prompts(num_prompts: int, seed: int) -> list[str]:
    """``num_prompts`` prompts without prefix, all distinct up to ``len(TOPICS) * 8`` (320).

    Topics are dealt round-robin in a shuffled order, so each block of ``len(TOPICS)`` (40) prompts
    covers every topic once.
    """
    if num_prompts < 0:
        raise MoslimError(f"num_prompts must be >= 0, got {num_prompts}")
    rng = _rng("prompts", seed)
    prompts: list[str] = []
    while len(prompts) < num_prompts:
        topics = list(TOPICS)
        rng.shuffle(topics)
        templates = {t: rng.sample(_PROMPT_TEMPLATES, len(_PROMPT_TEMPLATES)) for t in topics}
        for round_ in range(len(_PROMPT_TEMPLATES)):
            prompts.extend(templates[t][round_].format(t=t) for t in topics)
    return prompts[:num_prompts]


def _keyword_list(keywords: list[str]) -> str:
    if len(keywords) == 1:
        return keywords[0]
    return " , ".join(keywords[:-1]) + " and " + keywords[-1]


def generate_response(
    topic: str,
    levels: dict[str, int],
    rng: random.Random,
    distractor_rate: float = 0.0,
    repeat_rate: float = 0.0,
    repeat_rng: random.Random | None = None,
) -> str:
    """A response about ``topic`` whose oracle levels are ``levels`` (all three dimensions).

    With ``repeat_rate``, that share of the responses that mention keywords mention 1-4 of them once
    more (drawn from ``repeat_rng``): the oracle counts distinct keywords, so the levels do not change.
    """
    num_sentences = rng.choice(_SENTENCE_COUNTS[levels["verbosity"]])
    keywords = rng.sample(TOPICS[topic], _KEYWORD_COUNTS[levels["helpfulness"]])
    if rng.random() < distractor_rate:
        other = rng.choice([t for t in TOPICS if t != topic])
        keywords.append(rng.choice(TOPICS[other]))
    if repeat_rate and keywords and repeat_rng is not None and repeat_rng.random() < repeat_rate:
        own = [k for k in keywords if k in TOPICS[topic]] or keywords
        keywords += repeat_rng.choices(own, k=repeat_rng.randint(1, 4))
    rng.shuffle(keywords)

    # Cut the keywords into 1..num_sentences non-empty groups, one keyword sentence each.
    groups: list[list[str]] = []
    if keywords:
        num_groups = rng.randint(1, min(num_sentences, len(keywords)))
        cuts = sorted(rng.sample(range(1, len(keywords)), num_groups - 1))
        groups = [keywords[a:b] for a, b in zip([0, *cuts], [*cuts, len(keywords)], strict=True)]
    bodies = [rng.choice(_KEYWORD_TEMPLATES).format(k=_keyword_list(g)) for g in groups]
    bodies += [f.format(t=topic) for f in rng.sample(_FILLER_TEMPLATES, num_sentences - len(groups))]
    rng.shuffle(bodies)

    formality = levels["formality"]
    num_formal = 0 if formality == 0 else rng.randint(1, 2)
    num_casual = rng.randint(0, 2) if formality == 0 else num_formal if formality == 1 else 0
    markers = [rng.choice(FORMAL_MARKERS) for _ in range(num_formal)]
    markers += [rng.choice(CASUAL_MARKERS) for _ in range(num_casual)]
    rng.shuffle(markers)
    openers: list[list[str]] = [[] for _ in bodies]
    for marker in markers:
        openers[rng.randrange(len(bodies))].append(marker)
    return " ".join(
        "".join(f"{m} , " for m in ops) + body + " ." for ops, body in zip(openers, bodies, strict=True)
    )


def generate_rows(
    num_prompts: int = 200,
    responses_per_prompt: int = 4,
    seed: int = 0,
    label_noise: float = 0.0,
    distractor_rate: float = 0.0,
    repeat_rate: float = 0.0,
) -> list[dict]:
    """Oracle-labelled pointwise rows ``{"prompt", "response", "verbosity", "formality", "helpfulness"}``.

    The prompts are ``generate_prompts(num_prompts, seed)``; every prompt gets ``responses_per_prompt``
    responses whose levels are drawn uniformly and independently per dimension. With ``label_noise``
    each label is, with that probability, replaced by a uniformly drawn other level (the response is
    unchanged). ``distractor_rate`` is the share of responses that also mention one keyword of another
    topic (which the oracle does not count). ``repeat_rate`` is the share of responses with keywords
    that mention some of them again (the oracle counts distinct keywords: same levels), so that a
    reward model learns that repeating a keyword is not mentioning another one.
    """
    for name, rate in (("label_noise", label_noise), ("repeat_rate", repeat_rate)):
        if not 0.0 <= rate <= 1.0:
            raise MoslimError(f"{name} must be in [0, 1], got {rate}")
    if responses_per_prompt < 0:
        raise MoslimError(f"responses_per_prompt must be >= 0, got {responses_per_prompt}")
    rng = _rng("rows", seed)
    # Noise has its own stream so that the same seed gives the same responses with or without noise.
    noise_rng = _rng("noise", seed)
    repeat_rng = _rng("repeats", seed)  # likewise: repeat_rate 0 leaves every response as it was
    ranges = {d.name: range(d.min_level, d.max_level + 1) for d in DIMENSIONS}
    rows: list[dict] = []
    for prompt in generate_prompts(num_prompts, seed):
        topic = topic_of(prompt)
        assert topic is not None, prompt  # every prompt template names a topic
        for _ in range(responses_per_prompt):
            levels = {name: rng.choice(r) for name, r in ranges.items()}
            response = generate_response(topic, levels, rng, distractor_rate, repeat_rate, repeat_rng)
            if label_noise:
                for name, true in levels.items():
                    if noise_rng.random() < label_noise:
                        levels[name] = noise_rng.choice([lvl for lvl in ranges[name] if lvl != true])
            rows.append({"prompt": prompt, "response": response, **levels})
    return rows
