"""Learning from what developers accept: editor feedback in, a confidence gate out.

``events``: the payloads editors send about a suggestion (Tabby's ``/v1/events``, the generic
``{"id", "accepted", "kept_text"}``) as records; ``continue_dev``: Continue's autocomplete dev-data
file imported into a records folder; ``confidence``: a threshold that shows fewer suggestions while
keeping a chosen share of the accepted ones. The record format itself: ``codetune.artifacts.records``.
"""
