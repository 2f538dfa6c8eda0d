"""``mlflow run . -e compare``: the MLproject doorway of ``python -m minirec.compare``."""

from entrypoints import enter

if __name__ == "__main__":
    enter("minirec.compare")
