if __name__ == "__main__":
    from entrypoints.sft import main

    main()
