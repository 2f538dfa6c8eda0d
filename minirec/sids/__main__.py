from entrypoints.sids import main

main()
