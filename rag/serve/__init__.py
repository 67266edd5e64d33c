"""The web app and knowledge-base management."""
