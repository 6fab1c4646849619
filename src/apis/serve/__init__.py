"""The labelling server: people answer point questions and review masks in a browser (``apis serve PROJECT``).

``app.py`` builds the FastAPI app; ``auth.py`` reads annotator tokens; ``leases.py`` hands each question to one
person at a time; ``project.py`` finds a project's store and dataset; ``exchange.py`` moves open questions and
answers (and review decisions) through JSON/CSV files; ``review.py`` reads the step's mask export that the review
page shows (``--review-step``) and orders it, least trusted first; ``static/`` holds the pages (plain JS,
nothing fetched from elsewhere).
"""
