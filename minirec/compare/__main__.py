"""``python -m minirec.compare``: see :mod:`minirec.compare.recipe`."""

from minirec.compare.recipe import CompareRecipe
from minirec.stage import main

raise SystemExit(main(CompareRecipe))
