"""Results out: stored runs read into leaderboards with paired significance tests, rendered as
terminal tables, markdown, LaTeX, CSV and JSON. Reading results never loads a model.
"""
