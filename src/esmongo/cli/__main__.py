from esmongo.cli import app

app()
