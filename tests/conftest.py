"""Test-session settings: the decoding invariance probe (mt/decode/invariance.py) remembers
its findings in a file of this session's own, so every run measures this machine afresh."""

import os
import tempfile

os.environ.setdefault("MT_PROBE_CACHE", os.path.join(tempfile.mkdtemp(prefix="mt-probe-"), "invariance.json"))
