"""
C{python -m sealgw.generator}.
"""

import sys

from sealgw.generator import main

sys.exit(main())
