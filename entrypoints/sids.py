"""``mlflow run . -e sids``: the MLproject doorway of ``python -m minirec.sids``."""

from entrypoints import enter

if __name__ == "__main__":
    enter("minirec.sids")
