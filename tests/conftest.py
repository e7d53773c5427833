"""Suite-wide test settings.

Rich sizes its consoles from COLUMNS when there is no terminal (CI, pytest's capture, worker processes)
and falls back to 80 columns, which wraps long temporary paths in the middle of the words the tests look
for. A fixed, wide console makes command output the same wherever the suite runs.
"""

import os

os.environ.setdefault("COLUMNS", "200")
