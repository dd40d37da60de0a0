"""preftune: the whole preference-learning loop for language models.

Importing this package is cheap: it pulls in neither torch nor transformers. Heavy
dependencies are imported inside the functions that need them.
"""

__version__ = "0.1.0"
