"""``python -m minirec.grpo``: see :mod:`minirec.grpo.recipe`."""

from minirec.grpo.recipe import GRPORecipe
from minirec.stage import main

raise SystemExit(main(GRPORecipe))
