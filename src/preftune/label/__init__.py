"""Collecting comparisons: the labelling service (`preftune label init | serve | export`: a FastAPI app on a
SQLAlchemy store) and AI feedback. Nothing here is imported by `import preftune`; FastAPI, uvicorn and
SQLAlchemy come with the `label` extra (`pip install preftune[label]`)."""
