from cdp.cli import main

if __name__ == "__main__":  # the validator process is spawned and re-imports __main__
    raise SystemExit(main())
