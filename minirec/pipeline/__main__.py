"""``python -m minirec.pipeline``: see :mod:`minirec.pipeline.recipe`."""

from minirec.pipeline.recipe import PipelineRecipe
from minirec.stage import main

raise SystemExit(main(PipelineRecipe))
