"""The labelling server: people answer point questions in a browser (``apis serve PROJECT``).

``app.py`` builds the FastAPI app; ``auth.py`` reads annotator tokens; ``leases.py`` hands each question to one
person at a time; ``project.py`` finds a project's store and dataset; ``exchange.py`` moves open questions and
answers through JSON/CSV files; ``static/`` is the page (plain JS, nothing fetched from elsewhere).
"""
