"""mt model → CTranslate2 (`mt export`) → the same outputs? Counts identical translations.

Exports ``--model`` with ``mt.export.export_model``, then translates ``--src`` with mt's
``Translator`` and with ``ctranslate2.Translator`` using the keywords the export writes into
``mt_preprocessing.json``; one CTranslate2 call per sentence so its maximum length is mt's
``a * src_len + b`` for that sentence. Prints identical/total for greedy and the beam::

    python bench/ct2_roundtrip.py --model runs/x/final_model --src $MT_DATA_DIR/multi30k/test2016.de -n 1000
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mt.decode.lengths import max_output_len  # noqa: E402
from mt.decode.translator import Translator  # noqa: E402
from mt.export import export_model  # noqa: E402
from mt.runtime import cpu_name  # noqa: E402


def compare(model: Path, lines: list[str], out: Path, quantization: str, beam: int) -> int:
    import ctranslate2

    export_model(model, out, "ctranslate2", quantization=quantization, force=True)
    keywords = json.loads((out / "mt_preprocessing.json").read_text())["ctranslate2"]["translate_batch"]
    keywords["beam_size"] = beam
    mt = Translator.load(model, workers=1, threads=1, beam=beam, dtype="fp32")  # CT2 float32 is compared
    ct2 = ctranslate2.Translator(str(out), device="cpu", inter_threads=1, intra_threads=1)
    text, opts, cfg = mt.text, mt.options, mt.model.cfg
    ours = [h[0].tokens for h in mt.translate_batch(lines)]
    same = 0
    for line, tokens in zip(lines, ours):
        src_ids = text.encode_source([line])[0]
        pieces = [text.source_vocabulary()[i] for i in src_ids]
        limit = max_output_len(len(src_ids), opts.max_len_a, opts.max_len_b, cfg.max_positions)
        result = ct2.translate_batch([pieces], max_decoding_length=limit, **keywords)[0]
        theirs = [text.piece_to_id(p) for p in result.hypotheses[0]]
        same += theirs == tokens
    return same


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--src", type=Path, required=True)
    ap.add_argument("-n", type=int, default=1000, help="first N lines of --src")
    ap.add_argument("--beam", type=int, default=5)
    args = ap.parse_args()
    lines = args.src.read_text(encoding="utf-8").splitlines()[: args.n]
    print(f"CPU: {cpu_name()}; {len(lines)} sentences of {args.src}")
    with tempfile.TemporaryDirectory() as tmp:
        for quantization, beam in (("float32", 1), ("float32", args.beam), ("int8", 1)):
            same = compare(args.model, lines, Path(tmp) / quantization, quantization, beam)
            print(f"{quantization:8s} beam {beam}: {same}/{len(lines)} identical to mt")


if __name__ == "__main__":
    main()
