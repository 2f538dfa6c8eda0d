"""``python -m minirec.evaluate``: see :mod:`minirec.evaluate.recipe`."""

from minirec.evaluate.recipe import EvaluateRecipe
from minirec.stage import main

raise SystemExit(main(EvaluateRecipe))
