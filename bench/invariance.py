"""What the batch-invariance probe finds on this machine, for every decoding path.

For a model directory (or random weights of the given shape) and each of fp32, fp32 packed,
bf16, bf16 packed and int8, prints the padding rule that ``mt.decode.invariance`` measured,
whether it makes decoding batch-invariant, and how long the probe took (fresh: the on-disk
cache is bypassed). Record it with ``lscpu``'s model name next to it::

    python bench/invariance.py --model runs/multi30k_de_en_cpu45/model_avg --threads 2
    python bench/invariance.py --d-model 512 --ffn 2048 --layers 6 --vocab 8000 --threads 1
"""

from __future__ import annotations

import argparse
import os
import time

os.environ["MT_PROBE_CACHE"] = "off"  # measure, never read a remembered finding

import torch  # noqa: E402

from mt.config import ModelConfig  # noqa: E402
from mt.decode.variant import prepare  # noqa: E402
from mt.model import Transformer  # noqa: E402
from mt.runtime import cpu_name  # noqa: E402

PATHS = {"fp32": {}, "fp32 packed": {"pack": True}, "bf16": {"dtype": "bf16"},
         "bf16 packed": {"dtype": "bf16", "pack": True}, "int8": {"int8": True}}


def model(args: argparse.Namespace) -> Transformer:
    if args.model:
        from mt.modelio import load_model

        return load_model(args.model).model
    cfg = ModelConfig(preset=None, d_model=args.d_model, n_heads=8, enc_layers=args.layers, dec_layers=args.layers,
                      ffn_dim=args.ffn, vocab_size=args.vocab)
    return Transformer(cfg).eval()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="model directory (default: random weights of the shape below)")
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--ffn", type=int, default=512)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    net = model(args)
    c = net.cfg
    print(f"# {cpu_name()}, torch {torch.__version__}, {args.threads} thread(s); model d{c.d_model} "
          f"ffn{c.ffn_dim} {c.enc_layers}+{c.dec_layers} layers, vocab {c.vocab_size}")
    print(f"{'path':<12} {'invariant':>9} {'rows':>5} {'src':>8} {'seconds':>8}  finding")
    for name, kw in PATHS.items():
        t0 = time.perf_counter()
        dm = prepare(net, "cpu", **{"pack": False, **kw})
        r = dm.padding
        print(f"{name:<12} {str(r.invariant):>9} {r.rows:>5} {f'{r.src_multiple}/{r.min_src}':>8} "
              f"{time.perf_counter() - t0:>8.1f}  {r.finding}", flush=True)


if __name__ == "__main__":
    main()
