"""The GRPO stage: recommendation-oriented GRPO with constrained beam roll-outs and ranking rewards.

    python -m minirec.grpo --preset tiny --category Industrial_and_Scientific
    mlflow run . -e grpo -P preset=tiny -P category=Industrial_and_Scientific --env-manager local

Reference: docs/upstream.md 5. Modules: ``settings`` (settings and presets), ``recipe`` (the stage), ``data``
(the prompt mixture), ``rewards`` (rule and rank rewards), ``rollout`` (constrained beams in rank order),
``trainer`` (trl's GRPOTrainer with that roll-out), ``train`` (building it), ``callbacks`` (MLflow logging).
"""
