"""``mlflow run . -e score``: the MLproject doorway of ``python -m minirec.score``."""

from entrypoints import enter

if __name__ == "__main__":
    enter("minirec.score")
