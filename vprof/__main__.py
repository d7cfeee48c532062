from vprof.cli import main

main()
