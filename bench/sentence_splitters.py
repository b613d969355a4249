"""Compare sentence splitters: boundary recovery on paragraphs built from dev sets, hand-made
abbreviation/number/ellipsis cases, and speed.

    MT_DATA_DIR=/path/to/shared/data .venv/bin/python bench/sentence_splitters.py

Needs the candidates installed: pip install sentencex pysbd sentence-splitter syntok blingfire
(only sentencex is a dependency of mt). Results: docs/documents.md.
"""

from __future__ import annotations

import os
import random
import sys
import re
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("MT_DATA_DIR") or ROOT.parent / "shared" / "data")
SOURCES = {"de": ["multi30k/val.de", "tatoeba/dev.de"], "en": ["multi30k/val.en", "tatoeba/dev.en"],
           "fr": ["multi30k/val.fr"], "cs": ["multi30k/val.cs"]}
END = re.compile(r"[.!?][\"'»“”)]*$")

HARD = {
    "de": [
        ["Dr. Müller kommt morgen.", "Er bringt Kuchen mit."],
        ["Wir brauchen z. B. Mehl und Zucker.", "Der Rest ist da."],
        ["Das kostet 3.5 Euro.", "Das ist billig."],
        ["Am 3. Oktober ist Feiertag.", "Dann haben alle frei."],
        ["Ich weiß nicht...", "Vielleicht morgen."],
        ["Die Firma Müller & Co. KG wurde 1990 gegründet.", "Sie hat 20 Mitarbeiter."],
        ["Das steht in Abs. 3 des Vertrags.", "Bitte lesen."],
        ["Er wohnt in der Hauptstr. 5 in Berlin.", "Besuch ihn!"],
        ["Die U.S. Army ist groß.", "Das weiß jeder."],
        ["Was?", "Wirklich!", "Ja."],
        ["Sie fragte: „Kommst du?“", "Er nickte."],
        ["Das ist u. a. wichtig, d. h. wir müssen los.", "Sofort."],
    ],
    "en": [
        ["Dr. Smith arrived at 5 p.m. yesterday.", "He was late."],
        ["The U.S. economy grew 3.5 percent.", "Analysts were surprised."],
        ["Mr. and Mrs. Brown, e.g. our neighbours, left.", "We stayed."],
        ["Wait...", "What happened?", "Nobody knows!"],
        ["It costs $3.50 each.", "That is cheap."],
        ["See Fig. 2 for details.", "It shows the results."],
        ['She said, "Go home."', "Then she left."],
        ["The meeting is at 10 a.m. on Monday.", "Don't be late."],
        ["J. R. R. Tolkien wrote books.", "They are famous."],
        ["Prof. Lee, i.e. my advisor, agreed.", "I was glad."],
        ["The file is 2.5 MB vs. 3 MB before.", "That is smaller."],
        ["He works for Acme Inc. in Boston.", "He likes it."],
    ],
    "fr": [
        ["M. Dupont est arrivé hier.", "Il était en retard."],
        ["Il a payé 3,5 euros, c.-à-d. presque rien.", "C'était bon marché."],
        ["Le Dr. Martin travaille ici.", "Elle est gentille."],
        ["Nous avons vu, p. ex., des chats.", "Ils dormaient."],
        ["Attends...", "Quoi ?", "Personne ne sait !"],
        ["Il habite au 12 av. Victor Hugo.", "C'est loin."],
        ["Elle a dit : « Viens ici. »", "Puis elle est partie."],
        ["Le chapitre 3.2 explique tout.", "Lisez-le."],
        ["Mme Leroy et Mlle Petit sont là.", "Elles attendent."],
        ["Voir la p. 12 du rapport.", "Tout y est."],
        ["Il est né le 1er janv. 1990 à Paris.", "Il y vit encore."],
        ["Le prix est de 2.50 euros.", "C'est raisonnable."],
    ],
    "cs": [
        ["Prof. Novák přišel včera.", "Byl unavený."],
        ["Potřebujeme např. mouku a cukr.", "Zbytek máme."],
        ["Stojí to 3,5 Kč.", "To je levné."],
        ["Dne 3. října je svátek.", "Pak je volno."],
        ["Bydlí v ul. Dlouhé v Praze.", "Navštiv ho!"],
        ["Čekal jsem...", "Nikdo nepřišel."],
        ["Firma vznikla r. 1990.", "Má 20 zaměstnanců."],
        ["MUDr. Svoboda ordinuje v pondělí.", "Objednejte se."],
        ["To je tzv. chytrý telefon.", "Každý ho má."],
        ["Co?", "Opravdu!", "Ano."],
        ["Přijel s doc. Malým a Ing. Černým.", "Byli spokojení."],
        ["Cena je 2.5 mil. Kč.", "To je hodně."],
    ],
}


def splitters():
    import blingfire
    import pysbd
    import sentence_splitter
    import sentencex
    from syntok import segmenter

    pysbd_langs = set(pysbd.languages.LANGUAGE_CODES)
    pysbd_cache = {}

    def run_pysbd(lang, text):
        code = lang if lang in pysbd_langs else "en"  # pysbd has no cs: its English rules
        if code not in pysbd_cache:
            pysbd_cache[code] = pysbd.Segmenter(language=code, clean=False)
        return pysbd_cache[code].segment(text)

    ss_cache = {}

    def run_ss(lang, text):
        if lang not in ss_cache:
            ss_cache[lang] = sentence_splitter.SentenceSplitter(language=lang)
        return ss_cache[lang].split(text)

    def run_syntok(lang, text):
        return ["".join(t.spacing + t.value for t in s) for p in segmenter.analyze(text) for s in p]

    from mt.documents import _false_break, sentence_spans

    def repaired(fn):
        def run(lang, text):
            merged = []
            for piece in fn(lang, text):
                if merged and piece.strip() and merged[-1].strip() and _false_break(merged[-1], piece):
                    merged[-1] += piece
                else:
                    merged.append(piece)
            return merged
        return run

    return {
        "mt.documents.sentence_spans (sentencex + repairs)":
            lambda lang, text: [text[s:e] for s, e in sentence_spans(text, lang)],
        "sentencex 1.0.32": lambda lang, text: list(sentencex.segment(lang, text)),
        "pysbd 0.3.4 + the same repairs": repaired(run_pysbd),
        "pysbd 0.3.4": run_pysbd,
        "sentence-splitter 1.4 (Moses)": run_ss,
        "syntok 1.4.4": run_syntok,
        "blingfire 0.1.8": lambda lang, text: blingfire.text_to_sentences(text).split("\n"),
    }


def paragraphs(lang: str, rng: random.Random) -> list[list[str]]:
    sents = [s.strip() for f in SOURCES[lang] for s in (DATA / f).read_text(encoding="utf-8").splitlines()]
    sents = [s for s in sents if END.search(s) and s[:1].isupper()]
    out, i = [], 0
    while i < len(sents):
        k = rng.randint(2, 6)
        out.append(sents[i:i + k])
        i += k
    return [p for p in out if len(p) >= 2]


def boundaries(sents: list[str]) -> set[int]:
    """Offsets (in the space-joined text, spaces removed) where a sentence ends."""
    pos, out = 0, set()
    for s in sents[:-1]:
        pos += len(s.replace(" ", ""))
        out.add(pos)
    return out


def score(split, lang: str, paras: list[list[str]]) -> tuple[float, float, float, float, float]:
    tp = fp = fn = exact = 0
    chars = 0
    t0 = time.perf_counter()
    preds = [split(lang, " ".join(p)) for p in paras]
    elapsed = time.perf_counter() - t0
    for gold, pred in zip(paras, preds):
        pred = [s.strip() for s in pred if s.strip()]
        exact += pred == gold
        g, p = boundaries(gold), boundaries(pred)
        tp, fp, fn = tp + len(g & p), fp + len(p - g), fn + len(g - p)
        chars += sum(len(s) + 1 for s in gold)
    prec, rec = tp / max(1, tp + fp), tp / max(1, tp + fn)
    return exact / len(paras), prec, rec, 2 * prec * rec / max(1e-9, prec + rec), chars / elapsed


def per_document_ms(split_fns) -> None:
    """Milliseconds per ~2,000-character German paragraph (best of 5 runs of 50 calls)."""
    doc = " ".join((DATA / "multi30k/val.de").read_text(encoding="utf-8").splitlines()[:60])[:2000]
    for name, fn in split_fns.items():
        fn("de", doc)
        runs = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(50):
                fn("de", doc)
            runs.append((time.perf_counter() - t0) / 50)
        print(f"{name:55s} {min(runs) * 1e3:8.3f} ms per 2,000 characters")


def main() -> None:
    rng = random.Random(1)
    split_fns = splitters()
    data = {lang: paragraphs(lang, rng) for lang in SOURCES}
    for lang, paras in data.items():
        print(f"{lang}: {len(paras)} paragraphs, {sum(map(len, paras))} sentences")
    for name, fn in split_fns.items():
        fn("en", "Warm up. Now.")
        row = []
        for lang, paras in data.items():
            ex, p, r, f, speed = score(fn, lang, paras)
            hard = sum([s.strip() for s in fn(lang, " ".join(case)) if s.strip()] == case for case in HARD[lang])
            row.append(f"{lang}: para {ex:.3f} F1 {f:.3f} (P {p:.3f} R {r:.3f}) hard {hard}/{len(HARD[lang])} "
                       f"{speed / 1e6:.2f} Mchar/s")
        print(name)
        for r in row:
            print("   ", r)
    for name, fn in split_fns.items():
        fails = [(lang, case) for lang, cases in HARD.items() for case in cases
                 if [s.strip() for s in fn(lang, " ".join(case)) if s.strip()] != case]
        print(f"{name} hard-case failures:", ", ".join(f"{lang}:{' '.join(c)[:30]!r}" for lang, c in fails))
    per_document_ms(split_fns)


if __name__ == "__main__":
    main()
