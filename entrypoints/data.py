"""``mlflow run . -e data``: the MLproject doorway of ``python -m minirec.data``."""

from entrypoints import enter

if __name__ == "__main__":
    enter("minirec.data")
