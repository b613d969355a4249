"""Test-session settings: the decoding invariance probe (mt/decode/invariance.py) remembers
its findings in a file of this session's own, so every run measures this machine afresh; and
``dtype: auto`` resolves to fp32 without probing (mt/decode/precision.py), so that tests
comparing outputs bit for bit see the same precision on every CPU (test_decode_precision.py
unsets the pin to test the choice itself)."""

import os
import tempfile

os.environ.setdefault("MT_PROBE_CACHE", os.path.join(tempfile.mkdtemp(prefix="mt-probe-"), "invariance.json"))
os.environ.setdefault("MT_DTYPE_AUTO", "fp32")
# --engine ctranslate2's exports: never the user's ~/.cache
os.environ.setdefault("MT_CT2_CACHE", tempfile.mkdtemp(prefix="mt-ct2-"))
