"""``mlflow run . -e tiny_model``: the MLproject doorway of ``python -m minirec.tiny_model``."""

from entrypoints import enter

if __name__ == "__main__":
    enter("minirec.tiny_model")
