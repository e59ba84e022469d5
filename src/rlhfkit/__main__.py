from rlhfkit.cli import run

run()
