"""``mlflow run . -e evaluate``: the MLproject doorway of ``python -m minirec.evaluate``."""

from entrypoints import enter

if __name__ == "__main__":
    enter("minirec.evaluate")
