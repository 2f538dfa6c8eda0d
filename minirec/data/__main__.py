"""``python -m minirec.data``: see :mod:`minirec.data.recipe`."""

from minirec.data.recipe import DataRecipe
from minirec.stage import main

raise SystemExit(main(DataRecipe))
