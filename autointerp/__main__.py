from autointerp.cli.app import main

main()
