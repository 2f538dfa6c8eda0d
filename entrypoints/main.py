"""``mlflow run . -e main``: the MLproject doorway of ``python -m minirec.pipeline``."""

from entrypoints import enter

if __name__ == "__main__":
    enter("minirec.pipeline")
