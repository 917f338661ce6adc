from gen_lightning.verbs import main  # the verb list without importing Lightning; the rest in gen_lightning.cli

if __name__ == "__main__":
    main()
