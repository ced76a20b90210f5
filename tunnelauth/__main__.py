from tunnelauth.cli import main

main()
