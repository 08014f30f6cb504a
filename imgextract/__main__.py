from imgextract.cli import main

main()
