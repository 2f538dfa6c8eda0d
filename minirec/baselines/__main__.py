"""``python -m minirec.baselines``: see :mod:`minirec.baselines.recipe`."""

from minirec.baselines.recipe import BaselineRecipe
from minirec.stage import main

raise SystemExit(main(BaselineRecipe))
