"""``python -m minirec.data validate --category CAT``: see entrypoints/data.py."""

if __name__ == "__main__":
    from entrypoints.data import main

    main()
