import sys
from pathlib import Path

# Test helper modules (reference implementation, fixtures) import each other by bare name.
sys.path.insert(0, str(Path(__file__).parent))
