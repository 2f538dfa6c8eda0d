"""``python -m minirec.sids``: see :mod:`minirec.sids.recipe`."""

from minirec.sids.recipe import SidsRecipe
from minirec.stage import main

raise SystemExit(main(SidsRecipe))
