import sys
from pathlib import Path

# tests import shared tiny-model helpers as plain modules (`from tiny import ...`).
sys.path.insert(0, str(Path(__file__).parent))
