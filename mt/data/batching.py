"""Token-budget batches with length bucketing, and the one place model inputs are built.

A batch's cost is ``n_sentences * max(longest source, longest target)`` (in model tokens,
EOS/BOS included), kept ≤ ``max_tokens`` — the same rule as fairseq's ``--max-tokens``.
Sentences are sorted by length (random tie-break) before being cut into batches, so
sentences of similar length share a batch and little is padding; the batch order is
then shuffled.

The sampler is deterministic for ``(seed, epoch)``, shards batches across DDP ranks
(rank ``r`` takes every ``world_size``-th batch, so ``world_size`` ranks with one batch each
see exactly what one process with ``update_freq = world_size`` sees), and is resumable
mid-epoch: ``state_dict()`` records how many batches this rank has consumed.

Several corpora (``data.train`` as a list) are stored back to back; a :class:`CorpusMix`
says how many examples each gives per epoch (docs/data.md): ``upsample: k`` repeats every
pair k times; ``weight`` gives corpus i ``w_i / sum(w) * N`` of the epoch's N examples
(N = all corpora's pairs; largest remainders get the rounding), drawn without replacement:
a smaller share is a fresh random subset each epoch, a larger one every pair ``floor`` times
plus a random subset for the rest. The epoch's indices are one numpy array (repeats
included), drawn from ``(seed, epoch)`` alone, so resuming needs no more state than before.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from mt.data import DataError

_POOL_STREAM = 0x6D6978  # a separate random stream for drawing corpus subsets ("mix")


def epoch_counts(
    sizes: Sequence[int], weights: Optional[Sequence[float]] = None, upsample: Optional[Sequence[int]] = None
) -> list[int]:
    """Examples per epoch of each corpus: ``sizes[i] * upsample[i]``, or with ``weights`` the
    shares of ``sum(sizes)`` (exact decimal fractions, largest remainder rounding, ties to the
    earlier corpus)."""
    if weights is None:
        ups = upsample if upsample is not None else [1] * len(sizes)
        return [int(n) * int(k) for n, k in zip(sizes, ups)]
    exact = [Fraction(str(float(w))) for w in weights]  # 0.1 as the 1/10 the user wrote, not its binary neighbour
    total, weight_sum = sum(sizes), sum(exact)
    shares = [w / weight_sum * total for w in exact]
    counts = [int(x) for x in shares]  # floor: shares are >= 0
    by_remainder = sorted(range(len(shares)), key=lambda i: (counts[i] - shares[i], i))
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    return counts


@dataclass(frozen=True)
class CorpusMix:
    """Corpora stored back to back (corpus i = the ``sizes[i]`` examples after the ones before
    it) and the examples ``counts[i]`` each gives per epoch."""

    names: tuple[str, ...]
    sizes: tuple[int, ...]
    counts: tuple[int, ...]

    def __post_init__(self) -> None:
        if not len(self.names) == len(self.sizes) == len(self.counts) or not self.names:
            raise ValueError("a corpus mix needs one name, size and count per corpus")
        if min(self.sizes) < 1 or min(self.counts) < 0:
            raise ValueError(f"corpus sizes must be >= 1 and counts >= 0, got {self.sizes} / {self.counts}")

    @property
    def total(self) -> int:
        """Examples stored (all corpora)."""
        return sum(self.sizes)

    @property
    def epoch_size(self) -> int:
        return sum(self.counts)

    @property
    def plain(self) -> bool:
        """Every example exactly once per epoch: the mix changes nothing."""
        return self.counts == self.sizes

    def epoch_pool(self, seed: int, epoch: int) -> np.ndarray:
        """This epoch's example indices, grouped by corpus (the sampler sorts and shuffles them)."""
        rng = np.random.default_rng([seed, epoch, _POOL_STREAM])
        parts, start = [], 0
        for size, count in zip(self.sizes, self.counts):
            repeats, rest = divmod(count, size)
            if repeats:
                parts.append(np.tile(np.arange(start, start + size, dtype=np.int64), repeats))
            if rest:  # a different subset each epoch, no pair twice
                parts.append(start + rng.choice(size, rest, replace=False).astype(np.int64))
            start += size
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def as_list(self) -> list[dict[str, Any]]:
        return [{"name": n, "pairs": s, "epoch_examples": c} for n, s, c in zip(self.names, self.sizes, self.counts)]

    @classmethod
    def from_manifest(cls, data_dir: str | Path) -> Optional["CorpusMix"]:
        """The mix recorded by ``mt prepare`` in ``data_dir/manifest.json`` (``train_corpora``);
        ``None`` when there is none (one corpus, or data prepared before mixes existed)."""
        path = Path(data_dir) / "manifest.json"
        if not path.is_file():
            return None
        try:
            entries = json.loads(path.read_text(encoding="utf-8")).get("train_corpora")
            if entries is None:
                return None
            return cls(
                tuple(str(e["name"]) for e in entries),
                tuple(int(e["pairs"]) for e in entries),
                tuple(int(e["epoch_examples"]) for e in entries),
            )
        except (json.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError) as e:
            raise DataError(f"{path}: train_corpora: malformed ({e}); rerun `mt prepare --force`") from None


def make_batches(src_sizes: np.ndarray, tgt_sizes: np.ndarray, max_tokens: int, order: np.ndarray) -> list[np.ndarray]:
    """Cut ``order`` (example indices, already length-sorted) into token-budget batches."""
    cost = np.maximum(src_sizes[order], tgt_sizes[order]) + 1  # +1: EOS on source / BOS on target
    batches: list[np.ndarray] = []
    start, longest = 0, 0
    for i, c in enumerate(cost.tolist()):
        new_longest = max(longest, c)
        if i > start and new_longest * (i - start + 1) > max_tokens:
            batches.append(order[start:i])
            start, new_longest = i, c
        longest = new_longest
    if start < len(order):
        batches.append(order[start:])
    return batches


class TokenBatchSampler:
    """Yields ``np.ndarray`` batches of example indices for one rank.

    ``src_sizes``/``tgt_sizes``: ``(n,)`` bare lengths (without EOS/BOS). Iterating yields
    the rest of the current epoch from the saved position, then advances to the next epoch.
    With ``max_len``, examples longer than it (EOS/BOS included) are left out of every epoch,
    as fairseq and OpenNMT-py do with pairs the model cannot hold; ``skipped`` counts them.
    """

    def __init__(
        self,
        src_sizes: np.ndarray,
        tgt_sizes: np.ndarray,
        max_tokens: int,
        seed: int = 1,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
        mix: Optional[CorpusMix] = None,
        max_len: Optional[int] = None,
    ) -> None:
        if len(src_sizes) != len(tgt_sizes):
            raise ValueError(f"source has {len(src_sizes)} sizes, target {len(tgt_sizes)}")
        if len(src_sizes) == 0:
            raise ValueError("cannot batch an empty corpus")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        if mix is not None and mix.total != len(src_sizes):
            raise ValueError(f"the corpus mix covers {mix.total} examples, the data has {len(src_sizes)}")
        if mix is not None and mix.epoch_size == 0:
            raise ValueError("the corpus mix draws no example per epoch")
        # a plain mix (every example once) is today's single corpus: same batches, same stream
        self.mix = mix if mix is not None and not mix.plain else None
        # int32 lengths and example indices: the per-example arrays are what a training process
        # holds per pair (the tokens are memory-mapped), so their width is its memory per pair
        self.src_sizes = np.asarray(src_sizes, dtype=np.int32)
        self.tgt_sizes = np.asarray(tgt_sizes, dtype=np.int32)
        self.index_dtype = np.int32 if len(src_sizes) < 2**31 else np.int64
        # None when every example fits: the common case keeps no per-example mask
        fits = None if max_len is None else np.maximum(self.src_sizes, self.tgt_sizes) + 1 <= max_len
        self.fits = None if fits is None or fits.all() else fits
        self.skipped = 0 if self.fits is None else int(len(self.fits) - self.fits.sum())
        self.max_tokens = max_tokens
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.position = 0  # batches of this rank already consumed in this epoch
        self._cache: tuple[int, list[np.ndarray]] | None = None

    # ---- epoch plan

    def _global_batches(self, epoch: int) -> list[np.ndarray]:
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        pool = self.mix.epoch_pool(self.seed, epoch) if self.mix is not None else None
        n = len(self.src_sizes) if pool is None else len(pool)
        if self.shuffle:
            rng = np.random.default_rng([self.seed, epoch])
            tie_break = rng.permutation(n).astype(self.index_dtype)
        else:
            rng, tie_break = None, np.arange(n, dtype=self.index_dtype)
        if pool is not None:
            tie_break = pool[tie_break].astype(self.index_dtype)  # example indices, repeats included
        # lexsort: last key is primary → by target length, then source length, then random
        order = tie_break[np.lexsort((self.src_sizes[tie_break], self.tgt_sizes[tie_break]))]
        if self.fits is not None:  # after the random draws: the other examples keep their order
            order = order[self.fits[order]]
        batches = make_batches(self.src_sizes, self.tgt_sizes, self.max_tokens, order)
        if rng is not None:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        # every rank must run the same number of steps: drop the ragged tail
        usable = len(batches) - len(batches) % self.world_size
        batches = batches[:usable] if usable else batches[: self.world_size]
        self._cache = (epoch, batches)
        return batches

    def batches(self, epoch: int | None = None) -> list[np.ndarray]:
        """This rank's batches for ``epoch`` (default: the current one)."""
        all_batches = self._global_batches(self.epoch if epoch is None else epoch)
        return all_batches[self.rank :: self.world_size]

    def __len__(self) -> int:
        return len(self.batches())

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.position = epoch, 0

    def __iter__(self) -> Iterator[np.ndarray]:
        mine = self.batches()
        while self.position < len(mine):
            batch = mine[self.position]
            self.position += 1
            yield batch
        self.epoch, self.position = self.epoch + 1, 0

    # ---- resume

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"epoch": self.epoch, "position": self.position, "seed": self.seed, "world_size": self.world_size}
        if self.mix is not None:
            state["epoch_examples"] = list(self.mix.counts)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("world_size", self.world_size) != self.world_size:
            raise ValueError(
                f"checkpoint was written with world_size={state['world_size']}, now {self.world_size}; "
                "mid-epoch resume needs the same number of processes"
            )
        mine = list(self.mix.counts) if self.mix is not None else None
        if state.get("epoch_examples") != mine:
            raise ValueError(
                f"checkpoint was written with examples per epoch and corpus {state.get('epoch_examples')}, now {mine}; "
                "the corpus weights or the prepared data changed since"
            )
        self.epoch, self.position = int(state["epoch"]), int(state["position"])

    # ---- diagnostics

    def padding_stats(self, epoch: int | None = None) -> dict[str, float]:
        """Real vs padded model tokens (source + target, EOS/BOS included) over all ranks' batches."""
        real = padded = 0
        batches = self._global_batches(self.epoch if epoch is None else epoch)
        sentences = 0
        for b in batches:
            s, t = self.src_sizes[b] + 1, self.tgt_sizes[b] + 1
            real += int(s.sum() + t.sum())
            padded += len(b) * int(s.max() + t.max())
            sentences += len(b)
        return {
            "batches": len(batches),
            "sentences": sentences,
            "real_tokens": real,
            "padded_tokens": padded,
            "padding_waste": 1.0 - real / max(padded, 1),
            "mean_sentences_per_batch": sentences / max(len(batches), 1),
        }


@dataclass
class Batch:
    """``src``: ``(batch, src_len)``; ``tgt_in``/``tgt_out``: ``(batch, tgt_len)``; all LongTensors."""

    src: Tensor
    tgt_in: Tensor
    tgt_out: Tensor
    n_src_tokens: int
    n_tgt_tokens: int  # non-pad target tokens (= loss tokens), EOS included

    def to(self, device: torch.device | str) -> "Batch":
        nb = torch.device(device).type == "cuda"
        return Batch(
            self.src.to(device, non_blocking=nb),
            self.tgt_in.to(device, non_blocking=nb),
            self.tgt_out.to(device, non_blocking=nb),
            self.n_src_tokens,
            self.n_tgt_tokens,
        )


def _pad(seqs: Sequence[np.ndarray], pad_id: int, prefix: int | None, suffix: int | None) -> np.ndarray:
    extra = (prefix is not None) + (suffix is not None)
    width = max((len(s) for s in seqs), default=0) + extra
    out = np.full((len(seqs), max(width, 1)), pad_id, dtype=np.int64)
    start = 1 if prefix is not None else 0
    for i, s in enumerate(seqs):
        if prefix is not None:
            out[i, 0] = prefix
        out[i, start : start + len(s)] = s
        if suffix is not None:
            out[i, start + len(s)] = suffix
    return out


def make_source(ids_list: Sequence[Sequence[int]], pad_id: int, eos_id: int) -> Tensor:
    """Source ids (bare subwords) → ``(batch, src_len)`` with EOS appended, right-padded."""
    return torch.from_numpy(_pad([np.asarray(s, dtype=np.int64) for s in ids_list], pad_id, None, eos_id))


def collate(
    src_seqs: Sequence[np.ndarray],
    tgt_seqs: Sequence[np.ndarray],
    pad_id: int,
    decoder_start_id: int,
    eos_id: int,
) -> Batch:
    """Build model inputs: ``src + [eos]``, ``[start] + tgt``, ``tgt + [eos]`` (right-padded)."""
    src = _pad(src_seqs, pad_id, None, eos_id)
    tgt_in = _pad(tgt_seqs, pad_id, decoder_start_id, None)
    tgt_out = _pad(tgt_seqs, pad_id, None, eos_id)
    n_src = sum(len(s) for s in src_seqs) + len(src_seqs)
    n_tgt = sum(len(t) for t in tgt_seqs) + len(tgt_seqs)
    return Batch(torch.from_numpy(src), torch.from_numpy(tgt_in), torch.from_numpy(tgt_out), n_src, n_tgt)
