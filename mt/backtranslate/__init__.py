"""Iterative back-translation: ``generate`` (sharded, resumable generation over monolingual
text), ``filter`` (synthetic-pair filtering and the round's training corpus), ``pipeline``
(rounds, manifest, ``mt backtranslate``), ``report`` (markdown / JSON / plot)."""
