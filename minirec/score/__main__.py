"""``python -m minirec.score``: see :mod:`minirec.score.recipe`."""

from minirec.score.recipe import ScoreRecipe
from minirec.stage import main

raise SystemExit(main(ScoreRecipe))
