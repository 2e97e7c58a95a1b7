from swiftdeploy.cli import main

main()
