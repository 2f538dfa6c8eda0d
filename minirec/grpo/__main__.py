"""``python -m minirec.grpo``: see entrypoints/grpo.py."""

if __name__ == "__main__":
    from entrypoints.grpo import main

    main()
