"""Answer normalisation of the official VQA evaluation (the VQA API's vqaEval.py, GT-Vision-Lab/VQA), as it behaves.

Written from its description; each rule below is the official one, quirks included, so numbers compare with
published VQAv2 accuracies:

- A predicted answer: newlines and tabs become spaces, the ends are stripped, then `punctuation`, then
  `digits_and_articles`.
- The ten human answers are normalised only when they are not all the same string, and then only by
  `punctuation` (no digit words, articles or contractions); ten equal human answers are compared as they are.
- `punctuation`: each mark of PUNCTUATION is deleted when the answer has the mark beside a space (`"x ?"`,
  `"? x"`) or anywhere holds a comma between two digits (`"1,000"`), and is otherwise replaced by a space.
  Then every period not followed by a digit is deleted (`"3.5"` keeps its period), at most 32 of them: the
  official call passes `re.UNICODE` (32) where `re.sub` takes its count. The official period pattern also
  starts with `(?!<=\\d)`, a lookahead that can never match at a period, so it changes nothing.
- `digits_and_articles`: lower-cased and split on whitespace; number words zero..ten and `none` become
  digits; `a`, `an` and `the` are dropped; a word spelt without its apostrophe becomes the contraction
  (`dont` -> `don't`); words joined by one space.
"""

from __future__ import annotations

import re

PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
COMMA_BETWEEN_DIGITS = re.compile(r"\d,\d")
PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")
PERIODS_REMOVED_AT_MOST = 32

NUMBER_WORDS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
ARTICLES = frozenset({"a", "an", "the"})

# Each line: the contraction, then the spellings that become it. The official table also maps `let's` and
# `she's` to themselves (left out: no change), and maps `somebody'd` the wrong way round, to `somebodyd`
# (kept, so scores match). Its keys `Id've`, `Im` and `Ive` hold capitals and never match a lower-cased word.
_CONTRACTIONS = """
ain't aint
aren't arent
can't cant
could've couldve
couldn't couldnt
couldn't've couldn'tve couldnt've
didn't didnt
doesn't doesnt
don't dont
hadn't hadnt
hadn't've hadnt've hadn'tve
hasn't hasnt
haven't havent
he'd hed
he'd've hed've he'dve
he's hes
how'd howd
how'll howll
how's hows
I'd've Id've I'dve
I'm Im
I've Ive
isn't isnt
it'd itd
it'd've itd've it'dve
it'll itll
ma'am maam
mightn't mightnt
mightn't've mightnt've mightn'tve
might've mightve
mustn't mustnt
must've mustve
needn't neednt
not've notve
o'clock oclock
oughtn't oughtnt
'ow's'at ow's'at 'ows'at 'ow'sat
shan't shant
she'd've shed've she'dve
should've shouldve
shouldn't shouldnt
shouldn't've shouldnt've shouldn'tve
somebodyd somebody'd
somebody'd've somebodyd've somebody'dve
somebody'll somebodyll
somebody's somebodys
someone'd someoned
someone'd've someoned've someone'dve
someone'll someonell
someone's someones
something'd somethingd
something'd've somethingd've something'dve
something'll somethingll
that's thats
there'd thered
there'd've thered've there'dve
there're therere
there's theres
they'd theyd
they'd've theyd've they'dve
they'll theyll
they're theyre
they've theyve
'twas twas
wasn't wasnt
we'd've wed've we'dve
we've weve
weren't werent
what'll whatll
what're whatre
what's whats
what've whatve
when's whens
where'd whered
where's wheres
where've whereve
who'd whod
who'd've whod've who'dve
who'll wholl
who's whos
who've whove
why'll whyll
why're whyre
why's whys
won't wont
would've wouldve
wouldn't wouldnt
wouldn't've wouldnt've wouldn'tve
y'all yall
y'all'll yall'll y'allll
y'all'd've yall'd've y'alld've y'all'dve
you'd youd
you'd've youd've you'dve
you'll youll
you're youre
you've youve
"""
CONTRACTIONS = {
    spelling: words[0] for words in map(str.split, _CONTRACTIONS.strip().splitlines()) for spelling in words[1:]
}


def punctuation(text: str) -> str:
    """The official punctuation rule (see the module docstring); the tests hold its cases."""
    delete_all = COMMA_BETWEEN_DIGITS.search(text) is not None
    out = text
    for mark in PUNCTUATION:
        # The condition reads the answer as given, not as changed by the marks before.
        beside_space = f"{mark} " in text or f" {mark}" in text
        out = out.replace(mark, "" if beside_space or delete_all else " ")
    return PERIOD_NOT_BEFORE_DIGIT.sub("", out, count=PERIODS_REMOVED_AT_MOST)


def digits_and_articles(text: str) -> str:
    words = [NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    return " ".join(CONTRACTIONS.get(word, word) for word in words if word not in ARTICLES)


def normalise_prediction(answer: str) -> str:
    """A predicted answer as the official evaluation compares it."""
    return digits_and_articles(punctuation(answer.replace("\n", " ").replace("\t", " ").strip()))


def normalise_humans(answers: list[str]) -> list[str]:
    """The ten human answers as the official evaluation compares them: as given when all agree."""
    if len(set(answers)) <= 1:
        return list(answers)
    return [punctuation(answer) for answer in answers]
