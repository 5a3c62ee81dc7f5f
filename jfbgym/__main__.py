from jfbgym.cli import run

run()
