"""``python -m minirec.sft``: see :mod:`minirec.sft.recipe`."""

from minirec.sft.recipe import SFTRecipe
from minirec.stage import main

raise SystemExit(main(SFTRecipe))
