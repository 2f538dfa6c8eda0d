"""``mlflow run . -e grpo``: the MLproject doorway of ``python -m minirec.grpo``."""

from entrypoints import enter

if __name__ == "__main__":
    enter("minirec.grpo")
