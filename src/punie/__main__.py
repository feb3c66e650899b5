from punie.cli import main

main()
