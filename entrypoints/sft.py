"""``mlflow run . -e sft``: the MLproject doorway of ``python -m minirec.sft``."""

from entrypoints import enter

if __name__ == "__main__":
    enter("minirec.sft")
