"""``mlflow run . -e baselines``: the MLproject doorway of ``python -m minirec.baselines``."""

from entrypoints import enter

if __name__ == "__main__":
    enter("minirec.baselines")
